"""Masks and the background photo of a canvas: read, checked against the canvas, planned.

A brush's mask, or a text, image or reroll region's, is a canvas-sized image (its alpha channel
if it has one, else its grey level), kept as its mean per 8x8 cell (`load_mask`,
`plan_region_mask`). A ``[background]`` with an ``image`` turns the canvas into an inpainting
canvas (StreamMultiDiffusion's editing of a photo): the regions repaint only their areas
(`repaint_area`: where a mask is at least half on, inside the box of a text, image or reroll
region; a region without a mask over its whole box), and everything else is the photo, pixel
for pixel. The background prompt covers what no brush or text region covers
(`background_cells`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hypermosaic.canvas.config import CanvasConfig
from hypermosaic.canvas.regions import PIXEL_MULTIPLE, MaskedRegion, TextRegion
from hypermosaic.errors import InputError
from hypermosaic.images import MAX_INPUT_PIXELS, load_image

__all__ = [
    "CELL",
    "BackgroundPlan",
    "RegionMask",
    "background_cells",
    "digest",
    "load_mask",
    "plan_background",
    "plan_region_mask",
    "read_mask",
    "repaint_area",
]

CELL = PIXEL_MULTIPLE
REPAINT_LEVEL = 0.5  # a brush repaints where its mask is at least half on (diffusers binarises)


def digest(array: np.ndarray) -> str:
    """A short hash of an array's values and shape (for task keys and plan equality)."""
    return hashlib.blake2b(array.tobytes() + str(array.shape).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class BackgroundPlan:
    """The photo a canvas starts from (uint8 ``(H, W, 3)``), the pixels the regions repaint
    (bool ``(H, W)``) and the inward ``feather`` of their edge in pixels."""

    feather: int
    digest: str
    pixels: np.ndarray = field(compare=False, repr=False)
    repaint: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class RegionMask:
    """A text, image or reroll region's mask: ``cells`` its mean per 8x8 cell of the canvas,
    in [0, 1], its weights blurred by ``blur`` pixels (standard deviation)."""

    blur: float
    digest: str
    cells: np.ndarray = field(compare=False, repr=False)


def read_mask(path: Path, height: int, width: int, key: str) -> np.ndarray:
    """A mask image as float32 ``(H, W)`` in [0, 1]: its alpha channel if it has one, else its
    grey level. `InputError` naming ``key`` if unreadable or not the canvas's size."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise InputError(f"{key}: {path} has more pixels than the {MAX_INPUT_PIXELS:,} "
                                 "allowed")
            if (image.width, image.height) != (width, height):
                raise InputError(
                    f"{key}: {path} is {image.width}x{image.height} but the canvas is "
                    f"{width}x{height}; a mask must have the canvas's size"
                )
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            plane = image.convert("RGBA").getchannel("A") if has_alpha else image.convert("L")
            return np.asarray(plane, np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(f"{key}: {path}: no such mask file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{key}: {path}: not a readable image ({exc})") from None


def load_mask(path: Path, height: int, width: int, key: str) -> np.ndarray:
    """A brush mask (`read_mask`) as its mean per 8x8 cell in [0, 1]."""
    values = read_mask(path, height, width, key)
    return values.reshape(height // CELL, CELL, width // CELL, CELL).mean(axis=(1, 3))


def plan_region_mask(region: MaskedRegion, index: int, height: int, width: int
                     ) -> RegionMask | None:
    """The `RegionMask` of a region with a ``mask``, else None (`load_mask`'s errors)."""
    if region.mask is None:
        return None
    cells = load_mask(region.mask, height, width, f"regions.{index}.mask")
    return RegionMask(region.blur, digest(cells), cells)


def repaint_area(config: CanvasConfig, height: int, width: int) -> np.ndarray:
    """The pixels the regions of ``config`` repaint over its background photo, bool ``(H, W)``:
    the union of their masks (at least half on; a box region's inside its box) and of the
    boxes of box regions without a mask."""
    area = np.zeros((height, width), bool)
    for index, region in enumerate(config.regions):
        box = region.box if isinstance(region, MaskedRegion) else (0, height, 0, width)
        top, bottom, left, right = box
        if region.mask is None:
            area[top:bottom, left:right] = True
        else:
            on = read_mask(region.mask, height, width, f"regions.{index}.mask") >= REPAINT_LEVEL
            area[top:bottom, left:right] |= on[top:bottom, left:right]
    return area


def background_cells(config: CanvasConfig, brushes: list[np.ndarray], cells: tuple[int, int]
                     ) -> np.ndarray:
    """The background prompt's cells: 1 where no brush (``brushes``: their cells) covers, and,
    over a photo, no text region either (its box, or its mask's cells inside its box)."""
    covered = sum(brushes, np.zeros(cells, np.float32))
    if config.background is not None and config.background.image is not None:
        height, width = (side * CELL for side in cells)
        for index, region in enumerate(config.regions):
            if isinstance(region, TextRegion):
                top, bottom, left, right = (edge // CELL for edge in region.box)
                mask = plan_region_mask(region, index, height, width)
                covered[top:bottom, left:right] += (
                    1.0 if mask is None else mask.cells[top:bottom, left:right]
                )
    return 1.0 - np.clip(covered, 0.0, 1.0)


def plan_background(config: CanvasConfig, height: int, width: int) -> BackgroundPlan | None:
    """The `BackgroundPlan` of a config whose ``[background]`` has an ``image``, else None;
    `InputError` naming ``background.image`` for a missing file or a photo of another size."""
    background = config.background
    if background is None or background.image is None:
        return None
    try:
        pixels = load_image(background.image)
    except InputError as exc:
        raise InputError(f"background.image: {exc}") from None
    if pixels.shape[:2] != (height, width):
        raise InputError(
            f"background.image: {background.image} is {pixels.shape[1]}x{pixels.shape[0]} but "
            f"the canvas is {width}x{height}; the photo must have the canvas's size"
        )
    pixels = np.ascontiguousarray(pixels)
    repaint = repaint_area(config, height, width)
    return BackgroundPlan(background.feather, digest(pixels) + digest(repaint), pixels, repaint)
