"""The paint server's web side: its page, one WebSocket per browser, and the stream loop.

Browsers send their palette (prompts, colours, blur, strength, the background prompt, the
seed) and each brush's mask as a PNG after every stroke; each change makes a new *version* of
the painting. The stream loop asks the pool for the next frame with the latest version's plan
(`hypermosaic.paint.painting.plan_painting`, built off the event loop), and every browser gets
each frame that comes back as one binary message (`frame_message`: a JSON head, ``{"type":
"frame", "index", "version", ...}``, then the JPEG bytes, encoded on the worker). A browser's
queue holds at most `QUEUE_LIMIT` frames; a new frame pushes the oldest out (counted as
dropped), so a slow or stalled browser skips frames and the server's memory stays bounded.
``POST /api/export`` writes the painting as a canvas config in the output folder
(`write_config`) with the last frame beside it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from hypermosaic.canvas import CanvasPlan
from hypermosaic.errors import BuildError, InputError
from hypermosaic.images import decode, encode, resize
from hypermosaic.paint.painting import (
    MAX_BRUSHES,
    Brush,
    Painting,
    mask_from_png,
    plan_painting,
    write_config,
)
from hypermosaic.paint.tasks import EncodedFrame
from hypermosaic.store import atomic_write

__all__ = ["QUEUE_LIMIT", "Advance", "PaintHub", "frame_message", "paint_lifespan", "paint_routes",
           "read_frame_message"]

QUEUE_LIMIT = 2
MESSAGE_LIMIT = 8 * 1024 * 1024
MAX_VIEWERS = 16
FRAME_NAME = "painting-frame.png"

Advance = Callable[[CanvasPlan, int, int], Awaitable[list[EncodedFrame]]]
"""``advance(plan, start, count)``: frames ``start..start+count-1`` enter the stream; the
frames that came out, encoded."""


@dataclass
class Stats:
    frames: int = 0
    sent: int = 0
    dropped: int = 0
    errors: int = 0


class PaintHub:
    """The painting being edited, its versions, the browsers' frame queues and the stream
    loop that feeds them (``advance`` runs frames on the pool)."""

    def __init__(self, painting: Painting, work: Path, out: Path, advance: Advance) -> None:
        self.painting = painting
        self.work, self.out = work, out
        self.advance = advance
        self.version = 0
        self.entered: dict[int, int] = {}  # frame index -> the version it entered with
        self.queues: dict[int, asyncio.Queue[tuple[dict[str, Any], bytes]]] = {}
        self.stats = Stats()
        self.last_png: bytes | None = None
        self.error: str | None = None
        self.changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._plan: tuple[int, CanvasPlan] | None = None

    # Changes from browsers.
    def updated(self, message: dict[str, Any]) -> Painting:
        """The painting with a ``palette`` or ``mask`` message applied (run off the event
        loop: it decodes PNGs); `InputError` for a bad message."""
        kind = message.get("type")
        if kind == "palette":
            return _palette(self.painting, message)
        if kind == "mask":
            data = base64.b64decode(str(message.get("png", "")).split(",")[-1])
            return self.painting.with_mask(int(message.get("index", -1)),
                                           mask_from_png(data, self.painting))
        raise InputError(f"type: unknown message {kind!r}")

    def set_painting(self, painting: Painting) -> None:
        """Make ``painting`` the next version (on the event loop); the stream takes it with
        its next frame."""
        self.painting = painting
        self.version += 1
        self.error = None
        self.changed.set()

    # Frames to browsers.
    def post(self, viewer: int, item: tuple[dict[str, Any], bytes]) -> None:
        """Queue a frame for one browser, pushing out its oldest when the queue is full."""
        queue = self.queues.get(viewer)
        if queue is None:
            return
        while queue.full():
            queue.get_nowait()
            self.stats.dropped += 1
        queue.put_nowait(item)

    def broadcast(self, frame: EncodedFrame) -> None:
        self.stats.frames += 1
        if frame.png is not None:
            self.last_png = frame.png
        head = {"type": "frame", "index": frame.index, "seed": frame.seed,
                "version": self.entered.pop(frame.index, self.version)}
        for viewer in list(self.queues):
            self.post(viewer, (head, frame.jpeg))

    async def plan(self) -> tuple[int, CanvasPlan]:
        """The latest version and its plan (built once per version, off the event loop)."""
        version, painting = self.version, self.painting
        if self._plan is None or self._plan[0] != version:
            self._plan = (version, await run_in_threadpool(plan_painting, painting, self.work))
        return self._plan

    async def run(self, per_task: int = 1) -> None:
        """The stream loop: while a browser is connected, frames enter with the latest plan;
        a painting that cannot be planned waits for the next change."""
        index = 0
        while True:
            if not self.queues or self.error is not None:
                self.changed.clear()
                await self.changed.wait()
                continue
            try:
                version, plan = await self.plan()
                for k in range(index, index + per_task):
                    self.entered[k] = version
                frames = await self.advance(plan, index, per_task)
            except Exception as exc:  # noqa: BLE001 - shown to the painters; the loop goes on
                self.error = str(exc) if isinstance(exc, InputError | BuildError) else (
                    f"{type(exc).__name__}: {exc}")
                self.stats.errors += 1
                for viewer in list(self.queues):
                    self.post(viewer, ({"type": "error", "message": self.error}, b""))
                continue
            index += per_task
            for frame in frames:
                self.broadcast(frame)

    async def export(self) -> Path:
        """Write the painting as a canvas config in the output folder, with the last frame."""
        path = await run_in_threadpool(write_config, self.painting, self.out)
        if self.last_png is not None:
            await run_in_threadpool(atomic_write, self.out / FRAME_NAME, self.last_png)
        return path

    async def session(self, websocket: WebSocket) -> None:
        """One browser: its changes in, the frames out, until it closes."""
        await websocket.accept()
        if len(self.queues) >= MAX_VIEWERS:
            await websocket.close(code=1013, reason="too many painters; try again later")
            return
        viewer = next(self._ids)
        self.queues[viewer] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.changed.set()
        sender = asyncio.create_task(_send(websocket, self.queues[viewer], self.stats))
        try:
            while True:
                text = await websocket.receive_text()
                if len(text) > MESSAGE_LIMIT:
                    await websocket.close(code=1009, reason="message too large")
                    return
                try:
                    self.set_painting(await run_in_threadpool(self.updated, json.loads(text)))
                    answer = {"type": "ack", "version": self.version}
                except (InputError, ValueError, TypeError) as exc:
                    answer = {"type": "error", "message": str(exc)}
                await websocket.send_json(answer)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            sender.cancel()
            self.queues.pop(viewer, None)


async def _send(websocket: WebSocket, queue: asyncio.Queue[tuple[dict[str, Any], bytes]],
                stats: Stats) -> None:
    try:
        while True:
            head, data = await queue.get()
            if not data:
                await websocket.send_json(head)
                continue
            await websocket.send_bytes(frame_message(head, data))
            stats.sent += 1
    except (WebSocketDisconnect, RuntimeError, OSError):
        return


def frame_message(head: dict[str, Any], jpeg: bytes) -> bytes:
    """One binary message per frame, so that answers never fall between a frame's parts:
    the head's length (4 bytes, big-endian), the head as JSON, then the JPEG."""
    text = json.dumps(head).encode()
    return len(text).to_bytes(4, "big") + text + jpeg


def read_frame_message(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The head and JPEG of a `frame_message`."""
    n = int.from_bytes(data[:4], "big")
    return json.loads(data[4 : 4 + n]), data[4 + n :]


def _palette(painting: Painting, message: dict[str, Any]) -> Painting:
    """The painting with the palette of a ``palette`` message (masks kept by position)."""
    entries = message.get("brushes", [])
    if not isinstance(entries, list) or len(entries) > MAX_BRUSHES:
        raise InputError(f"brushes: give a list of at most {MAX_BRUSHES}")
    brushes = []
    for index, entry in enumerate(entries):
        old = painting.brushes[index] if index < len(painting.brushes) else None
        brushes.append(Brush(
            prompt=str(entry["prompt"]), colour=str(entry.get("colour", "#e6194b")),
            blur=min(max(float(entry.get("blur", 8.0)), 0.0), 256.0),
            strength=min(max(float(entry.get("strength", 1.0)), 0.0), 1e6),
            negative_prompt=str(entry.get("negative_prompt", "")),
            mask=old.mask if old is not None and old.mask.size else painting.empty_mask()))
    return replace(painting, brushes=tuple(brushes),
                   background=str(message.get("background", painting.background)),
                   seed=int(message.get("seed", painting.seed)) % 2**63)


def with_photo(painting: Painting, data: bytes) -> Painting:
    """The painting over the photo in ``data`` (any image; resized to the canvas)."""
    if len(data) > MESSAGE_LIMIT:
        raise InputError("photo: larger than 8 MB")
    try:
        pixels = decode(data)
    except Exception as exc:  # noqa: BLE001 - any undecodable upload is the same error
        raise InputError(f"photo: not a readable image ({type(exc).__name__})") from None
    return replace(painting, photo=resize(pixels[..., :3], painting.width, painting.height))


def painting_json(painting: Painting) -> dict[str, Any]:
    """The painting as the page loads it: settings, palette and masks (PNG data URLs)."""
    def url(png: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(png).decode()

    return {
        "width": painting.width, "height": painting.height, "seed": painting.seed,
        "steps": painting.steps, "model": painting.model, "background": painting.background,
        "photo": None if painting.photo is None else url(encode(painting.photo, "png")),
        "brushes": [{"prompt": b.prompt, "colour": b.colour, "blur": b.blur,
                     "strength": b.strength, "negative_prompt": b.negative_prompt,
                     "mask": url(encode((b.mask if b.mask.size else painting.empty_mask()
                                         )[..., None], "png"))}
                    for b in painting.brushes],
    }


def paint_routes(hub: PaintHub) -> list[BaseRoute]:
    """``/`` (the page), ``/paint`` (its socket), ``/api/painting`` (the painting as JSON),
    ``/api/frame.png`` (the last frame, lossless), ``/api/status``, ``POST /api/export``
    and ``/static`` (the page's script)."""
    page = (files("hypermosaic") / "data" / "paint" / "index.html").read_text("utf-8")

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def painting(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(painting_json, hub.painting))

    async def frame(request: Request) -> Response:
        if hub.last_png is None:
            return Response("no frame yet", status_code=404)
        return Response(hub.last_png, media_type="image/png")

    async def status(request: Request) -> JSONResponse:
        s = hub.stats
        return JSONResponse({"painters": len(hub.queues), "version": hub.version,
                             "frames": s.frames, "sent": s.sent, "dropped": s.dropped,
                             "errors": s.errors, "error": hub.error,
                             "queued": sum(q.qsize() for q in hub.queues.values())})

    async def background(request: Request) -> JSONResponse:
        data = await request.body()
        try:
            painting = await run_in_threadpool(with_photo, hub.painting, data)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        hub.set_painting(painting)
        return JSONResponse({"photo": (await run_in_threadpool(painting_json, painting))["photo"]})

    async def export(request: Request) -> JSONResponse:
        path = await hub.export()
        return JSONResponse({"path": str(path), "frame": str(hub.out / FRAME_NAME)})

    data = files("hypermosaic") / "data"
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/api/painting", painting, methods=["GET"]),
        Route("/api/frame.png", frame, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/background", background, methods=["POST"]),
        WebSocketRoute("/paint", hub.session),
        Mount("/static", app=StaticFiles(directory=str(data))),
    ]


def paint_lifespan(hub: PaintHub) -> Callable[[Starlette], Any]:
    """Runs the stream loop for as long as the server."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            loop.cancel()

    return lifespan
