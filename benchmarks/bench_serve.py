"""Kept-alive tile requests per second: `hypermosaic serve`'s server against Python's http.server.

Both serve the same 20 KB tile from the same folder; one client asks for it N times on one
kept-alive connection, as a browser's tile loader does. Prints requests/s of each, their ratio,
and this process's peak RSS. The old server (http.server, HTTP/1.1) waits for the client's
delayed ACK between an answer's head and body (Nagle); ours sets TCP_NODELAY.

    python -m benchmarks.bench_serve [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import resource
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks._machine import print_machine
from hypermosaic.publish import make_app, start_server


def rate(host: str, port: int, requests: int) -> float:
    """Requests per second for ``requests`` GETs of /tile.jpg on one kept-alive connection."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    start = time.perf_counter()
    for _ in range(requests):
        connection.request("GET", "/tile.jpg")
        connection.getresponse().read()
    seconds = time.perf_counter() - start
    connection.close()
    return requests / seconds


class _Quiet(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "tile.jpg").write_bytes(bytes(range(256)) * 80)
        (root / "index.html").write_text("<p>viewer</p>")
        old = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=folder))
        thread = threading.Thread(target=old.serve_forever, daemon=True)
        thread.start()
        try:
            baseline = rate("127.0.0.1", old.server_address[1], args.requests)
        finally:
            old.shutdown()
            old.server_close()
        with start_server(make_app(root)) as server:
            ours = rate(server.host, server.port, args.requests)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.requests} kept-alive requests of a 20 KB tile")
    print(f"http.server (baseline)   {baseline:8.0f} requests/s")
    print(f"hypermosaic serve        {ours:8.0f} requests/s   {ours / baseline:6.1f}x")
    print(f"peak RSS of this process {peak:8.0f} MB")


if __name__ == "__main__":
    main()
