"""Canvas jobs: every seed of every config planned and checked before any work starts.

A job is one canvas: a config and the pure plan of one of its seeds
(`hypermosaic.canvas.plan`). Planning checks what only the model can tell, without loading it:
that the model is there, that the brushes' sliding windows leave no gaps at its native size,
that the CLIP vision model of each image prompt is there and fits the model's text encoder,
and that the ESRGAN weights of an ``upscale`` are there and readable. Every message starts with
the config's file (`CanvasConfig.source`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypermosaic import registry
from hypermosaic.canvas.config import CanvasConfig, CanvasWarning
from hypermosaic.canvas.grid import seed_notes
from hypermosaic.canvas.plan import CanvasPlan, check_window_stride, plan_canvas
from hypermosaic.canvas.regions import TextRegion
from hypermosaic.canvas.wrap import check_wrap_window
from hypermosaic.errors import InputError
from hypermosaic.lora import lora_settings

__all__ = ["CanvasJob", "check_image_prompts", "check_windows", "plan_jobs"]


@dataclass(frozen=True)
class CanvasJob:
    """One canvas to render: a config and the plan of one of its seeds."""

    config: CanvasConfig
    plan: CanvasPlan

    @property
    def stem(self) -> str:
        """The output file name without suffix: ``<config name>-<seed>``."""
        return f"{self.config.name}-{self.plan.seed}"

    @property
    def key(self) -> str:
        """A Dask key derived from everything that decides the task's result."""
        what = repr((self.plan, self.config.model, self.config.device, self.config.dtype,
                     self.config.upscale, self.config.upscale_model, self.config.lora))
        return f"canvas-{self.stem}-{hashlib.blake2b(what.encode(), digest_size=8).hexdigest()}"


def plan_jobs(configs: Sequence[CanvasConfig]) -> list[CanvasJob]:
    """Plan every seed of every config; `InputError` before any work for a bad input.

    Checks that each config names a model that is there (located without loading it) and LoRAs
    that fit it, that its sliding windows leave no gaps at the model's native size, that its
    image prompts' vision models fit it (`check_image_prompts`), that the ESRGAN model of an
    ``upscale`` can load, and that no two canvases would write the same file. Seeds that
    change nothing are reported as `CanvasWarning`.
    """
    jobs: list[CanvasJob] = []
    natives: dict[str, int | None] = {}
    sources: dict[str, Any] = {}
    for config in configs:
        if config.model is None:
            raise InputError(f"{config.source}: model: no model given (set model in the config "
                             "or pass --model)")
        check_memory(config)
        if config.upscale > 1:
            try:
                registry.describe_upscaler(config.upscale_model)
            except InputError as exc:
                raise InputError(f"{config.source}: upscale_model: {exc}") from None
        for note in seed_notes(config):
            warnings.warn(f"{config.source}: {note}", CanvasWarning, stacklevel=2)
        jobs.extend(CanvasJob(config, plan_canvas(config, seed)) for seed in config.seed)
    for config in configs:
        assert config.model is not None
        if config.model not in natives:
            try:
                sources[config.model] = registry.locate_model(config.model, key="model")
                natives[config.model] = registry.native_size(sources[config.model])
            except InputError as exc:
                raise InputError(f"{config.source}: {exc}") from None
        try:
            registry.check_loras(sources[config.model], lora_settings(config.lora), "lora")
            if config.controlnet is not None:
                registry.check_controlnet(sources[config.model], config.controlnet.model,
                                          "controlnet.model")
        except InputError as exc:
            raise InputError(f"{config.source}: {exc}") from None
        check_windows(config, natives[config.model])
        check_image_prompts(config, sources[config.model])
    seen: dict[Path, str] = {}
    for job in jobs:
        target = job.config.out / job.stem
        if target in seen:
            raise InputError(f"{job.config.source}: two canvases would write {target}.*; give "
                             "the configs different names or outputs")
        seen[target] = job.stem
    return jobs


def check_image_prompts(config: CanvasConfig, source: Any) -> None:
    """`InputError` naming ``regions.N.image_prompt``'s key for a vision model that is missing
    or whose projection does not fit the text encoder of the located model ``source``, a
    ``space`` it lacks, or a model image prompts do not support (SDXL)."""
    for index, region in enumerate(config.regions):
        prompt = region.image_prompt if isinstance(region, TextRegion) else None
        if prompt is None:
            continue
        try:
            registry.check_vision_model(source, prompt.vision_model, prompt.vision_config,
                                        prompt.space)
        except InputError as exc:
            message = str(exc).removeprefix("image_prompt")  # ".vision_model: ...", ": ..."
            raise InputError(f"{config.source}: regions.{index}.image_prompt{message}") from None


def check_memory(config: CanvasConfig) -> None:
    """`InputError` with the estimate when one canvas of ``config`` needs more memory than
    this machine has: the image and its enlargement (uint8), the float32 latents, noise and
    blended prediction, and the planning masks at one byte per 8-pixel cell. Checked before
    planning, which allocates the masks."""
    height, width = config.size
    pixels = height * width
    needed = pixels * 3 * (1 + config.upscale ** 2) + pixels // 64 * (4 * 4 * 3 + 4)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise InputError(
            f"{config.source}: a {width:,}x{height:,} px canvas needs about "
            f"{needed / 2**30:,.0f} GiB of memory, more than this machine's "
            f"{memory / 2**30:,.0f} GiB; paint a smaller canvas"
        )


def check_windows(config: CanvasConfig, native: int | None) -> None:
    """`check_window_stride` for the brushes' window of ``config`` (its ``window_size``, else
    the model's ``native`` side in pixels, when known), and `check_wrap_window` for a wrapped
    canvas, the error naming the config."""
    size = config.window_size or native
    if size is None:
        return
    try:
        check_window_stride(config.window_stride, size, config.window_size)
        check_wrap_window(config.wrap, size, *config.size)
    except InputError as exc:
        raise InputError(f"{config.source}: {exc}") from None
