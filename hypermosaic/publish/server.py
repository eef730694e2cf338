"""A read-only static server for a build's output directory (the viewer and its tiles).

Only GET and HEAD. A request is answered from inside the root or not at all: paths with ``..``
segments, encoded slashes or backslashes, NUL bytes, or any symbolic link on the way are refused
(403), and files are opened without following links, so nothing outside the root is ever read.
Directories serve their ``index.html`` and are never listed. A request body (on any method) is
read and dropped, or the connection closed after the answer, so that a kept-alive connection
never reads one request's body as the next request. A connection on which nothing moves for
``client_timeout`` seconds (a stalled request, an idle kept-alive connection, or a client that
stops reading its answer) is closed, so stalled clients do not pile up threads.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import socket
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hypermosaic.errors import InputError
from hypermosaic.publish.viewer import VIEWER_NAME

__all__ = ["make_server", "resolve_request", "serve_build", "server_url"]

TYPES = {
    ".dzi": "application/xml",
    ".js": "text/javascript",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".webp": "image/webp",
}
FORBIDDEN = "forbidden"
BODY_LIMIT = 64 << 10
"""Largest request body read and discarded to keep a connection; above it, or chunked, the
connection is closed after the answer instead."""
CLIENT_TIMEOUT = 30.0


def resolve_request(root: Path, target: str) -> Path | str | None:
    """The file under ``root`` that a request target names.

    Returns the file's path, ``FORBIDDEN`` for a target that tries to leave the root (``..``,
    encoded ``/`` or ``\\``, NUL, a symbolic link anywhere on the way), or None when there is no
    such file. ``root`` must be resolved (absolute, no links).
    """
    raw = urlsplit(target).path
    lowered = raw.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in raw:
        return FORBIDDEN
    parts = [part for part in unquote(raw, errors="strict").split("/") if part not in ("", ".")]
    if any(part == ".." or "\x00" in part or "\\" in part for part in parts):
        return FORBIDDEN
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return FORBIDDEN
    if path.is_dir():
        path = path / "index.html"
        if path.is_symlink():
            return FORBIDDEN
    if not path.is_file():
        return None
    if not path.resolve().is_relative_to(root):
        return FORBIDDEN
    return path


class _Handler(BaseHTTPRequestHandler):
    """Serves files under ``server.root``; see the module docstring for what is refused."""

    server_version = "hypermosaic"
    protocol_version = "HTTP/1.1"

    server: _Server

    def setup(self) -> None:
        self.request.settimeout(self.server.client_timeout)  # a silent client is dropped
        super().setup()

    def do_GET(self) -> None:
        self._skip_body()
        self._send(body=True)

    def do_HEAD(self) -> None:
        self._skip_body()
        self._send(body=False)

    def _refuse_write(self) -> None:
        self._skip_body()
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, extra={"Allow": "GET, HEAD"})

    def _skip_body(self) -> None:
        """Read and drop the request's body, so that the next request on a kept-alive
        connection starts where this one ends; a body too large to bother with, chunked or of
        unknown length makes the answer close the connection instead."""
        length = self.headers.get("Content-Length", "0").strip()
        chunked = "Transfer-Encoding" in self.headers
        if chunked or not length.isdigit() or int(length) > BODY_LIMIT:
            self.close_connection = True
            return
        remaining = int(length)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 16 << 10))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_write

    def _error(self, status: HTTPStatus, extra: dict[str, str] | None = None) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self._end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _end_headers(self) -> None:
        """End the headers, telling the client when this answer closes the connection."""
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, body: bool) -> None:
        try:
            path = resolve_request(self.server.root, self.path)
        except UnicodeDecodeError:
            path = FORBIDDEN
        if isinstance(path, str):  # FORBIDDEN
            self._error(HTTPStatus.FORBIDDEN)
            return
        if path is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            kind = TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-cache")
            self._end_headers()
            if body:
                shutil.copyfileobj(handle, self.wfile)

    def log_message(self, format: str, *args: object) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], root: Path, verbose: bool, client_timeout: float
    ) -> None:
        self.root = root
        self.verbose = verbose
        self.client_timeout = client_timeout
        super().__init__(address, _Handler)


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(
    out_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
    client_timeout: float = CLIENT_TIMEOUT,
) -> ThreadingHTTPServer:
    """A server for ``out_dir`` bound to ``host:port`` (port 0: any free port); not started.
    A connection silent for ``client_timeout`` seconds is closed.

    Raises InputError if ``out_dir`` is not a directory or the address cannot be bound.
    """
    root = Path(out_dir)
    if not root.is_dir():
        raise InputError(f"{out_dir}: no such directory")
    cls = _Server6 if ":" in host else _Server
    try:
        return cls((host, port), root.resolve(), verbose, client_timeout)
    except OSError as exc:
        raise InputError(f"--host {host} --port {port}: cannot listen: {exc.strerror}") from None


def _check_viewer(folder: Path) -> None:
    """`InputError` unless ``folder`` holds a published build's viewer page."""
    if (folder / VIEWER_NAME).is_file() or not folder.is_dir():
        return  # a missing folder is `make_server`'s to report
    inside = sorted(str(page.parent) for pattern in (f"*/{VIEWER_NAME}", f"*/*/{VIEWER_NAME}")
                    for page in folder.glob(pattern))
    if inside:
        raise InputError(f"{folder}: no viewer here ({VIEWER_NAME}); serve one of the builds "
                         f"inside: {', '.join(inside[:8])}")
    raise InputError(f"{folder}: no viewer here ({VIEWER_NAME}): not a published build; "
                     "run hypermosaic build (without --no-publish) first")


def server_url(server: ThreadingHTTPServer) -> str:
    """The address to open in a browser."""
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve_build(out_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
                verbose: bool = False, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``out_dir`` read-only until interrupted; ``on_ready(url)`` once it listens.

    Raises InputError (before listening) as `make_server` does, and for a folder without a
    viewer page, naming the builds inside it if any; Ctrl-C stops it cleanly.
    """
    _check_viewer(Path(out_dir))
    with make_server(out_dir, host=host, port=port, verbose=verbose) as server:
        if on_ready is not None:
            on_ready(server_url(server))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            return
