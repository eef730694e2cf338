"""Serving a build folder: a starlette app on uvicorn, in the foreground or a background thread.

`make_app` puts the read-only files of a folder (`hypermosaic.publish.files`) behind any routes
a caller adds (a live viewer's API, a WebSocket), and answers 503 (``Retry-After: 1``) to an
HTTP request arriving while ``max_concurrency`` others are in flight rather than queueing it.
`run_server` serves an app until Ctrl-C, `start_server` in a background thread (tests,
embedding); both listen on loopback unless told otherwise, port 0 taking any free port.

uvicorn's h11 protocol is guarded against clients that stall: a request head must arrive within
``client_timeout`` seconds of the connection opening or the previous answer ending (so half a
request line, or an idle kept-alive connection, is dropped), and a client that reads none of
its answer for that long is cut off. Neither blocks anyone else. A request head over 16 KiB is
refused with 431 (h11 holds at most 64 KiB of an unfinished one, then answers 400); a request
body nobody reads is dropped by h11 without desynchronising the connection, or the answer
closes the connection when that body is large or chunked. Ctrl-C (or `RunningServer.stop`)
gives answers in flight `SHUTDOWN_GRACE` seconds, then ends them quietly.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from hypermosaic.errors import BuildError, InputError
from hypermosaic.publish.files import BuildFiles, error, reply
from hypermosaic.publish.viewer import VIEWER_NAME

__all__ = ["RunningServer", "make_app", "run_server", "serve_build", "server_url",
           "start_server"]

CLIENT_TIMEOUT = 30
"""Seconds a client may keep the server waiting: for a request head, or to read its answer."""
HEAD_LIMIT = 16 << 10
"""Largest request head (target and headers) answered (431 beyond)."""
H11_BUFFER = 64 << 10
"""Most of an unfinished request head h11 holds before answering 400 and closing."""
SHUTDOWN_GRACE = 1
"""Seconds answers in flight get to finish when the server stops (Ctrl-C) before being cut."""
_VERBOSE_LOGGING = copy.deepcopy(LOGGING_CONFIG)
_VERBOSE_LOGGING["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout carries the URL


def make_app(root: Path, *, routes: Sequence[BaseRoute] = (),
             lifespan: Lifespan[Starlette] | None = None, max_concurrency: int = 64) -> Starlette:
    """A starlette app: ``routes`` first, then the files of ``root`` for every other path.

    ``lifespan`` is starlette's. More than ``max_concurrency`` HTTP requests at once are
    answered 503 at once; WebSocket sessions are not counted. Raises InputError if ``root`` is
    not a directory.
    """
    if not Path(root).is_dir():
        raise InputError(f"{root}: no such directory")
    app = Starlette(routes=list(routes), lifespan=lifespan,
                    middleware=[Middleware(_Limits, limit=max_concurrency)])
    app.router.default = BuildFiles(Path(root))
    return app


class _Limits:
    """Refuses an HTTP request whose head is over `HEAD_LIMIT` bytes (431, closing the
    connection), and answers 503 with ``Retry-After: 1`` to one that arrives while ``limit``
    others are in flight, instead of queueing it, so memory stays bounded under any load.
    WebSocket sessions last as long as a page is open and are not counted."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope["query_string"]) + sum(
            len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > HEAD_LIMIT:
            too_large = error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, {"Connection": "close"})
            await too_large(scope, receive, send)
            return
        if self.active >= self.limit:
            await reply(error(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "1"}),
                        scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with two deadlines on the client (``timeout_keep_alive``
    seconds): for the next request head while no request is in progress (half a request line
    is not progress), and for reading the answer while the socket's buffer is full."""

    _head_deadline: asyncio.TimerHandle | None = None
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.timeout_keep_alive,
                                                       self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        for deadline in (self._head_deadline, self._read_deadline):
            if deadline is not None:
                deadline.cancel()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Arm the head deadline while the connection waits for a request, disarm it while
        one is answered or once the connection became a WebSocket."""
        waiting = ((self.cycle is None or self.cycle.response_complete)
                   and self.transport.get_protocol() is self and not self.transport.is_closing())
        if waiting and self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.timeout_keep_alive,
                                                       self.transport.close)
        elif not waiting and self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once it listens (after the app's startup).

    When it stops, connections still busy after `SHUTDOWN_GRACE` seconds are aborted, so that
    their answers end as if the client had left (quietly) rather than being cancelled (with a
    traceback); uvicorn cancels what still runs a second later.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        abort = asyncio.get_running_loop().call_later(SHUTDOWN_GRACE, self._abort_connections)
        try:
            await super().shutdown(sockets=sockets)
        finally:
            abort.cancel()

    def _abort_connections(self) -> None:
        for connection in list(self.server_state.connections):
            connection.transport.abort()


def _config(app: ASGIApp, host: str, port: int, verbose: bool,
            client_timeout: int) -> uvicorn.Config:
    """uvicorn's settings: the guarded h11 protocol, the websockets package for WebSockets,
    the app's lifespan required, requests logged to stderr when ``verbose`` (else errors only)."""
    return uvicorn.Config(
        app, host=host, port=port, http=_GuardedH11Protocol, ws="websockets-sansio",
        lifespan="on", loop="asyncio", log_config=_VERBOSE_LOGGING if verbose else None,
        log_level="info" if verbose else "error", access_log=verbose, proxy_headers=False,
        server_header=False, timeout_keep_alive=client_timeout,
        h11_max_incomplete_event_size=H11_BUFFER,
        timeout_graceful_shutdown=SHUTDOWN_GRACE + 1,
    )


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 when ``host`` has a colon).

    Its protocol is named: asyncio sets TCP_NODELAY only on connections accepted from such a
    socket, and without it every answer on a kept-alive connection waits ~40 ms for the
    client's delayed ACK. Raises InputError when the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"--host {host} --port {port}: cannot listen: {exc.strerror}") from None
    return sock


def server_url(host: str, port: int) -> str:
    """The address to open in a browser."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class RunningServer:
    """A uvicorn server running in a background thread; `stop` (or leaving a ``with`` block)
    ends it, letting answers in flight finish for up to `SHUTDOWN_GRACE` seconds."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str,
                 port: int) -> None:
        self._server, self._thread = server, thread
        self.host, self.port, self.url = host, port, server_url(host, port)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _run_quietly(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run ``server`` on ``sock``; a failed startup (uvicorn exits) just ends the thread."""
    try:
        server.run(sockets=[sock])
    except SystemExit:
        sock.close()


def start_server(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
                 client_timeout: int = CLIENT_TIMEOUT) -> RunningServer:
    """Serve ``app`` from a background thread; returns once it listens.

    Raises InputError when the address cannot be bound, BuildError when the app's startup
    (its lifespan) fails.
    """
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    started = threading.Event()
    server = _Server(_config(app, host, port, verbose, client_timeout), started.set)
    thread = threading.Thread(target=_run_quietly, args=(server, sock),
                              name=f"hypermosaic-server-{port}", daemon=True)
    thread.start()
    while not started.wait(0.05):
        if not thread.is_alive():
            raise BuildError(f"{server_url(host, port)}: the app failed to start (see above)")
    return RunningServer(server, thread, host, port)


def run_server(app: ASGIApp, host: str, port: int, verbose: bool,
               on_ready: Callable[[str], None] | None = None,
               client_timeout: int = CLIENT_TIMEOUT) -> None:
    """Serve ``app`` in the foreground until Ctrl-C (or SIGTERM), then return normally;
    ``on_ready(url)`` once it listens.

    Raises InputError (before listening) when the address cannot be bound, BuildError when the
    app's startup (its lifespan) fails.
    """
    sock = _bind(host, port)
    url = server_url(host, sock.getsockname()[1])
    server = _Server(_config(app, host, port, verbose, client_timeout),
                     (lambda: on_ready(url)) if on_ready is not None else (lambda: None))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return
    except SystemExit:  # uvicorn's way of saying the lifespan's startup failed
        raise BuildError(f"{url}: the app failed to start (see above)") from None
    finally:
        sock.close()


def _check_viewer(folder: Path) -> None:
    """`InputError` unless ``folder`` holds a published build's viewer page."""
    if (folder / VIEWER_NAME).is_file() or not folder.is_dir():
        return  # a missing folder is `make_app`'s to report
    inside = sorted(str(page.parent) for pattern in (f"*/{VIEWER_NAME}", f"*/*/{VIEWER_NAME}")
                    for page in folder.glob(pattern))
    if inside:
        raise InputError(f"{folder}: no viewer here ({VIEWER_NAME}); serve one of the builds "
                         f"inside: {', '.join(inside[:8])}")
    raise InputError(f"{folder}: no viewer here ({VIEWER_NAME}): not a published build; "
                     "run hypermosaic build (without --no-publish) first")


def serve_build(out_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
                verbose: bool = False, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``out_dir`` read-only until interrupted; ``on_ready(url)`` once it listens.

    Raises InputError (before listening) for a missing folder, one without a viewer page
    (naming the builds inside it if any) or an address that cannot be bound; Ctrl-C stops it
    cleanly.
    """
    _check_viewer(Path(out_dir))
    run_server(make_app(Path(out_dir)), host, port, verbose, on_ready)
