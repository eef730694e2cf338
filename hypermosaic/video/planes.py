"""Frames as YUV 4:2:0 planes: the one pixel format between the renderer and the encoder.

Regions are converted to BT.709 limited-range YUV once and every frame is resampled, blended and
encoded in that form, so no frame is converted twice. `rgb_to_planes` and `planes_to_rgb` go to
and from RGB through PyAV's own swscale (the same matrix the encoder tags the stream with);
`pack` makes the frame the encoder takes.
"""

from __future__ import annotations

from typing import NamedTuple

import av
import numpy as np
from PIL import Image

__all__ = [
    "COLORSPACE",
    "COLOR_RANGE",
    "Planes",
    "blend_planes",
    "pack",
    "planes_to_rgb",
    "rgb_to_planes",
]

COLORSPACE = "itu709"
COLOR_RANGE = "MPEG"


class Planes(NamedTuple):
    """A frame (or part of one) as 8-bit YUV 4:2:0 planes: ``y`` is HxW, ``u`` and ``v`` H/2xW/2."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


def rgb_to_planes(image: Image.Image) -> Planes:
    """BT.709 limited-range YUV 4:2:0 planes of an RGB image with even sides."""
    frame = av.VideoFrame.from_image(image).reformat(
        format="yuv420p", dst_colorspace=COLORSPACE, dst_color_range=COLOR_RANGE
    )
    return _split(frame.to_ndarray(), image.width, image.height)


def _split(packed: np.ndarray, width: int, height: int) -> Planes:
    """The planes of a ``yuv420p`` array as PyAV packs it (Y rows, then U, then V)."""
    flat = packed.reshape(-1)
    quarter = width * height // 4
    chroma = (height // 2, width // 2)
    y = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height + quarter].reshape(chroma)
    v = flat[width * height + quarter :].reshape(chroma)
    return Planes(y, u, v)


def pack(planes: Planes) -> av.VideoFrame:
    """The ``yuv420p`` video frame of ``planes`` (the inverse of `_split`)."""
    height, width = planes.y.shape
    packed = np.concatenate([p.reshape(-1) for p in planes]).reshape(height * 3 // 2, width)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")


def planes_to_rgb(planes: Planes) -> np.ndarray:
    """The HxWx3 RGB image of a frame (inverse of `rgb_to_planes`, up to rounding)."""
    return pack(planes).reformat(
        format="rgb24", src_colorspace=COLORSPACE, src_color_range=COLOR_RANGE
    ).to_ndarray()


def blend_planes(
    base: Planes, top: Planes, rect: tuple[int, int, int, int], weight: float
) -> None:
    """Blend ``top`` into ``base`` at the even-aligned ``rect`` ``(x0, y0, x1, y1)`` in place.

    ``top`` holds just the pixels of ``rect``; the weight is rounded to 1/256 steps.
    """
    # out = (1 - w) base + w top, in 8.8 fixed point: (base (256 - w) + top w + 128) >> 8
    x0, y0, x1, y1 = rect
    w = round(weight * 256)
    windows = ((slice(y0, y1), slice(x0, x1)), (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2)))
    for plane, over, window in zip(base, top, (windows[0], windows[1], windows[1]), strict=True):
        under = plane[window].astype(np.uint16)
        plane[window] = ((under * (256 - w) + over.astype(np.uint16) * w + 128) >> 8).astype(
            np.uint8
        )
