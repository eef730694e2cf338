"""Fingerprints: hashes of everything that decides the pixels of each depth of a build.

A stored build resumes only where its fingerprints equal the config's (`Store.check_compatible`).
Depth ``d``'s entry covers the global settings and the settings of depths 1..d, so a change to
a level invalidates that level and every deeper one, while a deeper build of an unchanged config
resumes (depth and focus only decide *which* nodes exist). Files count by content: the primary
image by a SHA-256 of its bytes, a single-file model by its size and a hash of its first and
last MiB (`hypermosaic.identity`), and so does each LoRA file, with its scale. Reading them is
the only I/O here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hypermosaic.build.config import BuildConfig
from hypermosaic.controlnet import controlnet_identity
from hypermosaic.identity import BICUBIC, ESRGAN_MODELS, file_digest, model_file_digest
from hypermosaic.image_prompts import IP_ADAPTER, IP_ADAPTER_KEYS, TILE, ImagePromptConfig
from hypermosaic.lora import lora_identity

__all__ = ["fingerprints"]


def fingerprints(config: BuildConfig, depth: int | None = None) -> dict[str, str]:
    """The fingerprint of every depth of ``config``, ``"0"`` to ``str(depth)`` (default: the
    config's depth; nodes made live go deeper).

    The diffusion ``batch_size`` counts, because batch-mates change a tile's pixels at the
    level of float rounding; an ESRGAN weights file named by ``init_upscale`` counts like a
    single-file model. Raises `InputError` naming ``primary.image`` (or the model's key) if a
    file cannot be read.
    """
    common: dict[str, Any] = {
        "seed": config.seed,
        "size": config.size,
        "engine": config.engine,
        "format": config.format,
        "quality": config.quality if config.format != "png" else None,
        "primary": config.primary.model_dump(mode="json", exclude={"image"}),
        "primary_image": (None if config.primary.image is None
                          else file_digest(config.primary.image, "primary.image")),
        "engine_settings": (
            config.recolor.model_dump(mode="json")
            if config.engine == "recolor"
            else config.diffusion.model_dump(mode="json", exclude={"device", "lora",
                                                                     "controlnet"})
        ),
        "model_file": (model_file_digest(config.diffusion.model, "diffusion.model")
                       if config.engine == "diffusion" else None),
    }
    if config.engine == "diffusion" and config.diffusion.lora:  # absent: older prints hold
        common["lora"] = lora_identity(config.diffusion.lora, "diffusion.lora")
    if config.engine == "diffusion" and config.diffusion.controlnet is not None:
        common["controlnet"] = controlnet_identity(config.diffusion.controlnet,
                                                   "diffusion.controlnet")
    prints = {"0": _digest(common)}
    chain = [common]
    for level in range(1, (config.depth if depth is None else depth) + 1):
        chain.append({"grid": config.grid_at(level - 1), **_level_print(config, level)})
        prints[str(level)] = _digest(chain)
    return prints


def _level_print(config: BuildConfig, depth: int) -> dict[str, Any]:
    """A depth's settings as fingerprinted: the default bicubic init and an absent image
    prompt are left out, and so are the ``ip_adapter*`` keys of another method (prints of
    builds made before they existed stay valid); a model comes
    with the dtype it runs in (``diffusion.dtype``), a file counts by content."""
    settings = config.level(depth).model_dump()
    upscaler = settings.pop("init_upscale")
    if upscaler != BICUBIC:
        settings["init_upscale"] = (upscaler if upscaler in ESRGAN_MODELS else
                                    model_file_digest(upscaler, config.init_upscale_key(depth)))
        settings["init_dtype"] = config.diffusion.dtype
    prompt = config.image_prompt_at(depth)
    if prompt is not None:
        key = config.image_prompt_key(depth)
        image = prompt.image or TILE
        settings["image_prompt"] = {
            **prompt.model_dump(mode="json", exclude=None if prompt.method == IP_ADAPTER
                                else set(IP_ADAPTER_KEYS)),
            "image": image if image == TILE else file_digest(Path(image), f"{key}.image"),
            "vision_file": model_file_digest(prompt.vision_model, f"{key}.vision_model"),
        }
        if prompt.method == IP_ADAPTER:
            settings["image_prompt"]["ip_adapter_file"] = _ip_adapter_digest(prompt, key)
    return settings


def _ip_adapter_digest(prompt: ImagePromptConfig, key: str) -> str | None:
    """The IP-Adapter file's `model_file_digest` (a folder's ``subfolder/weight_name``); None
    for a Hugging Face id, which counts by name."""
    weights = Path(prompt.ip_adapter or "")
    if weights.is_dir() and prompt.ip_adapter_weight_name:
        weights = weights / prompt.ip_adapter_subfolder / prompt.ip_adapter_weight_name
    return model_file_digest(str(weights), f"{key}.ip_adapter")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
