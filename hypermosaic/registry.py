"""The one seam between the torch-free core and `hypermosaic.pipelines`.

The core never imports torch, diffusers or the pipelines: it asks this registry for an engine,
an upscaler, a canvas runner or a model check by name, and the registry imports the torch side
the first time one is needed (`COMPONENTS` maps each name to where it lives). A machine without
torch can plan, validate, build with the recolor engine and publish; asking for a torch
component there raises `InputError` naming what is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hypermosaic.errors import InputError
from hypermosaic.lora import LoraSetting

__all__ = [
    "COMPONENTS",
    "Upscaler",
    "apply_loras",
    "check_loras",
    "check_controlnet",
    "load_controlnet",
    "check_ip_adapter",
    "check_vision_model",
    "component",
    "cuda_device_count",
    "describe_upscaler",
    "diffusion_engine",
    "enlarge",
    "inpaint_engine",
    "inpaint_job",
    "load_canvas_pipeline",
    "load_upscaler",
    "locate_model",
    "refine_band",
    "refine_geometry",
    "native_size",
    "render_canvas",
    "set_torch_threads",
    "stream_batch",
    "torch_threads",
    "upscale_array",
    "upscale_bands",
]

COMPONENTS: dict[str, str] = {
    "engine.diffusion": "hypermosaic.pipelines.img2img:DiffusionEngine",
    "engine.inpaint": "hypermosaic.pipelines.inpaint:InpaintEngine",
    "inpaint.job": "hypermosaic.pipelines.inpaint:InpaintJob",
    "model.locate": "hypermosaic.pipelines.models:locate_model",
    "model.native_size": "hypermosaic.pipelines.models:native_size",
    "lora.check": "hypermosaic.pipelines.lora:check_loras",
    "lora.apply": "hypermosaic.pipelines.lora:apply_loras",
    "controlnet.check": "hypermosaic.pipelines.controlnet:check_controlnet",
    "controlnet.load": "hypermosaic.pipelines.controlnet:load_controlnet",
    "image_prompt.check": "hypermosaic.pipelines.image_prompt.checks:check_vision_model",
    "image_prompt.ip_adapter": "hypermosaic.pipelines.image_prompt.ip_adapter:check_ip_adapter",
    "canvas.pipeline": "hypermosaic.pipelines.models:load_canvas_pipeline",
    "canvas.render": "hypermosaic.pipelines.canvas:render_canvas",
    "stream.batch": "hypermosaic.pipelines.stream:StreamBatch",
    "refine.band": "hypermosaic.pipelines.refine:refine_band",
    "refine.geometry": "hypermosaic.pipelines.refine:geometry",
    "upscaler.load": "hypermosaic.pipelines.esrgan:load_upscaler",
    "upscaler.describe": "hypermosaic.pipelines.esrgan:describe_upscaler",
    "upscaler.bands": "hypermosaic.pipelines.esrgan:upscale_bands",
    "upscaler.array": "hypermosaic.pipelines.esrgan:upscale_array",
    "upscaler.enlarge": "hypermosaic.pipelines.esrgan:enlarge",
    "runtime.torch_threads": "hypermosaic.pipelines.runtime:torch_threads",
    "runtime.set_torch_threads": "hypermosaic.pipelines.runtime:set_torch_threads",
    "runtime.cuda_device_count": "hypermosaic.pipelines.runtime:cuda_device_count",
}


class Upscaler(Protocol):
    """What the core reads of a loaded ESRGAN upscaler (`hypermosaic.pipelines.esrgan`)."""

    scale: int
    tile: int
    name: str


def component(name: str) -> Any:
    """The object registered as ``name`` in `COMPONENTS`, its module imported on first use."""
    module, _, attribute = COMPONENTS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "diffusers", "transformers"):
            raise InputError(f"{name}: needs {exc.name}, which is not installed") from None
        raise


def diffusion_engine(settings: dict[str, Any]) -> Any:
    """The Stable Diffusion tile engine (`hypermosaic.build.engines.Engine`)."""
    return component("engine.diffusion")(**settings)


def inpaint_engine(settings: dict[str, Any]) -> Any:
    """The inpainting engine (`hypermosaic.pipelines.inpaint.InpaintEngine`): candidates of
    a masked image by seed, composited so that outside the mask is the input's."""
    return component("engine.inpaint")(**settings)


def inpaint_job(**fields: Any) -> Any:
    """An `hypermosaic.pipelines.inpaint.InpaintJob` of ``fields`` (image, mask, prompt, ...)."""
    return component("inpaint.job")(**fields)


def locate_model(model: str, config: str | None = None, *, key: str) -> Any:
    """Where a diffusion model's files are, checked without loading it; `InputError` naming
    ``key``."""
    return component("model.locate")(model, config, key=key)


def native_size(source: Any) -> int | None:
    """The native image side of a located model, from its configs (no weights)."""
    result: int | None = component("model.native_size")(source)
    return result


def check_loras(source: Any, loras: Sequence[LoraSetting], key: str) -> None:
    """`InputError` naming ``key.N.path`` unless each LoRA fits the located model ``source``
    (checked on weightless copies of its UNet and text encoders)."""
    component("lora.check")(source, loras, key)


def apply_loras(pipe: Any, loras: Sequence[LoraSetting], key: str) -> None:
    """Load ``loras`` into a loaded pipeline, once (a canvas worker's); errors name ``key``."""
    component("lora.apply")(pipe, loras, key)


def check_controlnet(source: Any, model: str, key: str) -> None:
    """`InputError` naming ``key`` unless ControlNet ``model`` is found and fits the located
    model ``source`` (from configs alone)."""
    component("controlnet.check")(source, model, key)


def load_controlnet(model: str, device: Any, dtype: Any, key: str) -> Any:
    """ControlNet ``model`` on a torch ``device`` in a torch ``dtype`` (a canvas worker's)."""
    return component("controlnet.load")(model, device, dtype, key)


def check_vision_model(source: Any, vision_model: str, vision_config: str | None,
                       space: str) -> str:
    """The space image prompts work in with a located model's text encoder (``auto``
    resolved), from configs alone; `InputError` naming the ``image_prompt`` key for a missing
    vision model, a projection that does not fit, or ``projected`` without a text projection."""
    resolved: str = component("image_prompt.check")(source, vision_model, vision_config, space)
    return resolved


def check_ip_adapter(source: Any, ip_adapter: str | None, subfolder: str,
                     weight_name: str | None, vision_model: str, vision_config: str | None
                     ) -> Path:
    """The ``.safetensors`` file of an ``ip_adapter`` image prompt, checked against a located
    model's UNet and the vision model from headers and configs alone; `InputError` naming the
    ``image_prompt`` key for weights that are missing, pickled or do not fit."""
    file: Path = component("image_prompt.ip_adapter")(source, ip_adapter, subfolder,
                                                      weight_name, vision_model, vision_config)
    return file


def load_canvas_pipeline(model: str, device: str, dtype: str) -> Any:
    """A Stable Diffusion pipeline for canvases on ``device`` in ``dtype`` (``auto`` allowed)."""
    return component("canvas.pipeline")(model, device, dtype)


def render_canvas(pipe: Any, plan: Any, callback: Callable[[int, int], None] | None,
                  controlnet: Any = None) -> np.ndarray:
    """Mixture-of-diffusers denoising of a `hypermosaic.canvas.plan.CanvasPlan` with ``pipe``
    (and the ControlNet its plan names, loaded: ``controlnet``)."""
    image: np.ndarray = component("canvas.render")(pipe, plan, callback, controlnet)
    return image


def stream_batch(pipe: Any) -> Any:
    """A multi-prompt stream batch on a loaded canvas pipeline (`StreamBatch`: ``advance(plan,
    index, seed)`` lets a frame in and returns the one that finished, or None)."""
    return component("stream.batch")(pipe)


def refine_band(pipe: Any, pixels: np.ndarray, band: Any, plan: Any, refine: Any,
                previous: np.ndarray | None, callback: Callable[[int], None] | None = None,
                controlnet: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """One band of an upscale's detail pass (`hypermosaic.upscale.strips.Band`) refined with
    ``pipe`` (and ``refine.controlnet``'s model, loaded: ``controlnet``): its final latents
    ``(C, h, w)`` and pixels ``(h * f, w * f, 3)`` uint8."""
    result = component("refine.band")(pipe, pixels, band, plan, refine, previous,
                                      callback=callback, controlnet=controlnet)
    return result.latents, result.pixels


def refine_geometry(pipe: Any) -> tuple[int, int]:
    """``(VAE factor, native side in pixels)`` of a loaded diffusion pipeline."""
    f, native = component("refine.geometry")(pipe)
    return int(f), int(native)


def load_upscaler(name: str, *, device: str = "auto", dtype: str = "auto",
                  tile: int | None = None, init: bool = False) -> Upscaler:
    """An ESRGAN model or weights file on ``device``. ``auto`` dtype is the upscaler's own rule
    (bfloat16 on a CPU with native support), or with ``init`` the diffusion engine's (float32 on
    any CPU: a build's tile inits do not change between machines)."""
    upscaler: Upscaler = component("upscaler.load")(name, device=device, dtype=dtype, tile=tile,
                                                    init=init)
    return upscaler


def describe_upscaler(name: str, *, device: str = "auto",
                      on_weights: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """``(scale, default tile side on device)`` of an ESRGAN model, its weights checked
    without running it; `InputError` if they are missing or damaged. With ``on_weights``,
    registry weights not converted yet are converted now, reported as ``(done, total)``."""
    scale, tile = component("upscaler.describe")(name, device=device, on_weights=on_weights)
    return int(scale), int(tile)


def upscale_bands(read_rows: Callable[[int, int], np.ndarray], height: int, width: int,
                  upscaler: Upscaler, tile: int | None, overlap: int,
                  on_tile: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
    """The upscaled image as bands of finished output rows (tiled, seamless, streaming)."""
    bands: Iterator[np.ndarray] = component("upscaler.bands")(
        read_rows, height, width, upscaler, tile, overlap, on_tile=on_tile)
    return bands


def upscale_array(upscaler: Upscaler, image: np.ndarray, wrap: str = "none") -> np.ndarray:
    """A whole RGB uint8 array upscaled, tiled and seamless (round the edges ``wrap`` joins)."""
    result: np.ndarray = component("upscaler.array")(upscaler, image, wrap=wrap)
    return result


def enlarge(upscaler: Upscaler, image: np.ndarray, size: int) -> np.ndarray:
    """A square crop enlarged to ``size`` by the model as often as it fits, then resized."""
    result: np.ndarray = component("upscaler.enlarge")(upscaler, image, size)
    return result


def torch_threads(count: int) -> AbstractContextManager[None]:
    """Run a block with ``count`` torch intra-op threads (0: leave them as they are)."""
    if not count:
        from contextlib import nullcontext

        return nullcontext()
    manager: AbstractContextManager[None] = component("runtime.torch_threads")(count)
    return manager


def set_torch_threads(count: int) -> None:
    """Give torch ``count`` intra-op threads in this process (a worker's, for good)."""
    component("runtime.set_torch_threads")(count)


def cuda_device_count() -> int:
    """CUDA GPUs torch can see; 0 without torch or CUDA."""
    try:
        return int(component("runtime.cuda_device_count")())
    except (InputError, ImportError, OSError):  # no torch, or a broken install: the CPU
        return 0
