"""Canvas task code that runs on Dask workers.

Each worker keeps one `hypermosaic.executor.WorkerState` per canvas run (named for the run, so
two runs on one cluster keep apart); its model cache loads each distinct Stable Diffusion model
(by model, device, dtype and LoRAs) when the state is registered (a model that cannot load fails
there, once) and each ESRGAN model on first use, through `hypermosaic.registry`. Denoising
steps are reported as events.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hypermosaic import registry
from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.errors import InputError
from hypermosaic.executor import WorkerState, worker_state
from hypermosaic.lora import LoraSetting
from hypermosaic.progress import emitter

__all__ = ["ModelKey", "canvas_state", "render_task"]

ModelKey = tuple[str, str, str, tuple[LoraSetting, ...]]
"""``(model, device, dtype, LoRAs)`` of a canvas pipeline."""


def canvas_state(name: str, torch_threads: int, keys: list[ModelKey]) -> WorkerState:
    """The worker state ``name`` of a canvas run, loading the pipelines of ``keys``."""
    return WorkerState(name, torch_threads=torch_threads, data={"keys": keys},
                       preload=_load_pipelines)


def _load_pipelines(state: WorkerState) -> None:
    for key in state.data["keys"]:
        _pipeline(state, key)


def _pipeline(state: WorkerState, key: ModelKey) -> Any:
    return state.models.get(("pipeline", key), lambda: _load(key))


def _load(key: ModelKey) -> Any:
    """The pipeline of ``key``; its loader's errors name the canvas keys (``device``), not
    the build's (``diffusion.device``)."""
    try:
        pipe = registry.load_canvas_pipeline(*key[:3])
        registry.apply_loras(pipe, key[3], "lora")
        return pipe
    except InputError as exc:
        raise InputError(str(exc).removeprefix("diffusion.")) from None


def render_task(state_name: str, key: ModelKey, plan: CanvasPlan, upscale_model: str | None,
                topic: str, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one canvas with the pipeline of ``key`` on this worker; with ``upscale_model``
    also its ESRGAN enlargement, on the pipeline's device. Each finished step is emitted as
    ``[index, step, steps]`` on ``topic``."""
    state = worker_state(state_name)
    pipe = _pipeline(state, key)

    emit = emitter(topic)
    controlnet = None
    if plan.control is not None:
        model = plan.control.model
        controlnet = state.models.get(
            ("controlnet", model, str(pipe.device), str(pipe.dtype)),
            lambda: registry.load_controlnet(model, pipe.device, pipe.dtype, "controlnet.model"))
    image = registry.render_canvas(pipe, plan, lambda step, steps: emit([index, step, steps]),
                                   controlnet)
    if upscale_model is None:
        return image, None
    device = str(pipe.device)
    upscaler = state.models.get(("upscaler", upscale_model, device), lambda: (
        registry.load_upscaler(upscale_model, device=device)))
    return image, registry.upscale_array(upscaler, image, wrap=plan.wrap)
