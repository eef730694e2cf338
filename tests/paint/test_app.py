"""The paint server with a stand-in stream (no model): messages, frames, bounded queues,
export."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from hypermosaic.canvas import CanvasPlan, load_canvas_config, plan_canvas
from hypermosaic.paint import blank_painting, read_painting
from hypermosaic.paint.app import (
    QUEUE_LIMIT,
    PaintHub,
    paint_lifespan,
    paint_routes,
    read_frame_message,
)
from hypermosaic.paint.tasks import EncodedFrame
from hypermosaic.publish import make_app, start_server

FRAME = b"\xff\xd8" + bytes(200_000)  # a large "JPEG": what a stalled browser would pile up


def stand_in(plans: list[CanvasPlan], delay: float = 0.005):
    """An ``advance`` that returns one frame per call at once (no warm-up)."""
    async def advance(plan: CanvasPlan, start: int, count: int) -> list[EncodedFrame]:
        plans.append(plan)
        await asyncio.sleep(delay)
        return [EncodedFrame(k, plan.seed, FRAME, b"png", "w") for k in range(start, start + count)]

    return advance


@pytest.fixture()
def hub(tmp_path):
    plans: list[CanvasPlan] = []
    hub = PaintHub(blank_painting("some/model", 64, 64), tmp_path / "work", tmp_path / "out",
                   stand_in(plans))
    hub.plans = plans  # type: ignore[attr-defined]
    (tmp_path / "out").mkdir()
    return hub


def mask_message(index: int, box: tuple[int, int, int, int]) -> str:
    alpha = np.zeros((64, 64, 4), np.uint8)
    top, bottom, left, right = box
    alpha[top:bottom, left:right, 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(alpha, "RGBA").save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return json.dumps({"type": "mask", "index": index, "png": url})


def next_text(socket) -> dict:
    """The next text message, skipping frames."""
    while "text" not in (message := socket.receive()):
        assert "bytes" in message
    return json.loads(message["text"])


def test_changes_enter_the_stream_and_frames_come_back(hub, tmp_path):
    app = make_app(tmp_path / "out", routes=paint_routes(hub), lifespan=paint_lifespan(hub))
    with TestClient(app) as client:
        assert "Semantic palette" in client.get("/").text
        assert client.get("/static/paint/paint.js").status_code == 200
        assert len(client.get("/api/painting").json()["brushes"]) == 3
        with client.websocket_connect("/paint") as socket:
            head, jpeg = read_frame_message(socket.receive_bytes())
            assert head["type"] == "frame" and jpeg == FRAME
            socket.send_text(mask_message(1, (0, 32, 0, 32)))
            assert next_text(socket) == {"type": "ack", "version": 1}
            while read_frame_message(socket.receive_bytes())[0]["version"] != 1:
                pass
            socket.send_text(json.dumps({"type": "palette", "seed": 4, "background": "sea",
                                         "brushes": [{"prompt": "a boat", "blur": 2}]}))
            assert next_text(socket) == {"type": "ack", "version": 2}
            socket.send_text("{not json")
            assert next_text(socket)["type"] == "error"
            while read_frame_message(socket.receive_bytes())[0]["version"] != 2:
                pass
        assert hub.plans[-1].seed == 4 and hub.plans[-1].brushes[0].prompt == (("a boat", 1.0),)
        answer = client.post("/api/export").json()
        exported = plan_canvas(load_canvas_config(answer["path"]))
        assert exported == hub.plans[-1]
        assert read_painting(answer["path"]).background == "sea"
        assert client.get("/api/frame.png").content == b"png"


def test_a_bad_message_is_answered_with_an_error(hub, tmp_path):
    app = make_app(tmp_path / "out", routes=paint_routes(hub), lifespan=paint_lifespan(hub))
    with TestClient(app) as client, client.websocket_connect("/paint") as socket:
        socket.send_text(json.dumps({"type": "mask", "index": 9, "png": ""}))
        m = next_text(socket)
        assert m["type"] == "error" and "mask" in m["message"]


def test_a_full_queue_drops_its_oldest_frame(hub):
    hub.queues[1] = asyncio.Queue(maxsize=QUEUE_LIMIT)
    for k in range(50):
        hub.broadcast(EncodedFrame(k, 0, FRAME, None, "w"))
    assert hub.queues[1].qsize() == QUEUE_LIMIT and hub.stats.dropped == 50 - QUEUE_LIMIT
    assert [hub.queues[1].get_nowait()[0]["index"] for _ in range(2)] == [48, 49]


@contextmanager
def stalled_socket(host: str, port: int) -> Iterator[None]:
    """A WebSocket opened by hand that never reads a byte (a small receive buffer)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        sock.sendall(f"GET /paint HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        yield


def test_a_browser_that_stops_reading_does_not_grow_the_server(hub, tmp_path):
    """A socket that is never read: the frames pile up in the kernel's buffers at most, then
    in a queue of `QUEUE_LIMIT`; the rest are dropped."""
    app = make_app(tmp_path / "out", routes=paint_routes(hub), lifespan=paint_lifespan(hub))
    with start_server(app) as server, stalled_socket(server.host, server.port):
        deadline = time.monotonic() + 20
        while hub.stats.dropped < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hub.stats.dropped >= 200
        assert all(q.qsize() <= QUEUE_LIMIT for q in hub.queues.values())
        # what reached the socket is what the kernel buffers hold, not the frames made
        stats = hub.stats
        assert stats.sent * len(FRAME) < 16 * 2**20  # at most what the kernel buffers hold
        assert stats.frames - stats.sent - stats.dropped <= QUEUE_LIMIT + 1  # queued or sending


def test_a_background_photo_is_painted_over_and_exported(hub, tmp_path):
    app = make_app(tmp_path / "out", routes=paint_routes(hub), lifespan=paint_lifespan(hub))
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(buffer, "PNG")
    with TestClient(app) as client:
        answer = client.post("/api/background", content=buffer.getvalue())
        assert answer.status_code == 200 and answer.json()["photo"].startswith("data:image/png")
        assert client.post("/api/background", content=b"not an image").status_code == 400
        path = client.post("/api/export").json()["path"]
    assert hub.painting.photo is not None and hub.painting.photo.shape == (64, 64, 3)
    back = read_painting(path)
    assert back.photo is not None and np.array_equal(back.photo, hub.painting.photo)
    assert plan_canvas(load_canvas_config(path)).background is not None
