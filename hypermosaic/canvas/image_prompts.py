"""Image prompts on canvas text regions (docs/canvas.md, docs/image-prompts.md).

A text region's ``image_prompt`` is the build's ``[image_prompt]`` table
(`hypermosaic.image_prompts.ImagePromptConfig`) with ``image`` an image file, or that file's
path alone (``image_prompt = "style.png"``, every setting at its default). Planning reads the
image once, crops its central square and resizes it to `GUIDE_SIDE` (above any CLIP input
size; the vision model's own preprocessing makes its input from it), so that workers read no
files; the region's prompt embeddings are then moved once per canvas on the torch side
(`hypermosaic.pipelines.image_prompt.canvas`). Methods: ``flex`` and ``image_only``
(`CANVAS_METHODS`); diffusers' IP-Adapter is refused on canvases for now.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BeforeValidator

from hypermosaic.errors import InputError
from hypermosaic.image_prompts import TILE, ImagePromptConfig
from hypermosaic.images import load_image, resize, square_crop

__all__ = [
    "CANVAS_METHODS",
    "GUIDE_SIDE",
    "ImagePromptPlan",
    "RegionImagePrompt",
    "plan_image_prompt",
]

GUIDE_SIDE = 512
CANVAS_METHODS = ("flex", "image_only")  # not (yet) diffusers' IP-Adapter


def _shorthand(value: Any) -> Any:
    """``"style.png"`` -> ``{"image": "style.png"}``."""
    return {"image": value} if isinstance(value, str) else value


def _for_canvas(prompt: ImagePromptConfig) -> ImagePromptConfig:
    """ValueError naming the key unless ``prompt`` has an image file and a method canvases run."""
    if prompt.image is None:
        raise ValueError("image: missing (an image file)")
    if prompt.image == TILE:
        raise ValueError(f'image: "{TILE}" is for builds; a canvas region needs an image file')
    if prompt.method not in CANVAS_METHODS:
        raise ValueError(f"method: {prompt.method!r} is not supported on canvas regions yet "
                         f"(use {' or '.join(CANVAS_METHODS)})")
    return prompt


RegionImagePrompt = Annotated[ImagePromptConfig, BeforeValidator(_shorthand),
                              AfterValidator(_for_canvas)]
"""A region's image prompt: a table with ``image``, or an image file's path alone."""


@dataclass(frozen=True)
class ImagePromptPlan:
    """A region's image prompt: its settings (`ImagePromptConfig`'s, ``image`` aside) and its
    image (uint8, `GUIDE_SIDE` square), which the ``digest`` stands for in keys and repr."""

    settings: tuple[tuple[str, Any], ...]
    digest: str
    pixels: np.ndarray = field(compare=False, repr=False)

    @property
    def items(self) -> dict[str, Any]:
        """The settings as a dict."""
        return dict(self.settings)


def plan_image_prompt(prompt: ImagePromptConfig, key: str) -> ImagePromptPlan:
    """``prompt`` with its image read; `InputError` naming ``key.image`` if it cannot be."""
    assert prompt.image is not None  # RegionImagePrompt requires one
    try:
        image = load_image(prompt.image)
    except InputError as exc:
        raise InputError(f"{key}.image: {exc}") from None
    pixels = np.ascontiguousarray(resize(square_crop(image), GUIDE_SIDE, GUIDE_SIDE))
    digest = hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest()
    settings = tuple(sorted(prompt.model_dump(exclude={"image"}).items()))
    return ImagePromptPlan(settings, digest, pixels)
