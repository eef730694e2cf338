"""A canvas's ControlNet, planned: the control image's pixels at the canvas's size and the
scale (`hypermosaic.controlnet` has the schema). Every window sees its crop of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hypermosaic.canvas.background import BackgroundPlan, digest
from hypermosaic.canvas.config import CanvasConfig
from hypermosaic.controlnet import TILE_IMAGE
from hypermosaic.errors import InputError
from hypermosaic.images import load_image

__all__ = ["ControlPlan", "plan_control"]


@dataclass(frozen=True)
class ControlPlan:
    """The ControlNet ``model``, its control image (``(H, W, 3)`` uint8, the canvas's size,
    identified by ``digest``) and the ``scale`` of its residuals."""

    model: str
    scale: float
    digest: str
    pixels: np.ndarray = field(compare=False, repr=False)


def plan_control(config: CanvasConfig, height: int, width: int,
                 background: BackgroundPlan | None) -> ControlPlan | None:
    """The `ControlPlan` of ``config``'s ``controlnet`` (None without one): its image file, or
    with ``image = "tile"`` the background photo. `InputError` naming ``controlnet.image`` for
    a missing or unreadable file, one of another size, or ``"tile"`` with no photo."""
    spec = config.controlnet
    if spec is None:
        return None
    if spec.image == TILE_IMAGE:
        if background is None:
            raise InputError('controlnet.image: "tile" conditions the windows on the '
                             "background photo, and the canvas has none (give an image file)")
        pixels = background.pixels
    else:
        try:
            pixels = load_image(spec.image)
        except InputError as exc:
            raise InputError(f"controlnet.image: {exc}") from None
        if pixels.shape[:2] != (height, width):
            raise InputError(f"controlnet.image: {spec.image} is {pixels.shape[1]}x"
                             f"{pixels.shape[0]} but the canvas is {width}x{height}")
    return ControlPlan(spec.model, spec.scale, digest(pixels), pixels)
