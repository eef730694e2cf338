"""The files of a build folder as an ASGI app: read-only, never outside the folder.

Only GET and HEAD (anything else: 405 with ``Allow: GET, HEAD``). A request is answered from
inside the root or not at all: paths with ``..`` segments, encoded slashes or backslashes, NUL
bytes, invalid UTF-8, or a symbolic link anywhere on the way are refused (403), and files are
opened without following links, so nothing outside the root is ever read. Directories serve
their ``index.html`` and are never listed.

What browsers expect comes along: single byte ranges (206, or 416 with ``Content-Range: bytes
*/size``; a video seeks without downloading the whole file), ``ETag`` and ``Last-Modified``
with 304 for ``If-None-Match`` / ``If-Modified-Since`` (files change on rebuild, so every answer
says ``Cache-Control: no-cache`` and the browser revalidates cheaply), gzip for text types only
(never images, never ranges), exact content types and ``X-Content-Type-Options: nosniff``.
Files stream in 256 KiB reads that stop as soon as the client goes away.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import zlib
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from io import FileIO
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import anyio
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose

__all__ = ["BuildFiles", "FORBIDDEN", "TYPES", "error", "reply", "resolve_request"]

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".dzi": "application/xml",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".ico": "image/x-icon",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
}
"""Content types by suffix, so that they do not depend on the machine's mime.types."""
COMPRESSIBLE = frozenset({".html", ".js", ".mjs", ".css", ".txt", ".json", ".dzi", ".xml", ".svg"})
FORBIDDEN = "forbidden"
BODY_LIMIT = 64 << 10
"""Largest request body left for the server to drop while keeping the connection; above it, or
chunked, the answer closes the connection instead."""
CHUNK = 256 << 10
"""Bytes read from a file at a time: a fast stream, and at most 16 MiB in flight at 64 requests."""


def resolve_request(root: Path, target: str) -> Path | str | None:
    """The file under ``root`` that a request target names.

    Returns the file's path, ``FORBIDDEN`` for a target that tries to leave the root (``..``,
    encoded ``/`` or ``\\``, NUL, invalid UTF-8, a symbolic link anywhere on the way), or None
    when there is no such file. ``root`` must be resolved (absolute, no links).
    """
    raw = urlsplit(target).path
    lowered = raw.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in raw:
        return FORBIDDEN
    try:
        decoded = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return FORBIDDEN
    parts = [part for part in decoded.split("/") if part not in ("", ".")]
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


def _open(root: Path, target: str) -> tuple[FileIO, os.stat_result, str] | HTTPStatus:
    """The open file a target names, its stat and suffix, or the status that refuses it.

    Opened without following a link, and non-blocking so that a FIFO swapped in cannot hang
    the thread; anything but a regular file is closed again and not found.
    """
    path = resolve_request(root, target)
    if isinstance(path, str):
        return HTTPStatus.FORBIDDEN
    if path is None:
        return HTTPStatus.NOT_FOUND
    try:
        file = FileIO(path, "rb", opener=_no_follow)
    except OSError:
        return HTTPStatus.NOT_FOUND
    info = os.fstat(file.fileno())
    if not stat.S_ISREG(info.st_mode):
        file.close()
        return HTTPStatus.NOT_FOUND
    return file, info, path.suffix.lower()


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


class _FileBody(Response):
    """Bytes ``[start, end)`` of an open file, gzip-compressed when asked; the file is closed
    when the answer ends. Reading stops as soon as the client disconnects, so a dropped
    download costs nothing more and leaves no traceback."""

    def __init__(self, file: FileIO, start: int, end: int, status_code: int,
                 headers: dict[str, str], compress: bool) -> None:
        self.file, self.start, self.end, self.compress = file, start, end, compress
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                await self._send_body(send)
                group.cancel_scope.cancel()
        finally:
            self.file.close()

    async def _send_body(self, send: Send) -> None:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if self.compress else None
        position = self.start
        while position < self.end:
            data = await anyio.to_thread.run_sync(self._read, position, compressor)
            if data is None:
                return  # the file shrank under us: end without completing, the server cuts it
            position += min(CHUNK, self.end - position)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        tail = compressor.flush() if compressor is not None else b""
        await send({"type": "http.response.body", "body": tail})

    def _read(self, position: int, compressor: zlib._Compress | None) -> bytes | None:
        """The next chunk from ``position`` (compressed when asked); None if the file ends
        before it."""
        length = min(CHUNK, self.end - position)
        data = os.pread(self.file.fileno(), length, position)
        if len(data) < length:
            return None
        return compressor.compress(data) if compressor is not None else data


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class BuildFiles:
    """ASGI app serving the files under ``root`` read-only; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await WebSocketClose()(scope, receive, send)
            return
        await reply(await self._respond(Request(scope)), scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        """The answer to ``request`` (a GET or HEAD for a file, or the error)."""
        if request.method not in ("GET", "HEAD"):
            return error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})
        raw_path = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
        opened = await anyio.to_thread.run_sync(_open, self.root, raw_path.decode("latin-1"))
        if isinstance(opened, HTTPStatus):
            return error(opened)
        return _answer(request.headers, *opened)


def _answer(headers: Headers, file: FileIO, info: os.stat_result, suffix: str) -> Response:
    """The answer for an open file: 304, 416, a 206 range, or the whole file (gzip when the
    type is text and the client takes it). Closes ``file`` unless a `_FileBody` takes it."""
    size = info.st_size
    etag = f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{size:x}"'
    gzip_etag = etag[:-1] + '-gz"'  # another representation, another tag
    last_modified = formatdate(info.st_mtime, usegmt=True)
    span = _byte_range(headers, size, etag, last_modified)
    text = suffix in COMPRESSIBLE
    compress = text and span is None and _accepts_gzip(headers.get("accept-encoding", ""))
    common = {"ETag": gzip_etag if compress else etag, "Last-Modified": last_modified,
              "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if text:
        common["Vary"] = "Accept-Encoding"
    if _not_modified(headers, (etag, gzip_etag), info.st_mtime):
        file.close()
        return Response(status_code=304, headers=common)
    if isinstance(span, str):  # unsatisfiable
        file.close()
        return error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                     {"Content-Range": f"bytes */{size}"})
    kind = TYPES.get(suffix) or mimetypes.guess_type("x" + suffix)[0] or "application/octet-stream"
    answer = {**common, "Content-Type": kind, "Accept-Ranges": "bytes"}
    if span is not None:
        start, end = span
        answer["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        answer["Content-Length"] = str(end - start)
        return _FileBody(file, start, end, 206, answer, compress=False)
    if compress:
        answer["Content-Encoding"] = "gzip"
    else:
        answer["Content-Length"] = str(size)
    return _FileBody(file, 0, size, 200, answer, compress)


def _not_modified(headers: Headers, etags: tuple[str, ...], mtime: float) -> bool:
    """Whether the client's copy is current: ``If-None-Match`` (weak comparison, either of the
    file's tags) when sent, else ``If-Modified-Since`` to the second."""
    if "if-none-match" in headers:
        tags = [tag.strip().removeprefix("W/") for tag in headers["if-none-match"].split(",")]
        return "*" in tags or any(tag in etags for tag in tags)
    since = headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return int(mtime) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


def _byte_range(headers: Headers, size: int, etag: str,
                last_modified: str) -> tuple[int, int] | str | None:
    """The one byte range ``[start, end)`` asked for, ``"unsatisfiable"``, or None for the
    whole file: no ``Range``, a stale ``If-Range``, several ranges or a malformed header (all of
    which a server may answer with the whole file)."""
    value = headers.get("range", "")
    if_range = headers.get("if-range")
    if not value.startswith("bytes=") or "," in value or if_range not in (None, etag,
                                                                          last_modified):
        return None
    first, dash, last = value[6:].strip().partition("-")
    if not dash or not (first or last) or not (first + last).isdigit():
        return None
    if not first:  # the last N bytes
        length = int(last)
        return (max(size - length, 0), size) if length > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None  # malformed: the last byte before the first
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last) + 1, size) if last else size


def _accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header lists gzip, and not with q=0."""
    for item in header.lower().split(","):
        name, _, params = item.partition(";")
        if name.strip() == "gzip":
            quality = params.replace(" ", "")
            if not quality.startswith("q="):
                return True
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
    return False


async def reply(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``response`` to a request whose body is not read: the server drops a small body
    and keeps the connection in step; for a large or chunked one the answer closes it."""
    if _body_too_large(Headers(scope=scope)):
        response.headers["connection"] = "close"
    await response(scope, receive, send)


def _body_too_large(headers: Headers) -> bool:
    """Whether a request's body is one the answer should close the connection over rather
    than leave to be read and dropped: chunked, of unknown form, or over `BODY_LIMIT`."""
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or not length.isdigit() or int(length) > BODY_LIMIT


def error(status: HTTPStatus, headers: dict[str, str] | None = None) -> Response:
    """A short plain-text answer for ``status``."""
    return PlainTextResponse(f"{status.value} {status.phrase}\n", status_code=status.value,
                             headers={"X-Content-Type-Options": "nosniff", **(headers or {})})
