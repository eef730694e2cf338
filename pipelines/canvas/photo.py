"""A canvas over a background photo: its latents, masked latent blending and the composite.

The photo is encoded once. The regions repaint only their area ``m`` (the plan's repaint
pixels, each latent position repainted when any of its pixels is). With a plain (4-channel)
UNet, after every step the latents outside ``m`` are the photo's, noised to the next step's
level (diffusers' inpainting pipeline does the same)::

    z_{t-1} = m * z_{t-1} + (1 - m) * add_noise(z_photo, noise, t_next)     (z_photo at the end)

An inpainting (9-channel) UNet instead sees, in every window, the mask and the latents of the
photo with the repainted pixels set to 0 (mid grey) as extra input channels, cropped like the
latents (`condition`). The decoded canvas is composited over the photo in pixel space with an
edge feathered inwards (`hypermosaic.pipelines.inpaint.engine.composite`), so that outside the
repaint area the result is the photo byte for byte, as a VAE round trip alone never is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas.tiled_vae import encode_tiled
from hypermosaic.pipelines.inpaint.engine import INPAINTING_CHANNELS, composite, feather_weights

__all__ = ["Photo", "composite_photo", "hold_photo", "prepare_photo"]


@dataclass
class Photo:
    """The photo's scaled latents ``(1, C, h, w)``, the repaint mask ``(1, 1, h, w)`` (1 where
    repainted) and, for an inpainting UNet, its extra channels ``(1, 1 + C, h, w)``: the mask,
    then the masked photo's latents."""

    latents: torch.Tensor
    mask: torch.Tensor
    condition: torch.Tensor | None


def prepare_photo(vae: Any, unet: Any, plan: CanvasPlan, f: int, tile: int) -> Photo | None:
    """The `Photo` of ``plan.background`` on the UNet's device, or None without a photo.

    `InputError` naming ``model`` for a UNet that is neither plain (as many input channels as
    the VAE has latent channels) nor an inpainting UNet over a photo."""
    channels, latent = unet.config.in_channels, vae.config.latent_channels
    background = plan.background
    if channels != latent and (background is None or channels != INPAINTING_CHANNELS):
        raise InputError(
            f"model: a UNet with {channels} input channels paints only over a background photo "
            f"(an inpainting UNet, {INPAINTING_CHANNELS}; give [background] an image), or use "
            f"a plain model ({latent})"
        )
    if background is None:
        return None
    device = unet.device
    height, width = background.repaint.shape
    cells = background.repaint.reshape(height // f, f, width // f, f).any(axis=(1, 3))
    mask = torch.from_numpy(cells.astype(np.float32))[None, None].to(device)
    latents = encode_tiled(vae, background.pixels, tile, tile // 4).to(device)
    condition = None
    if channels == INPAINTING_CHANNELS:
        kept = background.pixels.astype(np.float32) / 255.0 * 2.0 - 1.0
        masked = np.where(background.repaint[..., None], np.float32(0.0), kept)
        condition = torch.cat([mask, encode_tiled(vae, masked, tile, tile // 4).to(device)], 1)
    return Photo(latents, mask, condition)


def hold_photo(scheduler: Any, latents: torch.Tensor, photo: Photo, noise: torch.Tensor,
               following: torch.Tensor | None) -> torch.Tensor:
    """``latents`` outside the repaint mask set to the photo's, noised to the ``following``
    timestep (the photo itself after the last step); inpainting UNets are left alone."""
    if photo.condition is not None:
        return latents
    held = photo.latents
    if following is not None:
        held = scheduler.add_noise(held, noise, following.reshape(1))
    return (1 - photo.mask) * held + photo.mask * latents


def composite_photo(image: np.ndarray, plan: CanvasPlan) -> np.ndarray:
    """The decoded ``image`` over the plan's photo, feathered inwards: outside the repaint
    pixels exactly the photo."""
    background = plan.background
    if background is None:
        return image
    weights = feather_weights(background.repaint, background.feather)
    return composite(image, background.pixels, weights)
