"""Colour correction of an inpainted artwork: the grey or faintly green cast of a white wall.

An artwork inpainted into a frame takes its light from the room around it; a white wall or
shelf under indoor light pulls it towards grey-green. `balance_cast` removes such a cast by
white balance: the light's colour is estimated from the artwork itself (shades of grey,
Finlayson & Trezzi 2004) and divided out per channel in linear light (von Kries).
"""

from __future__ import annotations

import math

import numpy as np

from hypermosaic.errors import InputError

__all__ = ["balance_cast", "cast_gains"]

# Minkowski norm of the estimate: 1 is grey world, infinity is white patch (max-RGB); 6 is
# the published compromise, robust to one dominant colour and to a few bright outliers.
NORM = 6.0
# No channel is scaled by more than this factor, or less than its inverse: a strongly
# coloured artwork is then only nudged, never turned into its complement.
MAX_GAIN = 2.0
# Pixels with a channel at 250 or more are clipped (their colour is lost) and those with
# every channel under 5 mostly noise: both are left out of the estimate.
_CLIPPED, _DARK = 250, 5
_SAMPLES = 1 << 20
_REC709 = np.array([0.2126, 0.7152, 0.0722])


def _to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def cast_gains(rgb: np.ndarray) -> np.ndarray:
    """The three linear-light gains that make ``rgb``'s estimated light neutral.

    Normalised so that the light's luminance is unchanged (only its colour goes), clamped to
    [1 / `MAX_GAIN`, `MAX_GAIN`]; ones when no pixel is usable (black, white or clipped).
    """
    step = max(1, math.isqrt(rgb.shape[0] * rgb.shape[1] // _SAMPLES))
    pixels = rgb[::step, ::step].reshape(-1, 3)
    usable = (pixels.max(axis=1) < _CLIPPED) & (pixels.max(axis=1) >= _DARK)
    if not usable.any():
        return np.ones(3)
    linear = _to_linear(pixels[usable] / 255.0)
    light = np.mean(linear**NORM, axis=0) ** (1 / NORM)
    if light.min() <= 0:  # a channel absent from every usable pixel: nothing to divide
        return np.ones(3)
    gains = float(_REC709 @ light) / light
    return np.asarray(np.clip(gains, 1 / MAX_GAIN, MAX_GAIN))


def balance_cast(rgb: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``rgb`` (HxWx3 uint8 sRGB) with its colour cast removed by ``strength`` (0 to 1).

    What it does: estimates the colour of the light from the artwork (`cast_gains`) and
    scales each channel in linear light by its gain raised to ``strength``, so 1 makes that
    estimate neutral grey of the same luminance and 0 returns the same bytes. Whites and
    greys lose their tint; every colour shifts by the same per-channel factor, so hues keep
    their relations; a channel raised by a gain above 1 may clip in its brightest pixels.
    It does not add contrast or saturation to a washed-out picture.

    When not to use it: an artwork whose overall colour is meant (a sunset, a green forest,
    a sepia drawing) reads as a cast and is pulled towards grey, at most by a factor of
    `MAX_GAIN` per channel; use a lower strength, or none. Raises `InputError` for an image
    that is not HxWx3 uint8, or a strength outside [0, 1].
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"colour correction: need an HxWx3 uint8 image, got {rgb.dtype} "
                         f"of shape {rgb.shape}")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"colour strength: must be between 0 and 1, got {strength}")
    if strength == 0.0:
        return rgb.copy()
    gains = cast_gains(rgb) ** strength
    # The correction per channel is a function of the byte alone: one 256-entry table each.
    levels = _to_linear(np.arange(256) / 255.0)
    tables = np.rint(_to_srgb(levels[:, None] * gains[None, :]) * 255.0).astype(np.uint8)
    return np.stack([tables[rgb[..., c], c] for c in range(3)], axis=-1)
