"""The server of a build folder, run for real (sockets, uvicorn): what it serves, what it
refuses, what browsers get (ranges, revalidation, gzip), how it bears load and bad clients."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from hypermosaic.errors import BuildError, InputError
from hypermosaic.publish.files import _open
from hypermosaic.publish.server import make_app, start_server

SECRET = b"outside the output directory"
VIDEO = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A build folder holding a page, a tile, a video, a folder, and links leading outside.
    Tests that add files give them names of their own."""
    tmp_path = tmp_path_factory.mktemp("server")
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>viewer</p>" * 100)
    (root / "sub" / "tile.jpeg").write_bytes(b"tile")
    (root / "zoom.mp4").write_bytes(VIDEO)
    (root / "empty").mkdir()
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path / "elsewhere", root / "linkdir")
    return root


@pytest.fixture(scope="module")
def served(root):
    with start_server(make_app(root)) as server:
        yield server


def fetch(server, target: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send ``target`` exactly as written (no client-side normalisation); status, headers
    (lower-case names) and body."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    connection.putrequest(method, target, skip_accept_encoding=True)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_server_serves_files_read_only(served, root):
    page = (root / "index.html").read_bytes()
    status, headers, body = fetch(served, "/")
    assert (status, body) == (200, page)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-length"] == str(len(page))
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    assert "content-encoding" not in headers
    assert fetch(served, "/sub/tile.jpeg")[2] == b"tile"
    assert fetch(served, "/sub/tile.jpeg?v=2")[::2] == (200, b"tile")
    status, headers, body = fetch(served, "/sub/tile.jpeg", "HEAD")
    assert (status, headers["content-length"], body) == (200, "4", b"")
    assert fetch(served, "/sub/missing.jpeg")[::2] == (404, b"404 Not Found\n")
    assert fetch(served, "/empty/")[0] == 404  # no listings
    for method in ("PUT", "DELETE", "POST", "PATCH", "OPTIONS"):
        status, headers, body = fetch(served, "/sub/tile.jpeg", method)
        assert (status, headers["allow"], body) == (405, "GET, HEAD", b"405 Method Not Allowed\n")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", served.url)
    assert served.url.endswith(f":{served.port}/") and served.port != 0


@pytest.mark.parametrize("target", [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/link.txt",
    "/linkdir/secret.txt",
    "/%6c%69%6e%6b.txt",
    "/%00/secret.txt",
    "/%ff%fe",
    "http://127.0.0.1/../secret.txt",
])
def test_server_refuses_to_leave_its_root(served, target):
    status, _, body = fetch(served, target)
    assert (status, body) == (403, b"403 Forbidden\n")


def test_a_target_starting_with_two_slashes_is_a_path_of_the_root(served):
    """``//../secret.txt`` reads as the authority ``..`` and the path ``/secret.txt``."""
    assert fetch(served, "//../secret.txt")[::2] == (404, b"404 Not Found\n")
    assert fetch(served, "//x/sub/tile.jpeg")[::2] == (200, b"tile")


def test_files_are_opened_without_following_links(root, monkeypatch):
    """A file swapped for a link after the path was checked is still not followed."""
    import hypermosaic.publish.files as files

    monkeypatch.setattr(files, "resolve_request", lambda root, target: root / "link.txt")
    assert _open(root, "/index.html") == 404


def test_a_refused_body_does_not_desynchronise_a_kept_alive_connection(served):
    """A POST's body is dropped with the 405, so the GET that follows on the same connection
    is answered as itself; a body too large to bother with closes the connection."""
    connection = http.client.HTTPConnection(served.host, served.port, timeout=10)
    body = b"GET /../secret.txt HTTP/1.1\r\n\r\n" * 100
    connection.request("POST", "/sub/tile.jpeg", body=body)
    refused = connection.getresponse()
    assert (refused.status, refused.getheader("Allow")) == (405, "GET, HEAD")
    refused.read()
    assert not refused.will_close
    sock = connection.sock
    connection.request("GET", "/sub/tile.jpeg")
    answer = connection.getresponse()
    assert (answer.status, answer.read()) == (200, b"tile")
    assert connection.sock is sock  # the same connection, still in step
    connection.putrequest("PUT", "/sub/tile.jpeg")
    connection.putheader("Content-Length", str(10 << 20))
    connection.endheaders()
    huge = connection.getresponse()
    assert huge.status == 405 and huge.getheader("Connection") == "close"
    huge.read()
    assert huge.will_close
    connection.close()


def test_kept_alive_connections_send_without_nagle_delays(served):
    """Head and body leave in separate writes; without TCP_NODELAY each answer on a kept-alive
    connection waits ~40 ms for the client's delayed ACK. The server's end of every connection
    has it set (benchmarks/bench_serve.py measures what it is worth)."""
    connection = http.client.HTTPConnection(served.host, served.port, timeout=10)
    for _ in range(3):
        connection.request("GET", "/zoom.mp4", headers={"Range": "bytes=0-19999"})
        assert len(connection.getresponse().read()) == 20000
    sockets = [c.transport.get_extra_info("socket")
               for c in served._server.server_state.connections]
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
    connection.close()


def test_a_request_head_over_16_kib_is_refused(served):
    """Refused with 431 and the connection closed, however the head arrives; h11 gives up on
    an unfinished head past 64 KiB."""
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (10 << 10))
        time.sleep(0.1)
        sock.sendall(b"a" * (10 << 10) + b"\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (65 << 10))
        try:  # the 400 may be lost to the reset of what the server left unread
            assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
        except ConnectionResetError:
            pass
    assert fetch(served, "/", headers={"X-Big": "a" * (15 << 10)})[0] == 200


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_range_requests_serve_exact_bytes(served):
    size = len(VIDEO)
    status, headers, body = fetch(served, "/zoom.mp4", headers={"Range": "bytes=1000-1999"})
    assert (status, body) == (206, VIDEO[1000:2000])
    assert headers["content-range"] == f"bytes 1000-1999/{size}"
    assert headers["content-length"] == "1000" and headers["content-type"] == "video/mp4"
    assert headers["accept-ranges"] == "bytes"
    assert fetch(served, "/zoom.mp4", headers={"Range": "bytes=-10"})[2] == VIDEO[-10:]
    status, headers, body = fetch(served, "/zoom.mp4", headers={"Range": f"bytes={size - 5}-"})
    assert (status, body, headers["content-range"]) == (206, VIDEO[-5:],
                                                        f"bytes {size - 5}-{size - 1}/{size}")
    status, headers, body = fetch(served, "/zoom.mp4", headers={"Range": "bytes=10-99999999"})
    assert (status, len(body), headers["content-range"]) == (206, size - 10,
                                                             f"bytes 10-{size - 1}/{size}")
    status, headers, body = fetch(served, "/zoom.mp4", "HEAD", {"Range": "bytes=0-0"})
    assert (status, headers["content-length"], body) == (206, "1", b"")
    for unsatisfiable in (f"bytes={size}-", "bytes=-0"):
        status, headers, _ = fetch(served, "/zoom.mp4", headers={"Range": unsatisfiable})
        assert (status, headers["content-range"]) == (416, f"bytes */{size}")
    etag = fetch(served, "/zoom.mp4", "HEAD")[1]["etag"]
    assert fetch(served, "/zoom.mp4", headers={"Range": "bytes=0-1", "If-Range": etag})[0] == 206
    for whole in ({"Range": "bytes=0-1", "If-Range": '"stale"'}, {"Range": "bytes=0-1,5-6"},
                  {"Range": "bytes=5-1"}, {"Range": "items=0-1"}):
        status, headers, body = fetch(served, "/zoom.mp4", headers=whole)
        assert (status, len(body), "content-range" in headers) == (200, size, False)


def test_etag_and_last_modified_answer_304(served, root):
    (root / "sub" / "rebuilt.jpeg").write_bytes(b"tile")
    status, headers, _ = fetch(served, "/sub/rebuilt.jpeg")
    etag, modified = headers["etag"], headers["last-modified"]
    for ask in ({"If-None-Match": etag}, {"If-None-Match": f'"other", W/{etag}'},
                {"If-None-Match": "*"}, {"If-Modified-Since": modified}):
        status, headers, body = fetch(served, "/sub/rebuilt.jpeg", headers=ask)
        assert (status, body, headers["etag"]) == (304, b"", etag)
        assert headers["cache-control"] == "no-cache"
    long_ago = "Mon, 01 Jan 2001 00:00:00 GMT"
    for ask in ({"If-None-Match": '"other"'}, {"If-Modified-Since": long_ago},
                {"If-None-Match": '"other"', "If-Modified-Since": modified}):
        assert fetch(served, "/sub/rebuilt.jpeg", headers=ask)[::2] == (200, b"tile")
    (root / "sub" / "rebuilt.jpeg").write_bytes(b"new tile")  # a rebuild
    os.utime(root / "sub" / "rebuilt.jpeg", (1e9 + 1, time.time() + 5))
    status, headers, body = fetch(served, "/sub/rebuilt.jpeg", headers={"If-None-Match": etag})
    assert (status, body) == (200, b"new tile") and headers["etag"] != etag


def test_gzip_is_for_text_only_and_never_for_ranges(served, root):
    page = (root / "index.html").read_bytes()
    status, headers, body = fetch(served, "/", headers={"Accept-Encoding": "gzip, br"})
    assert (status, headers["content-encoding"], gzip.decompress(body)) == (200, "gzip", page)
    assert len(body) < len(page) // 10 and headers["vary"] == "Accept-Encoding"
    zipped, identity = headers["etag"], fetch(served, "/")[1]["etag"]
    assert zipped != identity  # two representations, two tags
    status, headers, body = fetch(served, "/", headers={"If-None-Match": zipped,
                                                        "Accept-Encoding": "gzip"})
    assert (status, headers["etag"], body) == (304, zipped, b"")
    for ask in ({"Accept-Encoding": "gzip;q=0"}, {"Accept-Encoding": "deflate"}):
        status, headers, body = fetch(served, "/", headers=ask)
        assert (status, body, headers["etag"], "content-encoding" in headers) == (
            200, page, identity, False)
    status, headers, body = fetch(served, "/", headers={"Accept-Encoding": "gzip",
                                                        "Range": "bytes=0-9"})
    assert (status, body, "content-encoding" in headers) == (206, page[:10], False)
    status, headers, body = fetch(served, "/zoom.mp4", headers={"Accept-Encoding": "gzip"})
    assert (status, body, "content-encoding" in headers) == (200, VIDEO, False)
    assert fetch(served, "/sub/tile.jpeg", headers={"Accept-Encoding": "gzip"})[2] == b"tile"


@pytest.mark.parametrize(("name", "kind"), [
    ("mosaic.dzi", "application/xml"),
    ("a.js", "text/javascript; charset=utf-8"),
    ("a.json", "application/json"),
    ("a.css", "text/css; charset=utf-8"),
    ("a.svg", "image/svg+xml"),
    ("a.txt", "text/plain; charset=utf-8"),
    ("0_0.webp", "image/webp"),
    ("0_0.png", "image/png"),
    ("0_0.jpg", "image/jpeg"),
    ("zoom.webm", "video/webm"),
    ("zoom.MP4", "video/mp4"),
    ("mosaic.tif", "image/tiff"),
    ("noext", "application/octet-stream"),
])
def test_content_types(served, root, name, kind):
    (root / name).write_bytes(b"x" * 2000)
    status, headers, body = fetch(served, f"/{name}", headers={"Accept-Encoding": "gzip"})
    assert (status, headers["content-type"]) == (200, kind)
    assert headers["x-content-type-options"] == "nosniff"
    text = kind.startswith(("text/", "application/json", "application/xml", "image/svg"))
    assert (headers.get("content-encoding") == "gzip") == text


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text.upper())


@pytest.fixture()
def busy_app(root):
    """Routes before the files: one that waits for ``release``, an echo WebSocket, and one
    shadowing a file; at most two HTTP requests at once."""
    release, waiting = threading.Event(), threading.Semaphore(0)

    async def wait(request: Request) -> PlainTextResponse:
        waiting.release()
        await anyio.to_thread.run_sync(release.wait)
        return PlainTextResponse("done")

    routes = [Route("/wait", wait), WebSocketRoute("/echo", echo),
              Route("/index.html", lambda request: PlainTextResponse("route"))]
    with start_server(make_app(root, routes=routes, max_concurrency=2)) as server:
        yield server, release, waiting
        release.set()


def test_routes_come_first_and_websockets_work(busy_app):
    server, _, _ = busy_app
    assert fetch(server, "/index.html")[::2] == (200, b"route")
    assert fetch(server, "/")[2].startswith(b"<p>viewer</p>")
    with connect(f"ws://{server.host}:{server.port}/echo", proxy=None) as websocket:
        websocket.send("zoom")
        assert websocket.recv(timeout=10) == "ZOOM"
    with pytest.raises(Exception, match="403"):  # no WebSocket where no route is
        connect(f"ws://{server.host}:{server.port}/index.html", proxy=None)


def test_requests_over_the_limit_get_503_and_websockets_do_not_count(busy_app):
    server, release, waiting = busy_app
    with connect(f"ws://{server.host}:{server.port}/echo", proxy=None) as websocket:
        answers: list[bytes] = []
        threads = [threading.Thread(target=lambda: answers.append(fetch(server, "/wait")[2]))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert waiting.acquire(timeout=10)
        status, headers, body = fetch(server, "/sub/tile.jpeg")
        assert (status, headers["retry-after"], body) == (503, "1", b"503 Service Unavailable\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        websocket.send("still here")  # the open WebSocket was not counted, and still works
        assert websocket.recv(timeout=10) == "STILL HERE"
        release.set()
        for thread in threads:
            thread.join(10)
        assert answers == [b"done", b"done"]
        assert fetch(server, "/sub/tile.jpeg")[::2] == (200, b"tile")


@pytest.mark.slow
def test_a_stalled_client_is_disconnected_and_blocks_no_one(root):
    """Half a request line, or an answer nobody reads, is cut off after the server's
    ``client_timeout``; meanwhile other clients are served."""
    with open(root / "stall.bin", "wb") as sparse:
        sparse.truncate(64 << 20)
    with start_server(make_app(root), client_timeout=1) as server:
        stalled = socket.create_connection((server.host, server.port), timeout=10)
        stalled.sendall(b"GET /index.ht")
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect((server.host, server.port))
        reader.sendall(b"GET /stall.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert fetch(server, "/sub/tile.jpeg")[::2] == (200, b"tile")
        stalled.settimeout(0.1)
        with pytest.raises(TimeoutError):  # served while the stalled one still waits
            stalled.recv(1024)
        start = time.monotonic()
        stalled.settimeout(10)
        assert stalled.recv(1024) == b""  # then closed by the server, well before our 10 s
        time.sleep(0.5)  # the reader's deadline, armed as its answer filled the buffers
        reader.settimeout(10)
        received = 0
        while chunk := reader.recv(1 << 20):  # what was under way, then the end
            received += len(chunk)
        assert received < 16 << 20 and time.monotonic() - start < 8
        assert fetch(server, "/sub/tile.jpeg")[::2] == (200, b"tile")
        stalled.close()
        reader.close()


def test_an_idle_kept_alive_connection_is_closed_but_not_a_websocket(root):
    app = make_app(root, routes=[WebSocketRoute("/echo", echo)])
    with (start_server(app, client_timeout=1) as server,
          connect(f"ws://{server.host}:{server.port}/echo", proxy=None) as websocket):
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        connection.request("GET", "/sub/tile.jpeg")
        assert connection.getresponse().read() == b"tile"
        assert connection.sock.recv(1) == b""  # closed after a second of silence
        connection.close()
        websocket.send("quiet for a second")  # a WebSocket has no such deadline
        assert websocket.recv(timeout=10) == "QUIET FOR A SECOND"


def test_server_listens_on_ipv6_loopback(root):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with start_server(make_app(root), host="::1") as server:
        assert server.url == f"http://[::1]:{server.port}/"
        assert fetch(server, "/sub/tile.jpeg")[::2] == (200, b"tile")


def test_bad_folders_addresses_and_startups_are_one_line_errors(root, tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        make_app(tmp_path / "none")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"--port {port}: cannot listen: Address already"):
            start_server(make_app(root), port=port)
        result = CliRunner().invoke(_cli(), ["serve", str(root), "--port", str(port)])
        assert result.exit_code == 2
        assert result.output == (f"Error: --host 127.0.0.1 --port {port}: cannot listen: "
                                 "Address already in use\n")
    with pytest.raises(InputError, match="--host 203.0.113.9 .*: cannot listen"):
        start_server(make_app(root), host="203.0.113.9")

    def lifespan(app: Starlette):
        raise RuntimeError("no model")

    with pytest.raises(BuildError, match="the app failed to start"):
        start_server(make_app(root, lifespan=lifespan))


def _cli():
    from hypermosaic.cli import cli

    return cli


@pytest.fixture()
def serve_process(root):
    """`hypermosaic serve ROOT --port 0 --verbose` as a user runs it; yields the process and
    the URL it prints."""
    with open(root / "big.bin", "wb") as sparse:
        sparse.truncate(256 << 20)
    with subprocess.Popen(
        [sys.executable, "-m", "hypermosaic", "serve", str(root), "--port", "0", "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url is not None, line + process.stderr.read()
        yield process, int(url.group(1))
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_serve_drops_broken_downloads_quietly_and_stops_on_ctrl_c(serve_process):
    """Clients that hang up mid-download (cleanly or with a reset) leave no traceback; SIGINT
    stops the server within its second of grace, even with a download nobody reads and an
    idle connection open, with status 0 and "stopped"."""
    process, port = serve_process
    for reset in (False, True):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert stalled.recv(100).startswith(b"HTTP/1.1 200 ")
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.3)
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - start < 3
    stderr = process.stderr.read()
    assert "Traceback" not in stderr and "Error" not in stderr and "Cancel" not in stderr, stderr
    assert stderr.count('"GET /big.bin HTTP/1.1" 200') == 3  # --verbose logs requests
    assert stderr.rstrip().endswith("stopped")
    stalled.close()
    idle.close()


def test_serve_is_quiet_without_verbose(root):
    with subprocess.Popen(
        [sys.executable, "-m", "hypermosaic", "serve", str(root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        try:
            port = int(re.search(r":(\d+)/", process.stdout.readline()).group(1))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nNONSENSE\r\n\r\n")
                sock.recv(65536)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
            assert process.stderr.read() == "stopped\n"
        finally:
            if process.poll() is None:
                process.kill()


def write_noise_webm(path: Path, seconds: int = 30, fps: int = 10) -> None:
    """A VP8 WebM of noise (incompressible: ~6 MB), a keyframe every second, cues at the end."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps,
                                options={"deadline": "realtime", "cpu-used": "8", "g": str(fps)})
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        stream.bit_rate = 4_000_000
        for _ in range(seconds * fps):
            pixels = rng.integers(0, 255, (128, 160, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode())


@pytest.mark.slow
def test_a_browser_seeks_a_video_through_range_requests(tmp_path):
    """Chromium reads the WebM's head and its cues at the end, then seeks to 90 % with a range
    starting there: every answer a 206 of the bytes asked for."""
    from playwright.sync_api import sync_playwright

    write_noise_webm(tmp_path / "zoom.webm")
    size = (tmp_path / "zoom.webm").stat().st_size
    (tmp_path / "index.html").write_text(
        '<!doctype html><video id="v" src="zoom.webm" preload="metadata" muted></video>')
    ranges: list[tuple[int, str | None, str | None]] = []
    with start_server(make_app(tmp_path)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu",
                                                   "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.on("response", lambda answer: answer.url.endswith(".webm") and ranges.append(
                (answer.status, answer.request.headers.get("range"),
                 answer.headers.get("content-range"))))
            page.goto(server.url)
            page.wait_for_function("document.getElementById('v').readyState >= 1")
            assert page.evaluate("document.getElementById('v').duration") == 30
            page.evaluate("() => { document.getElementById('v').currentTime = 27; }")
            page.wait_for_function("(v => v.readyState >= 2 && !v.seeking)"
                                   "(document.getElementById('v'))")
            assert page.evaluate("document.getElementById('v').currentTime") == 27
        finally:
            browser.close()
    starts = [int(asked.removeprefix("bytes=").rstrip("-")) for _, asked, _ in ranges]
    assert ranges and all(status == 206 for status, _, _ in ranges)
    assert all(answered == f"bytes {start}-{size - 1}/{size}"
               for start, (_, _, answered) in zip(starts, ranges, strict=True))
    assert starts[0] == 0 and any(size // 2 < start < size * 0.97 for start in starts), ranges
