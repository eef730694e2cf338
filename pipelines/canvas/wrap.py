"""Canvases that wrap around: 360° panoramas (``wrap = "x"``) and tileable textures (``"xy"``).

On a wrapped axis the canvas is a circle: a window starting at ``L`` of ``w`` positions covers
``L .. L + w`` modulo the side, so windows may cross the right (or bottom) edge. The loop works
on the canvas *ring-padded*: extended past its right and bottom edges by copies of its first
columns and rows (`ring_pad`), enough for the windows that cross; window boxes are plain boxes
in that extended canvas. Blended predictions are folded back (`ring_fold`: what landed on the
copies is added onto the originals), so the value/weight blend becomes::

    eps(x) = sum_j w_j(x mod W) * eps_j / sum_j w_j(x mod W)

Sliding windows are spread evenly around the circle (`ring_spans`). The VAE decodes the latents
padded circularly on both sides by its tile overlap and the pixels are cropped back
(`decode_ring`), so the decoder sees across the seam. With ``wrap = "none"`` none of this runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hypermosaic.pipelines.canvas.tiled_vae import decode_tiled, vae_scale_factor

__all__ = [
    "NO_WRAP",
    "decode_ring",
    "ring_array",
    "ring_fold",
    "ring_pad",
    "ring_spans",
    "wrap_axes",
]

NO_WRAP = "none"


def wrap_axes(wrap: str) -> tuple[bool, bool]:
    """Which axes wrap, ``(rows, columns)``: ``"x"`` the columns, ``"xy"`` both."""
    return "y" in wrap, "x" in wrap


def ring_spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``(start, start + size)`` spread evenly around a circle of ``length``: as many
    as a ``stride`` needs (``ceil(length / stride)``), ends past ``length`` wrapping round.
    They start half a step in, so that no window edge falls on the seam: it lies inside
    windows, as any other position does. ValueError for a window longer than the circle or a
    stride outside ``1..size``."""
    if not 0 < size <= length:
        raise ValueError(f"window {size} must be in 1..{length} (the wrapped side)")
    if not 0 < stride <= size:
        raise ValueError(f"stride {stride} must be in 1..{size} (the window size)")
    count = math.ceil(length / stride)
    starts = ((2 * k + 1) * length // (2 * count) for k in range(count))
    return [(start, start + size) for start in starts]


def ring_pad(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``(N, C, H, W)`` extended to ``H + rows`` and ``W + cols`` by its own first rows and
    columns (repeated as often as needed): the canvas seen past its bottom and right edges."""
    height, width = x.shape[-2:]
    if rows:
        x = x[:, :, torch.arange(height + rows, device=x.device) % height]
    if cols:
        x = x[:, :, :, torch.arange(width + cols, device=x.device) % width]
    return x


def ring_fold(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `ring_pad` for sums: ``(N, C, H', W')`` folded onto ``(N, C, H, W)``,
    each position's value added onto its position modulo the side."""
    n, c, rows, cols = x.shape
    out = torch.zeros((n, c, height, cols), dtype=x.dtype, device=x.device)
    out.index_add_(2, torch.arange(rows, device=x.device) % height, x)
    folded = torch.zeros((n, c, height, width), dtype=x.dtype, device=x.device)
    return folded.index_add_(3, torch.arange(cols, device=x.device) % width, out)


def ring_array(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A 2-D map extended by ``rows`` and ``cols`` past its bottom and right edges, wrapping."""
    return np.pad(array, ((0, rows), (0, cols)), mode="wrap")


def decode_ring(vae: Any, latents: torch.Tensor, tile: int, overlap: int, wrap: str
                ) -> np.ndarray:
    """`decode_tiled` of ``latents`` padded circularly by ``overlap`` latent positions (at
    least one, at most the side) on both sides of each wrapped axis, cropped back: the
    decoder sees across the seam, so pixel column 0 continues column ``W - 1`` (and row 0
    row ``H - 1``)."""
    f = vae_scale_factor(vae)
    wrap_rows, wrap_cols = wrap_axes(wrap)
    height, width = latents.shape[-2:]
    my = min(max(1, overlap), height) if wrap_rows else 0
    mx = min(max(1, overlap), width) if wrap_cols else 0
    rows = torch.arange(-my, height + my, device=latents.device) % height
    cols = torch.arange(-mx, width + mx, device=latents.device) % width
    pixels = decode_tiled(vae, latents[:, :, rows][:, :, :, cols], tile, overlap)
    return np.ascontiguousarray(
        pixels[my * f : (my + height) * f, mx * f : (mx + width) * f])
