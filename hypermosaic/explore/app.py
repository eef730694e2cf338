"""The live viewer's web side: its page, and one WebSocket per browser for views and news.

Why a WebSocket: the browser must tell the server where it looks (every pan and zoom) and the
server must tell the browser when nodes land; one socket carries both ways with no polling
delay, and its lifetime is the viewer's, so the work of a closed tab is dropped at once.

Each message from a browser is a view (`hypermosaic.explore.plan.ViewMessage`); the answer
lists the stored nodes in it (the page's tile source asks only for those, so no request ever
ends in a 404) and how many are still missing, and the view's wanted batches replace that
browser's in `hypermosaic.explore.scheduler.LiveScheduler`. Landed nodes are announced to every
browser (``{"type": "landed", "nodes": [...]}``); a browser that does not read its messages
has them dropped past `QUEUE_LIMIT` and gets one ``resync`` instead, so memory stays bounded.
Node images themselves are plain files of the store (``/nodes/...``), served with the static
server's ETags and Range support.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from hypermosaic.build import BuildConfig, NodeMaker, node_batch
from hypermosaic.explore.plan import LEVELS, View, ViewMessage, view_nodes
from hypermosaic.explore.scheduler import LiveScheduler
from hypermosaic.tree import Address, address_key

__all__ = ["MAX_VIEWERS", "QUEUE_LIMIT", "LiveHub", "live_lifespan", "live_routes"]

MAX_VIEWERS = 32
QUEUE_LIMIT = 64
MESSAGE_LIMIT = 8192
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class LiveHub:
    """The connected browsers: their outgoing message queues, and the announcements."""

    def __init__(self, config: BuildConfig, maker: NodeMaker, max_in_flight: int) -> None:
        self.config = config
        self.store = maker.store
        self.scheduler = LiveScheduler(maker, max_in_flight, self.landed, self.failed)
        self.queues: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)

    def post(self, viewer: int, message: dict[str, Any]) -> None:
        """Queue a message for one browser; a full queue is replaced by one ``resync``."""
        queue = self.queues.get(viewer)
        if queue is None:
            return
        if queue.full():
            while not queue.empty():
                queue.get_nowait()
            message = {"type": "resync"}
        queue.put_nowait(message)

    def announce(self, message: dict[str, Any]) -> None:
        """From any thread: queue ``message`` for every browser."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._broadcast, message)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for viewer in list(self.queues):
            self.post(viewer, message)

    def landed(self, nodes: list[Address]) -> None:
        self.announce({"type": "landed", "nodes": [address_key(a) for a in nodes]})

    def failed(self, nodes: list[Address], error: str) -> None:
        self.announce({"type": "failed", "nodes": [address_key(a) for a in nodes],
                       "error": error})

    def answer(self, viewer: int, text: str) -> dict[str, Any]:
        """The answer to one message from a browser (run off the event loop: it reads the
        store); a bad message gets an ``error`` answer naming the problem."""
        try:
            message = ViewMessage.model_validate(json.loads(text))
            view = View.parse(message, self.config.grid_at)
        except (ValueError, ValidationError) as exc:
            problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            return {"type": "error", "message": f"bad view message: {problem}"}
        nodes = view_nodes(view, self.config.grid_at, self.store.has)
        batches = list(dict.fromkeys(node_batch(self.config, a) for a in nodes.wanted))
        self.scheduler.want(viewer, batches)
        return {"type": "nodes", "root": address_key(view.root), "seq": message.seq,
                "present": nodes.present_keys(), "missing": len(nodes.wanted)}

    async def session(self, websocket: WebSocket) -> None:
        """One browser's socket: answer its views, forward announcements, until it closes."""
        await websocket.accept()
        if len(self.queues) >= MAX_VIEWERS:  # accepted first, so the browser hears why
            await websocket.close(code=1013, reason="too many viewers; try again later")
            return
        viewer = next(self._ids)
        self.queues[viewer] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        sender = asyncio.create_task(self._send(websocket, self.queues[viewer]))
        try:
            while True:
                text = await websocket.receive_text()
                if len(text) > MESSAGE_LIMIT:
                    await websocket.close(code=1009, reason="message too large")
                    return
                self.post(viewer, await asyncio.to_thread(self.answer, viewer, text))
        except (WebSocketDisconnect, RuntimeError):
            return  # the browser went away (or the server is stopping)
        finally:
            sender.cancel()
            self.queues.pop(viewer, None)
            self.scheduler.forget(viewer)

    @staticmethod
    async def _send(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
        try:
            while True:
                await websocket.send_json(await queue.get())
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


def _page(config: BuildConfig, title: str) -> str:
    """The live page with the build's geometry inline."""
    settings = {
        "size": config.size,
        "grids": config.grid if isinstance(config.grid, list) else [config.grid],
        "ext": _EXTENSIONS[config.format],
        "levels": LEVELS,
    }
    template = (files("hypermosaic") / "data" / "explore" / "index.html").read_text("utf-8")
    return (template.replace("{{title}}", html.escape(title))
            .replace("{{settings}}", json.dumps(settings).replace("</", "<\\/")))


def live_routes(hub: LiveHub, title: str) -> list[BaseRoute]:
    """The live viewer's routes: ``/`` (the page), ``/live`` (its socket), ``/live/status``
    (counts, as JSON) and ``/static`` (its scripts and OpenSeadragon)."""
    page = _page(hub.config, title)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def status(request: Request) -> JSONResponse:
        stats = hub.scheduler.stats
        return JSONResponse({"viewers": len(hub.queues), "made": stats.made,
                             "batches": stats.batches, "failed": stats.failed,
                             "in_flight": stats.in_flight, "waiting": stats.waiting,
                             "errors": stats.errors})

    data = files("hypermosaic") / "data"
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/live/status", status, methods=["GET", "HEAD"]),
        WebSocketRoute("/live", hub.session),
        Mount("/static", app=StaticFiles(directory=str(data))),
    ]


def live_lifespan(hub: LiveHub) -> Callable[[Starlette], Any]:
    """Starts the scheduler with the server's event loop (announcements need it)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        hub.scheduler.start()
        yield

    return lifespan
