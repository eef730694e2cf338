"""Seamless tiled upscaling: overlapping windows, feathered weights, bands of finished rows.

The image is cut into windows that overlap by `overlap` input pixels. Along each axis a window
weighs its pixels 0 in the outer quarter of an overlap (where the missing context around a
tile edge shows), then ramps linearly to 1, so neighbouring weights cross-fade:

    out(y, x) = sum_t wy_t(y) * wx_t(x) * tile_t(y, x),   with sum_t wy_t = sum_t wx_t = 1,

each axis normalised on its own (every row of windows has the same columns, so the 2-D weight
sum factors). Rows of windows are produced top to bottom; once a row is done, every output
row above the next window row is final and is handed out, so memory holds one band of the
output (window height x full width), never the whole image. `upscale_array` collects the
bands; the pyvips streaming path in `hypermosaic.upscale.run` writes them out as they come.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from hypermosaic.errors import InputError
from hypermosaic.images import resize
from hypermosaic.pipelines.esrgan.upscaler import Upscaler
from hypermosaic.pipelines.models import is_out_of_memory
from hypermosaic.tiling import DEFAULT_OVERLAP, tile_windows

__all__ = [
    "axis_weights",
    "upscale_tile",
    "upscale_bands",
    "upscale_array",
    "enlarge",
]

_MIN_TILE = 16


def axis_weights(windows: list[tuple[int, int]], overlap: int, scale: int) -> list[np.ndarray]:
    """Per-window feather weights in output pixels, normalised to sum to 1 at every position.

    At an edge shared with a neighbour: 0 over `overlap // 4`, then a linear ramp over
    `overlap - 2 * (overlap // 4)`; image borders keep full weight.
    """
    pad, ramp = (overlap // 4) * scale, (overlap - 2 * (overlap // 4)) * scale
    edge = np.clip((np.arange(max(pad + ramp, 1)) - pad + 0.5) / max(ramp, 1), 0.0, 1.0)
    length = windows[-1][1] * scale
    raw, total = [], np.zeros(length, np.float64)
    for index, (start, stop) in enumerate(windows):
        w = np.ones((stop - start) * scale, np.float64)
        n = min(len(edge), len(w))
        if index > 0:
            w[:n] *= edge[:n]
        if index < len(windows) - 1:
            w[len(w) - n :] *= edge[:n][::-1]
        raw.append(w)
        total[start * scale : stop * scale] += w
    return [
        (w / total[start * scale : stop * scale]).astype(np.float32)
        for w, (start, stop) in zip(raw, windows, strict=True)
    ]


def upscale_tile(upscaler: Upscaler, pixels: np.ndarray, overlap: int) -> np.ndarray:
    """Upscale one RGB uint8 tile to float32 (h*s, w*s, 3) in 0..1.

    A tile larger than `upscaler.tile` is itself tiled; on an out-of-memory error the
    upscaler's tile is halved (down to 16 px) and the tile retried in smaller pieces.
    """
    height, width = pixels.shape[:2]
    while True:
        try:
            if max(height, width) <= upscaler.tile:
                x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
                y = upscaler(x[None].float().div_(255.0))
                return y[0].permute(1, 2, 0).numpy()
            inner = min(overlap, upscaler.tile // 2)
            bands = upscale_bands(
                _array_reader(pixels), height, width, upscaler, upscaler.tile, inner, as_float=True
            )
            return np.concatenate(list(bands), axis=0)
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(exc) or upscaler.tile // 2 < _MIN_TILE:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            upscaler.tile //= 2


def upscale_bands(
    read_rows: Callable[[int, int], np.ndarray],
    height: int,
    width: int,
    upscaler: Upscaler,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    as_float: bool = False,
    on_tile: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the upscaled image as consecutive bands of finished output rows.

    `read_rows(top, bottom)` returns input rows `top..bottom` as (rows, width, 3) uint8, with
    `top` never decreasing. Bands are uint8, or float32 in 0..1 with `as_float`. `on_tile(n)`
    is called after each window with the number done (1).
    """
    s = upscaler.scale
    tile = tile or upscaler.tile
    overlap = min(overlap, tile - 1)
    rows, cols = tile_windows(height, tile, overlap), tile_windows(width, tile, overlap)
    wy, wx = axis_weights(rows, overlap, s), axis_weights(cols, overlap, s)
    carry = np.zeros((0, width * s, 3), np.float32)
    for r, (top, bottom) in enumerate(rows):
        # 1. Upscale every window of this row and add it, weighted, into a band.
        pixels = read_rows(top, bottom)
        band = np.zeros(((bottom - top) * s, width * s, 3), np.float32)
        for (left, right), w in zip(cols, wx, strict=True):
            y = upscale_tile(upscaler, pixels[:, left:right], overlap)
            y *= wy[r][:, None, None]
            y *= w[None, :, None]
            band[:, left * s : right * s] += y
            if on_tile is not None:
                on_tile(1)
        # 2. Add what earlier rows left over these output rows.
        band[: len(carry)] += carry
        # 3. Rows above the next window row are final: hand them out, keep the rest.
        done = (rows[r + 1][0] - top) * s if r + 1 < len(rows) else len(band)
        carry = band[done:].copy()
        final = band[:done]
        yield final if as_float else _to_uint8(final)
        del band, final  # release this band before the next one is allocated


def _to_uint8(x: np.ndarray) -> np.ndarray:
    x *= 255.0
    x += 0.5
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _array_reader(image: np.ndarray) -> Callable[[int, int], np.ndarray]:
    return lambda top, bottom: image[top:bottom]


def upscale_array(
    upscaler: Upscaler,
    image: np.ndarray,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    wrap: str = "none",
) -> np.ndarray:
    """Upscale an RGB uint8 array (H, W, 3) to (H*s, W*s, 3) uint8, tiled and seamless.

    `tile` (input pixels) defaults to the upscaler's, which suits its device. `wrap` (``"x"``,
    ``"xy"``: a panorama's or a texture's edges that join) pads the image round those edges
    by twice `overlap` pixels before upscaling and crops after, so the tiles see across the
    seam with the context of an interior pixel.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if wrap != "none":
        return _upscale_ring(upscaler, image, tile, overlap, wrap)
    height, width = image.shape[:2]
    bands = upscale_bands(_array_reader(image), height, width, upscaler, tile, overlap)
    return np.concatenate(list(bands), axis=0)


def _upscale_ring(upscaler: Upscaler, image: np.ndarray, tile: int | None, overlap: int,
                  wrap: str) -> np.ndarray:
    """`upscale_array` of ``image`` padded circularly on the axes ``wrap`` names, cropped."""
    height, width = image.shape[:2]
    my = min(2 * overlap, height) if "y" in wrap else 0
    mx = min(2 * overlap, width) if "x" in wrap else 0
    padded = np.pad(image, ((my, my), (mx, mx), (0, 0)), mode="wrap")
    s = upscaler.scale
    out = upscale_array(upscaler, padded, tile, overlap)
    return np.ascontiguousarray(out[my * s : (my + height) * s, mx * s : (mx + width) * s])


def enlarge(upscaler: Upscaler, image: np.ndarray, size: int) -> np.ndarray:
    """A square RGB uint8 ``image`` enlarged to ``(size, size, 3)``: the model as many times as
    its scale fits (32 px -> 128 -> 512 with a 4x model), `hypermosaic.images.resize` for the
    rest (64 px -> 256, then 512), so ESRGAN never invents detail that is thrown away."""
    if upscaler.scale < 2:
        raise InputError(f"init_upscale: {upscaler.name} does not enlarge (its scale is 1)")
    while image.shape[0] * upscaler.scale <= size:
        image = upscale_array(upscaler, image)
    return resize(image, size, size)
