"""Inpainting: a masked region of an image repainted, with the rest of the image as context.

`InpaintEngine` loads a model once (`hypermosaic.pipelines.models.load_pipeline`) and runs
diffusers' inpainting pipeline over the same components (`StableDiffusionInpaintPipeline` for
SD 1.x/2.x, its XL form for SDXL). The route follows the UNet's input channels:

- 9 (an inpainting model): the UNet sees the noisy latents, the mask and the masked image's
  latents at every step;
- 4 (any plain SD model): masked latent blending. After each step, outside the (latent) mask the
  latents are replaced by the original image's latents noised to the next timestep::

      z_{t-1} = m * z_{t-1} + (1 - m) * add_noise(z_0, eps, t-1)

  which diffusers' inpainting pipeline already does for 4-channel UNets (checked against
  diffusers 0.42), so it is not written again here.

Each candidate has its own CPU generator seeded by its seed, so its noise does not depend on
its batch-mates nor the device. Decoded pixels are composited back over the input with an edge
feathered inwards (`feather_weights`, `composite`): outside the mask the result equals the
input byte for byte, as a VAE round trip alone never would. A candidate with a NaN or infinite
pixel raises `BuildError` rather than reaching an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hypermosaic.errors import BuildError, InputError
from hypermosaic.pipelines.img2img import to_uint8
from hypermosaic.pipelines.models import load_worker_pipeline

__all__ = [
    "INPAINTING_CHANNELS",
    "InpaintEngine",
    "InpaintJob",
    "composite",
    "feather_weights",
    "inside",
]

INPAINTING_CHANNELS = 9  # latents (4) + mask (1) + masked-image latents (4)
PLAIN_CHANNELS = 4
SIDE_MULTIPLE = 8  # the SD pipelines require image sides divisible by 8
MASK_THRESHOLD = 128  # uint8 masks: inside from here up (diffusers binarises at 0.5)


@dataclass(frozen=True)
class InpaintJob:
    """One inpainting request: ``image`` (H, W, 3) uint8 RGB; ``mask`` (H, W), bool or uint8
    (inside where True or >= 128); one candidate per seed; ``feather`` px of inward soft edge."""

    image: np.ndarray
    mask: np.ndarray
    prompt: str
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    strength: float = 1.0
    seeds: tuple[int, ...] = (0,)
    feather: int = 8


def inside(mask: np.ndarray) -> np.ndarray:
    """The mask as bool: True where the image is repainted."""
    return mask if mask.dtype == np.bool_ else mask >= MASK_THRESHOLD


def feather_weights(mask: np.ndarray, feather: int) -> np.ndarray:
    """Compositing weights of the repainted pixels, float64 (H, W) in [0, 1].

    0 outside the mask, rising inwards by ``1 / feather`` per pixel (chessboard distance from
    the nearest outside pixel) to 1; the image border does not count as outside. ``feather``
    0 gives the hard mask.
    """
    region = inside(mask)
    if feather <= 0:
        return region.astype(np.float64)
    count = np.zeros(region.shape, np.float64)
    eroded = region
    for _ in range(feather):
        count += eroded
        padded = np.pad(eroded, 1, mode="edge")
        h, w = eroded.shape
        eroded = np.logical_and.reduce(
            [padded[i : i + h, j : j + w] for i in range(3) for j in range(3)]
        )
    return count / feather


def composite(painted: np.ndarray, image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``w * painted + (1 - w) * image`` per pixel, uint8: exactly ``image`` where ``w == 0``.

    ``painted`` (..., H, W, 3) and ``image`` (H, W, 3) are uint8, ``weights`` (H, W).
    """
    w = weights[..., None]
    mixed = w * painted + (1.0 - w) * image
    return np.where(w > 0, np.rint(mixed), image).astype(np.uint8)


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per candidate: the same noise whatever the device and the batch."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def _check_finite(values: np.ndarray, seeds: Sequence[int]) -> None:
    """Raise `BuildError` naming the seeds whose candidates hold a NaN or infinite value."""
    bad = [seed for seed, value in zip(seeds, values, strict=True) if not np.isfinite(value).all()]
    if bad:
        raise BuildError(
            f"inpaint: NaN or infinite pixels from seed(s) {', '.join(map(str, bad))} "
            "(a float16 overflow? try dtype float32)"
        )


class InpaintEngine:
    """Inpainting candidates from ``model`` (as `load_pipeline` takes it).

    ``scheduler``, ``dtype``, ``device`` and ``config`` are as in `load_pipeline` and
    `resolve_device_dtype`; at most ``batch_size`` candidates share a pipeline call. Raises
    `InputError` when the model cannot be loaded or cannot inpaint (neither a 4- nor a
    9-channel UNet, or a family without an inpainting pipeline).
    """

    def __init__(
        self,
        model: str,
        scheduler: str = "default",
        dtype: str = "auto",
        batch_size: int = 4,
        device: str = "auto",
        config: str | None = None,
    ) -> None:
        from diffusers import AutoPipelineForInpainting

        if batch_size < 1:
            raise InputError(f"batch_size: {batch_size} (must be at least 1)")
        self.batch_size = batch_size
        self.device, self.dtype, text2img = load_worker_pipeline(
            model, device, dtype, scheduler=scheduler, config=config)
        channels = text2img.unet.config.in_channels
        if channels not in (PLAIN_CHANNELS, INPAINTING_CHANNELS):
            raise InputError(
                f"model: {model}: a UNet with {channels} input channels cannot inpaint "
                f"(use an SD model, {PLAIN_CHANNELS}, or an SD inpainting model, "
                f"{INPAINTING_CHANNELS})"
            )
        self.latent_blending = channels == PLAIN_CHANNELS
        try:
            self.pipe = AutoPipelineForInpainting.from_pipe(text2img)
        except ValueError:
            raise InputError(
                f"model: {model}: {type(text2img).__name__} models have no inpainting pipeline"
            ) from None
        self.pipe.set_progress_bar_config(disable=True)

    def check_inputs(self, job: InpaintJob) -> None:
        """Reject a job before any work: `ValueError` for wrong array types, `InputError` for
        what a user can fix (sizes, an empty mask, settings leaving no denoising step)."""
        image, mask = job.image, job.mask
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if mask.ndim != 2 or mask.dtype not in (np.uint8, np.bool_):
            raise ValueError(f"mask: expected (H, W) uint8 or bool, got {mask.shape} {mask.dtype}")
        (h, w), (mh, mw) = image.shape[:2], mask.shape
        if (mh, mw) != (h, w):
            raise InputError(f"mask: {mw}x{mh} px but the image is {w}x{h} px")
        if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
            raise InputError(
                f"image: {w}x{h} px: sides must be multiples of {SIDE_MULTIPLE} "
                "for Stable Diffusion"
            )
        if not inside(mask).any():
            raise InputError("mask: empty (no pixel to repaint)")
        if not job.seeds:
            raise ValueError("seeds: at least one seed is needed")
        if not 0 < job.strength <= 1:
            raise InputError(f"strength: {job.strength} (must be in (0, 1])")
        if int(job.steps * job.strength) < 1:
            raise InputError(
                f"steps: {job.steps} at strength {job.strength} leaves no denoising step"
            )
        if job.feather < 0:
            raise InputError(f"feather: {job.feather} px (must be at least 0)")

    def candidates(self, job: InpaintJob) -> np.ndarray:
        """One inpainted image per seed, ``(len(seeds), H, W, 3)`` uint8, composited over the
        input: outside the mask equal to ``job.image`` byte for byte."""
        painted = to_uint8(self.paint(job, output_type="np"))
        return composite(painted, job.image, feather_weights(job.mask, job.feather))

    def paint(self, job: InpaintJob, output_type: str = "np") -> Any:
        """The pipeline's own outputs, one per seed, before compositing: float images in
        [0, 1] ``(N, H, W, 3)`` (``"np"``), or the final latents ``(N, 4, h, w)``
        (``"latent"``). Raises `BuildError` on a NaN or infinite value."""
        self.check_inputs(job)
        # 1. image in [0, 1] and binary mask, as (1, C, H, W) tensors
        image = torch.from_numpy(job.image).permute(2, 0, 1)[None].float() / 255.0
        mask = torch.from_numpy(inside(job.mask))[None, None].float()
        height, width = job.image.shape[:2]
        # 2. one pipeline call per chunk of at most batch_size seeds
        outputs = []
        for start in range(0, len(job.seeds), self.batch_size):
            seeds = job.seeds[start : start + self.batch_size]
            n = len(seeds)
            result = self.pipe(
                prompt=[job.prompt] * n,
                negative_prompt=[job.negative_prompt] * n,
                image=image.repeat(n, 1, 1, 1),
                mask_image=mask.repeat(n, 1, 1, 1),
                height=height,
                width=width,
                strength=job.strength,
                num_inference_steps=job.steps,
                guidance_scale=job.guidance,
                generator=_generators(seeds),
                output_type=output_type,
            )
            outputs.append(result.images)
        # 3. all candidates, checked finite
        if output_type == "latent":
            latents = torch.cat(outputs)
            _check_finite(latents.float().cpu().numpy(), job.seeds)
            return latents
        images = np.concatenate(outputs)
        _check_finite(images, job.seeds)
        return images
