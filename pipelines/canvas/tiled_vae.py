"""Tiled VAE decode and encode, so canvases far larger than one VAE pass fit in memory.

The latent canvas is cut into overlapping windows (`hypermosaic.tiling.window_spans`);
each is decoded alone and the results cross-fade over the overlaps with linear ramps::

    image(y, x) = sum_t w_t(y, x) * tile_t(y, x) / sum_t w_t(y, x)

Rows of tiles are decoded top to bottom and, once a row is done, every pixel row above the next
row of tiles is final: it is divided by its weight, rounded to uint8 and dropped from the
float buffers. Peak memory is the whole uint8 output (3 bytes a pixel, which the caller keeps)
plus one band of float32 value and weight buffers (a tile high, the canvas wide: 16 bytes a
pixel) plus one tile's activations, instead of the whole canvas's activations. A canvas that
fits in one tile is decoded in one pass, exactly as diffusers does. Encoding (for image
regions) is the mirror image, blended in latent space: besides the caller's uint8 image it
holds the float32 latent buffers (the image's size over ``f * f``) and converts one tile's
pixels to floats at a time. A tile that decodes to NaN or infinite values (a VAE overflowing in
float16) raises `BuildError` rather than become black pixels.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from hypermosaic.errors import BuildError
from hypermosaic.pipelines.img2img.engine import to_uint8
from hypermosaic.tiling import window_spans

__all__ = ["cpu_vae", "decode_tiled", "encode_tiled", "float32_vae", "ramp", "vae_scale_factor"]


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent position: 2 to the number of the VAE's downsamplings."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


_TWINS: weakref.WeakKeyDictionary[Any, dict[torch.device, Any]] = weakref.WeakKeyDictionary()


def float32_vae(vae: Any, device: torch.device) -> Any:
    """``vae`` as a float32 model on ``device``: itself if it is one, else a copy made once
    per VAE and device and kept while that VAE lives, so canvases rendered one after another
    on a worker share it. The copy is built on the CPU first (no second half-precision copy)."""
    if vae.device == device and vae.dtype == torch.float32:
        return vae
    twins = _TWINS.setdefault(vae, {})
    if device not in twins:
        twin = type(vae).from_config(vae.config)
        state = vae.state_dict()
        twin.load_state_dict({key: value.detach().to("cpu", torch.float32)
                              for key, value in state.items()})
        twins[device] = twin.to(device, torch.float32).eval().requires_grad_(False)
    return twins[device]


def cpu_vae(vae: Any) -> Any:
    """``vae`` as a float32 model on the CPU (the ``cpu_vae`` option; `float32_vae`)."""
    return float32_vae(vae, torch.device("cpu"))


def ramp(length: int, lead: int, trail: int) -> np.ndarray:
    """Weights over ``length`` positions: 1, rising linearly over the first ``lead`` positions
    (shared with the previous tile) and falling over the last ``trail`` (shared with the next).
    Every weight is positive."""
    weights = np.ones(length, np.float32)
    if lead:
        weights[:lead] = np.arange(1, lead + 1) / (lead + 1)
    if trail:
        weights[length - trail :] = np.minimum(
            weights[length - trail :], np.arange(trail, 0, -1) / (trail + 1)
        )
    return weights


def _ramps(spans: list[tuple[int, int]], scale: int) -> list[np.ndarray]:
    """One ramp per span, in units of ``scale`` positions per span position."""
    ramps = []
    for index, (start, end) in enumerate(spans):
        lead = spans[index - 1][1] - start if index > 0 else 0
        trail = end - spans[index + 1][0] if index + 1 < len(spans) else 0
        ramps.append(ramp((end - start) * scale, lead * scale, trail * scale))
    return ramps


@torch.no_grad()
def _decode(vae: Any, latents: torch.Tensor) -> np.ndarray:
    """One VAE pass: ``(1, C, h, w)`` scaled latents to ``(h*f, w*f, 3)`` float32 in [0, 1];
    `BuildError` if it decodes values that are not finite."""
    latents = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    image = vae.decode(latents).sample
    if not bool(torch.isfinite(image).all()):
        raise BuildError(
            "canvas: the VAE decoded NaN or infinite values (it overflowed; in float16 try "
            'cpu_vae = true or dtype = "float32"); nothing was written'
        )
    image = (image / 2 + 0.5).clamp(0, 1)
    return image[0].permute(1, 2, 0).float().cpu().numpy()


def decode_tiled(vae: Any, latents: torch.Tensor, tile: int, overlap: int) -> np.ndarray:
    """Decode ``(1, C, h, w)`` scaled latents to an ``(h*f, w*f, 3)`` uint8 image.

    ``tile`` and ``overlap`` are in latent positions; ValueError unless ``0 <= overlap < tile``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"vae tiles: overlap {overlap} must be in 0..{tile - 1}")
    f = vae_scale_factor(vae)
    _, _, height, width = latents.shape
    rows = window_spans(height, tile, tile - overlap)
    cols = window_spans(width, tile, tile - overlap)
    wy, wx = _ramps(rows, f), _ramps(cols, f)
    out = np.empty((height * f, width * f, 3), np.uint8)
    carry_value = np.zeros((0, width * f, 3), np.float32)
    carry_weight = np.zeros((0, width * f, 1), np.float32)
    for r, (top, bottom) in enumerate(rows):
        # 1. Decode the row's tiles into a band, weighted.
        value = np.zeros(((bottom - top) * f, width * f, 3), np.float32)
        weight = np.zeros(((bottom - top) * f, width * f, 1), np.float32)
        for (left, right), wc in zip(cols, wx, strict=True):
            pixels = _decode(vae, latents[:, :, top:bottom, left:right])
            w = (wy[r][:, None] * wc[None, :])[..., None]
            value[:, left * f : right * f] += pixels * w
            weight[:, left * f : right * f] += w
        # 2. Add what the rows above left over this band.
        value[: len(carry_value)] += carry_value
        weight[: len(carry_weight)] += carry_weight
        # 3. Rows above the next row of tiles are final.
        done = (rows[r + 1][0] - top) * f if r + 1 < len(rows) else len(value)
        out[top * f : top * f + done] = to_uint8(value[:done] / weight[:done])
        carry_value, carry_weight = value[done:], weight[done:]
    return out


def _pixels(crop: np.ndarray) -> torch.Tensor:
    """An ``(h, w, 3)`` crop as the VAE's ``(1, 3, h, w)`` float32 input in [-1, 1]: uint8
    rescaled, float32 taken as it is (already in [-1, 1])."""
    pixels = torch.from_numpy(np.array(crop, np.float32)).permute(2, 0, 1)[None]
    return pixels if crop.dtype == np.float32 else pixels / 255.0 * 2.0 - 1.0


@torch.no_grad()
def encode_tiled(vae: Any, image: np.ndarray, tile: int, overlap: int) -> torch.Tensor:
    """Encode an ``(H, W, 3)`` uint8 image (or float32 in [-1, 1]) to ``(1, C, H/f, W/f)``
    scaled float32 latents (CPU).

    Each tile's latent is its distribution's mode (mean), so encoding is deterministic. ``tile``
    and ``overlap`` are in latent positions; ValueError unless ``0 <= overlap < tile``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"vae tiles: overlap {overlap} must be in 0..{tile - 1}")
    f = vae_scale_factor(vae)
    height, width = image.shape[0] // f, image.shape[1] // f
    rows = window_spans(height, tile, tile - overlap)
    cols = window_spans(width, tile, tile - overlap)
    wy, wx = _ramps(rows, 1), _ramps(cols, 1)
    value = torch.zeros(1, vae.config.latent_channels, height, width)
    weight = torch.zeros(1, 1, height, width)
    for (top, bottom), wr in zip(rows, wy, strict=True):
        for (left, right), wc in zip(cols, wx, strict=True):
            crop = _pixels(image[top * f : bottom * f, left * f : right * f])
            latent = vae.encode(crop.to(vae.device, vae.dtype)).latent_dist.mode()
            latent = latent.float().cpu() * vae.config.scaling_factor
            w = torch.from_numpy(wr[:, None] * wc[None, :])
            value[:, :, top:bottom, left:right] += latent * w
            weight[:, :, top:bottom, left:right] += w
    return value / weight
