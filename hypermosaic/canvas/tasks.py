"""Canvas task code that runs on Dask workers.

Each worker keeps one `hypermosaic.executor.WorkerState` for the canvas run; its model cache
loads each distinct Stable Diffusion model (by model, device and dtype) and each ESRGAN model
once, on first use, through `hypermosaic.registry`. Denoising steps are reported as events.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hypermosaic import registry
from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.executor import WorkerState, worker_state
from hypermosaic.progress import emitter

__all__ = ["ModelKey", "STATE_NAME", "canvas_state", "render_task"]

STATE_NAME = "hypermosaic-canvas"
ModelKey = tuple[str, str, str]
"""``(model, device, dtype)`` of a canvas pipeline."""


def canvas_state(torch_threads: int) -> WorkerState:
    """The worker state of a canvas run (its models load on first use)."""
    return WorkerState(STATE_NAME, torch_threads=torch_threads)


def _pipeline(state: WorkerState, key: ModelKey) -> Any:
    return state.models.get(("pipeline", key), lambda: registry.load_canvas_pipeline(*key))


def render_task(key: ModelKey, plan: CanvasPlan, upscale_model: str | None, topic: str,
                index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one canvas with the pipeline of ``key`` on this worker; with ``upscale_model``
    also its ESRGAN enlargement, on the pipeline's device. Each finished step is emitted as
    ``[index, step, steps]`` on ``topic``."""
    state = worker_state(STATE_NAME)
    pipe = _pipeline(state, key)

    emit = emitter(topic)
    image = registry.render_canvas(pipe, plan, lambda step, steps: emit([index, step, steps]))
    if upscale_model is None:
        return image, None
    device = str(pipe.device)
    upscaler = state.models.get(("upscaler", upscale_model, device), lambda: (
        registry.load_upscaler(upscale_model, device=device)))
    return image, registry.upscale_array(upscaler, image)
