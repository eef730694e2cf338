"""`hypermosaic paint`: paint regions with prompts in a browser and watch the canvas follow.

The steps: the painting is read from a canvas config (``--config``) or started blank, the
model is located (a one-line error before any work), the output folder is locked, the Dask
pool is opened and one worker is chosen to hold the model and the stream (`paint_app`
registers the session's `WorkerState`; every frame task goes to that worker), and the server
runs until Ctrl-C. ``POST /api/export`` writes the painting into the output folder as a
canvas config that `hypermosaic canvas` renders.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed import Client
from starlette.applications import Starlette

from hypermosaic import registry
from hypermosaic.canvas import CanvasPlan
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.executor import cpu_count, open_client, release_states
from hypermosaic.paint.app import Advance, PaintHub, paint_lifespan, paint_routes
from hypermosaic.paint.painting import Brush, Painting, read_painting
from hypermosaic.paint.tasks import EncodedFrame, ModelKey, advance_task, paint_state
from hypermosaic.publish import make_app, run_server
from hypermosaic.store import folder_lock

__all__ = ["blank_painting", "paint", "paint_app"]

PALETTE = (("a red apple", "#e6194b"), ("a blue sky with clouds", "#4363d8"),
           ("green grass", "#3cb44b"))


def blank_painting(model: str, width: int = 512, height: int = 512, steps: int = 4,
                   seed: int = 0) -> Painting:
    """A new painting: the default palette with empty masks over a background prompt."""
    for key, side in (("--width", width), ("--height", height)):
        if side < 8 or side % 8:
            raise InputError(f"{key}: {side} is not a positive multiple of 8")
    empty = Painting(width, height, model).empty_mask()
    return Painting(width, height, model, seed=seed, steps=steps,
                    brushes=tuple(Brush(p, c, mask=empty) for p, c in PALETTE))


def _dask_advance(client: Client, state: str, key: ModelKey, worker: str) -> Advance:
    """Frames on ``worker`` (the one that holds the session's stream), one task at a time."""
    async def advance(plan: CanvasPlan, start: int, count: int) -> list[EncodedFrame]:
        future = client.submit(advance_task, state, key, plan, start, count, pure=False,
                               workers=[worker], allow_other_workers=False)
        frames: list[EncodedFrame] = await asyncio.to_thread(future.result)
        return frames

    return advance


@contextmanager
def paint_app(painting: Painting, out: Path, client: Client, *, device: str = "auto",
              dtype: str = "auto") -> Iterator[Starlette]:
    """The paint server's app for ``painting`` on ``client``'s pool, exports into ``out``;
    the workers' state (the model, the stream) is released when the block ends."""
    out = Path(out)
    work = out / ".paint-session"
    work.mkdir(parents=True, exist_ok=True)
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise InputError("--workers: the pool has no worker")
    state = f"hypermosaic-paint-{uuid.uuid4().hex[:12]}"
    key: ModelKey = (painting.model, device, dtype)
    threads = max(1, cpu_count() // max(1, len(workers)))
    client.register_plugin(paint_state(state, threads, key))
    try:
        hub = PaintHub(painting, work, out, _dask_advance(client, state, key, workers[0]))
        yield make_app(out, routes=paint_routes(hub), lifespan=paint_lifespan(hub))
    finally:
        release_states(client, state)


def paint(
    model: str | None = None,
    *,
    config: Path | str | None = None,
    out: Path | str = "out",
    width: int = 512,
    height: int = 512,
    steps: int = 4,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    workers: int | None = None,
    scheduler_address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the paint page for a blank painting of ``model`` (or the painting of ``config``,
    its model replaced by ``model`` when given) until interrupted.

    Raises `InputError` before any work for a bad config, a model that cannot be found, a
    folder another run holds, or an address the server cannot listen on.
    """
    if config is not None:
        painting = read_painting(Path(config), model)
    elif model is None:
        raise InputError("--model: give the model to paint with")
    else:
        painting = blank_painting(model, width, height, steps, seed)
    registry.locate_model(painting.model, None, key="--model")
    out = Path(out)
    try:
        with folder_lock(out), open_client(workers, scheduler_address, gpu=True) as client, \
                paint_app(painting, out, client, device=device, dtype=dtype) as app:
            run_server(app, host=host, port=port, verbose=verbose, on_ready=on_ready)
    except KeyboardInterrupt:
        raise Interrupted(f"exports are kept in {out}") from None
