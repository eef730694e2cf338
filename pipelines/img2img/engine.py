"""The diffusion engine: Stable Diffusion img2img over a batch of tiles.

One pipeline is loaded per worker (`load_pipeline`); the primary comes from its text-to-image
form and the tiles from the image-to-image form over the same components. Tiles with equal
settings (steps, strength, guidance) share calls of up to ``batch_size`` tiles; prompt embeddings
are computed once per `tiles` call for each distinct prompt pair and indexed per tile, then moved
by each tile's image prompt, if it has one (`hypermosaic.pipelines.image_prompt.encode`), or run
with its IP-Adapter (`hypermosaic.pipelines.image_prompt.ip_adapter`). Each tile
has its own CPU ``torch.Generator`` seeded from its job, so its noise does not depend on its
batch-mates nor on the device. Its bytes can, by one uint8 level: batched matrix products sum
in another order. The build therefore always calls with the same fixed batches
(`hypermosaic.build.plan.sibling_batches`) and fingerprints ``batch_size``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypermosaic.build.engines import PrimaryJob, TileContext, TileJob
from hypermosaic.controlnet import ControlNetSetting
from hypermosaic.errors import InputError
from hypermosaic.image_prompts import IP_ADAPTER
from hypermosaic.lora import LoraSetting
from hypermosaic.pipelines.controlnet import control_img2img, load_controlnet
from hypermosaic.pipelines.image_prompt.encode import ImagePrompts, with_guidance
from hypermosaic.pipelines.image_prompt.ip_adapter import ip_adapter_embeds
from hypermosaic.pipelines.models import img2img_pipeline, load_worker_pipeline
from hypermosaic.pipelines.sdxl import encode_prompts

__all__ = ["DiffusionEngine", "to_uint8"]

SIDE_MULTIPLE = 8  # the SD pipelines require image sides divisible by 8


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (as ``output_type="np"`` gives) to uint8, rounded to nearest."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image: the same noise whatever the device and the batch."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def _check_side(side: int, what: str) -> None:
    if side % SIDE_MULTIPLE:
        raise InputError(
            f"size: {side} px {what} is not a multiple of {SIDE_MULTIPLE}, "
            "which Stable Diffusion needs"
        )


class DiffusionEngine:
    """The `hypermosaic.build.engines.Engine` backed by a diffusers Stable Diffusion pipeline.

    ``model``, ``scheduler``, ``dtype`` and ``device`` are as in `load_pipeline` and
    `resolve_device_dtype`; ``config`` is the component-config source of a single-file model;
    ``style_images`` are the image prompts' style images, ``(key, encoded image)`` pairs
    (`hypermosaic.pipelines.image_prompt.encode.ImagePrompts`); ``lora`` the LoRAs loaded with
    the model (`hypermosaic.lora.LoraSetting`); ``controlnet`` a ControlNet and its scale
    (`hypermosaic.controlnet.ControlNetSetting`) that conditions each tile on its own pixels.
    Silences diffusers' and transformers' progress bars and warnings in this process (an engine
    lives in a worker, whose output would break the build's own progress display; errors still
    raise). Raises `InputError` when the model cannot be loaded.
    """

    def __init__(
        self,
        model: str,
        scheduler: str = "default",
        dtype: str = "auto",
        batch_size: int = 4,
        device: str = "auto",
        config: str | None = None,
        style_images: tuple[tuple[str, bytes], ...] = (),
        lora: tuple[LoraSetting, ...] = (),
        controlnet: ControlNetSetting | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"diffusion.batch_size: {batch_size} (must be at least 1)")
        self.batch_size = batch_size
        self.device, self.dtype, self.text2img = load_worker_pipeline(
            model, device, dtype, scheduler=scheduler, config=config, lora=lora)
        self.img2img = img2img_pipeline(self.text2img)
        self.tile_pipe, self.control_scale = self.img2img, None
        if controlnet is not None:  # every tile conditioned on itself
            model, self.control_scale = controlnet
            self.tile_pipe = control_img2img(self.img2img, load_controlnet(
                model, self.device, self.dtype, "diffusion.controlnet.model"))
        self.image_prompts = ImagePrompts(device, dtype, style_images)

    def primary(self, job: PrimaryJob) -> np.ndarray:
        """The root image from the model's text-to-image, ``(size, size, 3)`` uint8."""
        _check_side(job.size, "(primary)")
        embeddings = self._encode(self.text2img, [(job.prompt, job.negative_prompt)])
        result = self.text2img(
            **embeddings,
            height=job.size,
            width=job.size,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            generator=_generators([job.seed]),
            output_type="np",
        )
        return to_uint8(result.images)[0]

    def tiles(self, inits: np.ndarray, jobs: Sequence[TileJob], context: TileContext) -> np.ndarray:
        """img2img of every tile, ``(B, size, size, 3)`` uint8 (`hypermosaic.build.engines.Engine`).

        A tile whose strength leaves no denoising step (``int(steps * strength) == 0``) is
        returned as it came in.
        """
        self.check_inputs(inits, jobs)
        out = np.empty_like(inits)
        if not jobs:
            return out
        # 1. embeddings of each distinct (prompt, negative prompt), computed once
        pairs = sorted({(job.prompt, job.negative_prompt) for job in jobs})
        embeddings = self._encode(self.img2img, pairs)
        row = {pair: index for index, pair in enumerate(pairs)}
        # 2. image prompts: the moved prompt states of the tiles they move (negatives untouched)
        own = torch.tensor([row[(job.prompt, job.negative_prompt)] for job in jobs])
        guided = self.image_prompts.guide(self.img2img, embeddings["prompt_embeds"][own], jobs,
                                          inits) if any(job.image_prompt for job in jobs) else {}
        # 3. IP-Adapter tiles: their image embeddings, one vision call per vision model
        adapters = {i: self._adapter(job) for i, job in enumerate(jobs)}
        states = embeddings["prompt_embeds"]
        embeds = (self.image_prompts.embed(jobs, inits, states.device, states.dtype)
                  if any(adapters.values()) else {})
        # 4. group tiles with equal settings (and adapter), in order of first appearance
        groups: dict[tuple[int, float, float, tuple[Path, float] | None], list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault((job.steps, job.strength, job.guidance, adapters[index]),
                              []).append(index)
        # 5. one pipeline call per chunk of at most batch_size tiles of a group
        for (steps, strength, guidance, adapter), members in groups.items():
            if int(steps * strength) < 1:
                out[members] = inits[members]
                continue
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                rows = torch.tensor([row[(jobs[i].prompt, jobs[i].negative_prompt)] for i in chunk])
                images = torch.from_numpy(inits[chunk]).permute(0, 3, 1, 2).float() / 255.0
                inputs: dict[str, Any] = {name: value[rows] for name, value in embeddings.items()}
                inputs["prompt_embeds"] = with_guidance(inputs["prompt_embeds"],
                                                        [guided.get(i) for i in chunk])
                running: AbstractContextManager[None] = nullcontext()
                if adapter is not None:
                    inputs["ip_adapter_image_embeds"] = ip_adapter_embeds(
                        torch.stack([embeds[i] for i in chunk]),
                        "negative_prompt_embeds" in inputs and guidance > 1)
                    running = self.image_prompts.ip_adapters.applied(self.img2img, *adapter)
                if self.control_scale is not None:
                    inputs["control_image"] = images
                    inputs["controlnet_conditioning_scale"] = self.control_scale
                with running:
                    result = self.tile_pipe(
                        **inputs,
                        image=images,
                        strength=strength,
                        num_inference_steps=steps,
                        guidance_scale=guidance,
                        generator=_generators([jobs[i].seed for i in chunk]),
                        output_type="np",
                    )
                out[chunk] = to_uint8(result.images)
        return out

    def _adapter(self, job: TileJob) -> tuple[Path, float] | None:
        """A tile's IP-Adapter file and scale; None without one."""
        prompt = dict(job.image_prompt or ())
        if prompt.get("method") != IP_ADAPTER:
            return None
        return self.image_prompts.adapter(prompt), float(prompt["ip_adapter_scale"])

    def check_inputs(self, inits: np.ndarray, jobs: Sequence[TileJob]) -> None:
        """Reject a batch that is not ``(B, S, S, 3)`` uint8 with one job per tile."""
        if inits.dtype != np.uint8 or inits.ndim != 4 or inits.shape[3] != 3:
            raise ValueError(f"inits: expected (B, S, S, 3) uint8, got {inits.shape} {inits.dtype}")
        if inits.shape[1] != inits.shape[2]:
            raise ValueError(f"inits: tiles must be square, got {inits.shape[1:3]}")
        if len(jobs) != inits.shape[0]:
            raise ValueError(f"jobs: {len(jobs)} jobs for {inits.shape[0]} tiles")
        _check_side(inits.shape[1], "(tiles)")

    def _encode(self, pipe: Any, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Prompt embeddings of each (prompt, negative) pair, as the pipeline's call takes them.

        The pipeline's own `encode_prompt` does the work (`hypermosaic.pipelines.sdxl`, shared
        with the canvas), so SDXL's two text encoders and pooled embeddings are handled as the
        model expects; negatives are left out where the pipeline has none (LCM's guidance is
        embedded, never classifier-free).
        """
        accepted = inspect.signature(pipe.__call__).parameters
        prompts, negatives = zip(*pairs, strict=True)
        cfg = "negative_prompt_embeds" in accepted
        encoded = encode_prompts(pipe, prompts, self.device, negatives if cfg else None)
        return {name: value for name, value in encoded.items() if name in accepted}
