"""Everything a build checks before it writes anything, and what its workers are given.

`check_inputs` reads the primary image, the recolor source folder, the image prompts' style
images, the model's location and LoRAs, the image prompts' vision models (against the model's text
encoder) and the init upscalers' weights, so that bad input stops a build with one line before
any node is written; `engine_spec` and `worker_threads` say what every worker loads (style
images included: workers never read them from disk) and with how many threads.
"""

from __future__ import annotations

import numpy as np

from hypermosaic import registry
from hypermosaic.build.config import BuildConfig
from hypermosaic.build.tasks import EngineSpec
from hypermosaic.controlnet import controlnet_setting
from hypermosaic.errors import InputError
from hypermosaic.executor import cpu_count
from hypermosaic.identity import BICUBIC
from hypermosaic.image_prompts import IP_ADAPTER, TILE, ImagePromptConfig
from hypermosaic.images import encode, load_image, resize, square_crop
from hypermosaic.lora import lora_settings

__all__ = [
    "check_image_prompts",
    "check_init_upscalers",
    "check_inputs",
    "engine_spec",
    "image_prompts",
    "style_images",
    "worker_threads",
]


def check_inputs(config: BuildConfig) -> np.ndarray | None:
    """`InputError` for a bad primary image, recolor source folder, style image, model, LoRA,
    vision model or init upscaler; returns the primary image at ``size`` (None when it is generated
    from a prompt)."""
    primary = None
    if config.primary.image is not None:
        primary = resize(square_crop(load_image(config.primary.image)), config.size,
                         config.size)
    style_images(config)
    if config.engine == "recolor" and config.recolor.source not in ("primary", "parent"):
        from hypermosaic.build.recolor import load_sources

        load_sources(config.recolor.source)
    if config.engine == "diffusion":
        assert config.diffusion.model is not None  # the schema requires it
        source = registry.locate_model(config.diffusion.model, config.diffusion.config,
                                       key="diffusion.model")
        registry.check_loras(source, lora_settings(config.diffusion.lora), "diffusion.lora")
        if config.diffusion.controlnet is not None:
            registry.check_controlnet(source, config.diffusion.controlnet.model,
                                      "diffusion.controlnet.model")
        check_image_prompts(config, source)
    check_init_upscalers(config)
    return primary


def image_prompts(config: BuildConfig) -> list[tuple[str, ImagePromptConfig]]:
    """The image prompts of every depth a build or a deeper zoom uses, with the table that
    sets each (``image_prompt`` or ``levels.N.image_prompt``), once each."""
    found: dict[str, ImagePromptConfig] = {}
    for depth in sorted({*range(1, max(config.depth, 1) + 1), *config.levels}):
        prompt = config.image_prompt_at(depth)
        if prompt is not None:
            found.setdefault(config.image_prompt_key(depth), prompt)
    return list(found.items())


def style_images(config: BuildConfig) -> dict[str, np.ndarray]:
    """Each image prompt's style image by path (its key in the jobs), cropped to its central
    square and resized to ``size`` as the primary is; `InputError` naming the key."""
    images: dict[str, np.ndarray] = {}
    for key, prompt in image_prompts(config):
        if prompt.image is None or prompt.image == TILE or prompt.image in images:
            continue
        try:
            image = load_image(prompt.image)
        except InputError as exc:
            raise InputError(f"{key}.image: {exc}") from None
        images[prompt.image] = resize(square_crop(image), config.size, config.size)
    return images


def check_image_prompts(config: BuildConfig, source: object) -> None:
    """`InputError` naming the key for a vision model that is missing or whose projection does
    not fit the text encoder of the located model ``source``, or a ``space`` it lacks; for
    ``method = "ip_adapter"``, IP-Adapter weights that are missing or do not fit."""
    for key, prompt in image_prompts(config):
        try:
            if prompt.method == IP_ADAPTER:
                registry.check_ip_adapter(source, prompt.ip_adapter, prompt.ip_adapter_subfolder,
                                          prompt.ip_adapter_weight_name, prompt.vision_model,
                                          prompt.vision_config)
            else:
                registry.check_vision_model(source, prompt.vision_model, prompt.vision_config,
                                            prompt.space)
        except InputError as exc:
            message = str(exc)
            if message.startswith("image_prompt."):
                message = key + message.removeprefix("image_prompt")
            raise InputError(message) from None


def check_init_upscalers(config: BuildConfig) -> None:
    """`InputError` naming the key for an ESRGAN ``init_upscale`` that cannot load (a damaged
    weights file, registry weights missing) or would never run: a scale of 1, or a tile crop
    too large for even one pass (``size / grid * scale > size``, leaving it all to bicubic)."""
    scales: dict[str, int] = {}
    for depth in range(1, config.depth + 1):
        name = config.level(depth).init_upscale
        if name == BICUBIC:
            continue
        key = config.init_upscale_key(depth)
        if name not in scales:  # each model is read once, however many levels use it
            try:
                scales[name] = registry.describe_upscaler(name)[0]
            except InputError as exc:
                raise InputError(f"{key}: {exc}") from None
        crop = config.size // config.grids[depth - 1]
        if scales[name] < 2 or crop * scales[name] > config.size:
            raise InputError(
                f"{key}: {name} (scale {scales[name]}) cannot enlarge the {crop} px tiles of "
                f"level {depth} within size {config.size}; use bicubic there, or a finer grid"
            )


def worker_threads(config: BuildConfig) -> int:
    """Torch threads of every worker that runs torch (and of `regenerate_node`): on the CPU
    the thread count decides the order of float sums, so pixels depend on it."""
    return cpu_count() if config.uses_torch else 0


def engine_spec(config: BuildConfig) -> EngineSpec:
    """The engine and settings every worker loads (the diffusion engine's style images as
    lossless PNG); init upscalers on ``diffusion``'s device and dtype (the dtype is in the
    fingerprints)."""
    settings = (config.recolor if config.engine == "recolor" else config.diffusion).model_dump()
    if config.engine == "diffusion":  # hashable: the engine spec keys the worker's cache
        settings["lora"] = lora_settings(config.diffusion.lora)
        settings["controlnet"] = controlnet_setting(config.diffusion.controlnet)
    styles = style_images(config) if config.engine == "diffusion" else {}
    if styles:  # the pixels travel once per worker, in its state
        settings["style_images"] = tuple((path, encode(image)) for path, image in styles.items())
    return EngineSpec(config.engine, tuple(settings.items()), config.diffusion.device,
                      config.diffusion.dtype)
