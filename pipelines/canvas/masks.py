"""Weight masks of canvas regions: the profiles that blend overlapping noise predictions.

Every window's noise prediction enters the canvas through a weight map ``w_j`` over its box;
where windows overlap the predictions are averaged by their weights (value/weight buffers)::

    eps(x) = sum_j w_j(x) * eps_j(x) / sum_j w_j(x)        (over the windows j covering x)

so the normalised weights ``w_j / sum_j w_j`` sum to one wherever any window has weight.
The profiles are those of Mixture of Diffusers (Barbero Jimenez, arXiv 2302.02412), with the
same scale, so regions of different mask types mix as they do there: ``constant`` is 1,
``gaussian`` peaks at ``1 / sqrt(2 pi 0.01)`` (about 3.99) in the middle of the box and falls
to ``exp(-12.5 (1 - 1/n)^2)`` of that peak at the edges of a side of ``n`` positions (about
2.8e-4 absolute for n = 8, towards 1.5e-5 for long sides), ``quartic`` (the biweight kernel)
peaks at 15/16 and is small but positive at the edges. All are separable: the outer product
of a row and a column profile. Mixture of Diffusers' tiling pipeline centres its gaussian rows
at ``h / 2`` rather than ``(h - 1) / 2`` (half a position lower); its grid configs get that
profile, `hypermosaic.canvas.plan.TILING_GAUSSIAN`.
Everything here is numpy; `hypermosaic.pipelines.canvas.loop` moves the maps to the device.
"""

from __future__ import annotations

import math

import numpy as np

from hypermosaic.canvas.plan import CELL, TILING_GAUSSIAN, RegionMask
from hypermosaic.tiling import Box

__all__ = [
    "GAUSSIAN_VARIANCE",
    "PROFILES",
    "cells_to_latent",
    "constant_profile",
    "gaussian_blur",
    "gaussian_profile",
    "mask_weights",
    "profile",
    "quartic_profile",
    "region_weights",
]

GAUSSIAN_VARIANCE = 0.01
QUARTIC_SPAN = 1.99  # the support reaches +-0.995, so the edge weights stay above zero


def constant_profile(n: int) -> np.ndarray:
    """Weight 1 at each of ``n`` positions."""
    return np.ones(n, np.float64)


def gaussian_profile(n: int, variance: float = GAUSSIAN_VARIANCE, centre: float | None = None
                     ) -> np.ndarray:
    """Gaussian of variance ``variance`` (in units of ``n``) centred on ``centre`` (by default
    the middle, ``(n - 1) / 2``)."""
    x = (np.arange(n) - ((n - 1) / 2 if centre is None else centre)) / n
    return np.exp(-(x * x) / (2 * variance)) / math.sqrt(2 * math.pi * variance)


def quartic_profile(n: int) -> np.ndarray:
    """The quartic (biweight) kernel ``15/16 (1 - u^2)^2`` with ``u`` spread over +-0.995."""
    if n == 1:
        return np.full(1, 15 / 16)
    u = np.arange(n) / (n - 1) * QUARTIC_SPAN - QUARTIC_SPAN / 2
    return 15 / 16 * np.square(1 - np.square(u))


PROFILES = {
    "constant": constant_profile,
    "gaussian": gaussian_profile,
    "quartic": quartic_profile,
}


def profile(kind: str, n: int) -> np.ndarray:
    """The 1-D profile ``kind`` (a key of `PROFILES`) over ``n`` positions; ValueError if not."""
    if kind not in PROFILES:
        raise ValueError(f"mask_type: unknown {kind!r} (use {', '.join(PROFILES)})")
    if n < 1:
        raise ValueError(f"profile length must be at least 1, got {n}")
    return PROFILES[kind](n)


def region_weights(kind: str, height: int, width: int, weight: float = 1.0) -> np.ndarray:
    """A box region's ``(height, width)`` float32 weights: profiles' outer product x ``weight``.

    ``kind`` is a key of `PROFILES`, or `TILING_GAUSSIAN` (rows centred at ``height / 2``).
    """
    if kind == TILING_GAUSSIAN:
        rows, cols = gaussian_profile(height, centre=height / 2), gaussian_profile(width)
    else:
        rows, cols = profile(kind, height), profile(kind, width)
    return (np.outer(rows, cols) * weight).astype(np.float32)


def gaussian_blur(mask: np.ndarray, std: float, wrap: tuple[bool, bool] = (False, False)
                  ) -> np.ndarray:
    """Separable Gaussian blur of a 2-D map (edges replicated, or wrapped round on the axes
    ``wrap`` names, rows then columns: a panorama's seam); ``std <= 0`` returns a copy.

    The kernel is cut at three standard deviations and normalised, so a constant map stays
    constant and a non-negative map stays positive wherever it was.
    """
    mask = np.asarray(mask, np.float32)
    if std <= 0:
        return mask.copy()
    radius = max(1, math.ceil(3 * std))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x * x) / (2 * std * std))
    kernel /= kernel.sum()
    padded = np.pad(mask, ((radius, radius), (0, 0)), mode="wrap" if wrap[0] else "edge")
    padded = np.pad(padded, ((0, 0), (radius, radius)), mode="wrap" if wrap[1] else "edge")
    rows = sum(k * padded[i : i + mask.shape[0], :] for i, k in enumerate(kernel))
    return sum(k * rows[:, i : i + mask.shape[1]] for i, k in enumerate(kernel)).astype(np.float32)


def cells_to_latent(cells: np.ndarray, f: int) -> np.ndarray:
    """A map of 8-pixel cells repeated to latent positions (``f`` pixels each), float32."""
    repeat = CELL // f
    return np.repeat(np.repeat(cells, repeat, axis=0), repeat, axis=1).astype(np.float32)


def mask_weights(mask: RegionMask, box: Box, f: int, wrap: tuple[bool, bool] = (False, False)
                 ) -> np.ndarray:
    """A region mask's weights in [0, 1] over its latent ``box``: its cells blurred by its
    ``blur`` (round the axes ``wrap`` names), at latent resolution, cropped (blurred over the
    whole canvas first, as a brush's, so a mask reaching the box's edge is not faded there)."""
    top, bottom, left, right = box
    blurred = gaussian_blur(mask.cells, mask.blur / CELL, wrap)
    return cells_to_latent(blurred, f)[top:bottom, left:right]
