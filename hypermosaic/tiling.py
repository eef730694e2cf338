"""Tile geometry: how a long side is cut into overlapping windows, pure and model-free.

Two cuts, one per need. `window_spans` steps a fixed window by a stride and pins the last one
flush with the end (mixture-of-diffusers windows and the tiled VAE, whose windows sit on the
latent grid). `tile_windows` spreads as few tiles as cover the side evenly, so that neighbours
overlap by at least the given amount (seamless ESRGAN upscaling, where the overlap is feathered).
A 2-D window is ``(top, bottom, left, right)``, bottom and right excluded (`Box`).
"""

from __future__ import annotations

import math

from hypermosaic.errors import InputError

__all__ = ["Box", "DEFAULT_OVERLAP", "tile_windows", "window_spans"]

Box = tuple[int, int, int, int]
DEFAULT_OVERLAP = 32
"""Input pixels shared by neighbouring ESRGAN tiles."""


def window_spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``(start, end)`` of ``size`` every ``stride``, the last flush with ``length``.

    One window ``(0, length)`` when the length fits in one (whatever the stride). Otherwise
    raises ValueError for a stride that is not positive or larger than the window (gaps).
    """
    if length <= size:
        return [(0, length)]
    if not 0 < stride <= size:
        raise ValueError(f"stride {stride} must be in 1..{size} (the window size)")
    starts = list(range(0, length - size, stride)) + [length - size]
    return [(start, start + size) for start in starts]


def tile_windows(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Windows `(start, stop)` of size `tile` covering `0..length`, spread evenly so that
    neighbours overlap by at least `overlap`; one window if the length fits in a tile."""
    if tile <= overlap:
        raise InputError(f"tile: {tile} must be larger than the overlap {overlap}")
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    return [(start, start + tile) for start in starts]
