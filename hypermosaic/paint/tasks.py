"""Paint task code that runs on the Dask worker holding the model.

The worker keeps one `WorkerState` per paint session: its model cache holds the pipeline
(loaded when the state is registered) and the session's stream batch (`registry.stream_batch`),
whose ring of latents lives on between tasks. Each task lets ``count`` frames in with the
inputs of that moment and returns the frames that came out, encoded here on the worker (JPEG
for the page, the last one also as PNG), so the server's event loop never encodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributed import get_worker

from hypermosaic import registry
from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.errors import InputError
from hypermosaic.executor import WorkerState, worker_state
from hypermosaic.images import encode

__all__ = ["EncodedFrame", "ModelKey", "advance_task", "paint_state"]

ModelKey = tuple[str, str, str]
"""``(model, device, dtype)`` of the paint pipeline."""


@dataclass(frozen=True)
class EncodedFrame:
    """A frame as the page gets it: its index and seed, JPEG bytes, the lossless PNG of the
    last frame of a task (else None), and the worker that made it."""

    index: int
    seed: int
    jpeg: bytes
    png: bytes | None
    worker: str


def paint_state(name: str, torch_threads: int, key: ModelKey) -> WorkerState:
    """The worker state ``name`` of a paint session, loading the pipeline of ``key``."""
    return WorkerState(name, torch_threads=torch_threads, data={"key": key},
                       preload=lambda state: _pipeline(state, key))


def _pipeline(state: WorkerState, key: ModelKey) -> Any:
    def load() -> Any:
        try:
            return registry.load_canvas_pipeline(*key)
        except InputError as exc:
            raise InputError(str(exc).removeprefix("diffusion.")) from None

    return state.models.get(("pipeline", key), load)


def advance_task(state_name: str, key: ModelKey, plan: CanvasPlan, start: int, count: int,
                 quality: int = 85) -> list[EncodedFrame]:
    """Let frames ``start`` to ``start + count - 1`` enter the session's stream with ``plan``
    (each with the plan's seed) and return the frames that finished, encoded."""
    state = worker_state(state_name)
    pipe = _pipeline(state, key)
    stream = state.models.get(("stream", key), lambda: registry.stream_batch(pipe))
    address = get_worker().address
    done = []
    for index in range(start, start + count):
        frame = stream.advance(plan, index, plan.seed)
        if frame is not None:
            done.append(frame)
    return [EncodedFrame(f.index, f.seed, encode(f.image, "jpeg", quality),
                         encode(f.image, "png") if i == len(done) - 1 else None, address)
            for i, f in enumerate(done)]
