"""The frame plan: every size and coordinate of a frame run, computed from the config, the
photo's size and the mask before any work (pure; bad input raises `InputError` naming the key).

Sizes, in order of the run:

- the inpainting image: the photo scaled (never enlarged) so its long side is the model's native
  side (``inpaint_size`` if given), each side a multiple of 8 as Stable Diffusion needs;
- the rectified frame: the quadrilateral as a rectangle of the print's aspect ratio, its long
  side that of the quadrilateral in the inpainting image;
- the artwork: the rectified frame at the model's size (long side = native side), which img2img
  sees padded to a native square, as the seed's author did by hand;
- the refined artwork (with ``refine_strength``): the artwork ``refine_scale`` times larger,
  sides multiples of 8, which canvas windows of the model's size redraw;
- the print: the trim size at the DPI (`hypermosaic.frame.sizes.PrintSize`), bleed added.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hypermosaic.errors import InputError
from hypermosaic.frame.config import FrameConfig
from hypermosaic.frame.geometry import Corners, check_corners, corners_from_mask
from hypermosaic.frame.sizes import PrintSize, print_size

__all__ = ["FramePlan", "parse_corners", "plan_frame", "scale_corners"]

SIDE_MULTIPLE = 8
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_POINT = re.compile(rf"^\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$")


@dataclass(frozen=True)
class FramePlan:
    """The sizes and coordinates of one frame run (see the module's docstring)."""

    corners: Corners  # the frame's inside in the photo
    print: PrintSize
    work_size: tuple[int, int]  # (width, height) of the inpainting image
    work_corners: Corners
    rectified_size: tuple[int, int]
    artwork_size: tuple[int, int]
    native: int  # the square img2img works at
    refined_size: tuple[int, int] | None  # None: no detail pass
    seeds: tuple[int, ...]
    out: Path

    def candidate_path(self, index: int) -> Path:
        """The file of candidate ``index`` (0-based), named by its number and seed."""
        return self.out / f"candidate-{index + 1}-seed-{self.seeds[index]}.png"


def parse_corners(value: str | list[tuple[float, float]]) -> Corners:
    """``"x1,y1 x2,y2 x3,y3 x4,y4"`` (or four ``[x, y]`` pairs) as a (4, 2) array."""
    if isinstance(value, str):
        points = value.replace(";", " ").split()
        matches = [_POINT.match(point) for point in points]
        if len(points) != 4 or not all(matches):
            raise InputError(f"frame.corners: cannot read {value!r} as four points "
                             "'x1,y1 x2,y2 x3,y3 x4,y4' (top-left, top-right, bottom-right, "
                             "bottom-left)")
        return np.array([[float(m[1]), float(m[2])] for m in matches if m], dtype=np.float64)
    if len(value) != 4:
        raise InputError(f"frame.corners: {len(value)} points given, 4 needed")
    return np.asarray(value, dtype=np.float64)


def scale_corners(corners: Corners, sx: float, sy: float) -> Corners:
    """Corners (pixel centres on whole numbers) in an image scaled by ``sx`` and ``sy``."""
    return (corners + 0.5) * np.array([sx, sy]) - 0.5


def _multiple_of_8(length: float) -> int:
    return max(SIDE_MULTIPLE, round(length / SIDE_MULTIPLE) * SIDE_MULTIPLE)


def _fit(aspect: float, side: int) -> tuple[int, int]:
    """(width, height) of aspect ``width / height`` with its long side ``side``."""
    if aspect >= 1:
        return side, max(2, round(side / aspect))
    return max(2, round(side * aspect)), side


def _refined(config: FrameConfig, artwork: tuple[int, int]) -> tuple[int, int] | None:
    if not config.refine:
        return None
    return (_multiple_of_8(artwork[0] * config.refine_scale),
            _multiple_of_8(artwork[1] * config.refine_scale))


def _corners(config: FrameConfig, width: int, height: int, mask: np.ndarray | None) -> Corners:
    if config.corners is not None and config.mask is not None:
        raise InputError("frame.corners: give the frame's inside as corners or as a mask "
                         "(frame.mask), not both")
    if config.corners is None and mask is None:
        raise InputError("frame.corners: missing (give the frame's inside as four corners "
                         "or as a mask, frame.mask)")
    try:
        if mask is not None:
            return corners_from_mask(mask, width, height)
        assert config.corners is not None
        return check_corners(parse_corners(config.corners), width, height)
    except ValueError as error:
        raise InputError(str(error)) from None


def plan_frame(config: FrameConfig, photo_size: tuple[int, int], mask: np.ndarray | None,
               native: int) -> FramePlan:
    """The plan of ``config`` for a photo of ``photo_size`` (width, height), its frame given by
    ``mask`` (the mask file's pixels) or the config's corners; ``native`` is the model's side.

    Raises `InputError` naming the key: bad corners or mask, size, unit, DPI or bleed, a
    candidate chosen that is not made.
    """
    width, height = photo_size
    try:
        size = print_size(config.size, config.dpi, config.bleed)
    except ValueError as error:
        raise InputError(str(error)) from None
    corners = _corners(config, width, height, mask)
    if config.choose > config.candidates:
        raise InputError(f"frame.choose: candidate {config.choose} is not made "
                         f"(frame.candidates = {config.candidates})")
    # 1. the inpainting image: scaled down to the model's side, sides multiples of 8
    scale = min(1.0, (config.inpaint_size or native) / max(width, height))
    work = (_multiple_of_8(width * scale), _multiple_of_8(height * scale))
    work_corners = np.clip(scale_corners(corners, work[0] / width, work[1] / height), 0,
                           np.array([work[0] - 1, work[1] - 1]))
    # 2. the rectified frame: the print's aspect, the quadrilateral's long side
    sides = np.hypot(*(np.roll(work_corners, -1, axis=0) - work_corners).T)
    aspect = size.width_mm / size.height_mm
    rectified = _fit(aspect, max(2, math.ceil(max(sides))))
    return FramePlan(
        corners=corners,
        print=size,
        work_size=work,
        work_corners=work_corners,
        rectified_size=rectified,
        artwork_size=_fit(aspect, native),
        native=native,
        refined_size=_refined(config, _fit(aspect, native)),
        seeds=tuple(config.seed + index for index in range(config.candidates)),
        out=config.out,
    )
