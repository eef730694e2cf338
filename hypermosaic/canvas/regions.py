"""Canvas regions and the value types every canvas config shares.

Boxes are pixels, ``top``, ``bottom``, ``left``, ``right`` with the bottom and right edges
excluded, every edge a multiple of 8 (one Stable Diffusion latent position). A prompt is a
string or an ensemble of weighted prompts whose conditioned predictions are averaged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from hypermosaic.settings import Strict

__all__ = [
    "BrushRegion",
    "Ensemble",
    "Guidance",
    "ImageRegion",
    "MaskType",
    "PIXEL_MULTIPLE",
    "Prompt",
    "REGION_KINDS",
    "Region",
    "RerollRegion",
    "Seed",
    "SeedMode",
    "TextRegion",
    "multiple_of_8",
]

PIXEL_MULTIPLE = 8
REGION_KINDS = ("text", "image", "reroll", "brush")
MaskType = Literal["constant", "gaussian", "quartic"]
SeedMode = Literal["full", "exclusive"]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Guidance = Annotated[float, Field(ge=0, le=50)]

# A prompt, or an ensemble of prompts whose conditioned predictions are averaged by weight.
Ensemble = tuple[tuple[str, float], ...]


def _parse_ensemble(value: Any) -> Ensemble:
    """``"a"``, ``["a", "b"]`` or ``[{text = "a", weight = 2}, "b"]`` -> ``(("a", 2.0), ...)``."""
    if isinstance(value, str):
        return ((value, 1.0),)
    if not isinstance(value, list | tuple):
        raise ValueError("a prompt is a string or a list of prompts (strings or {text, weight})")
    if not value:
        raise ValueError("an empty list of prompts; give at least one")
    members = []
    for item in value:
        if isinstance(item, str):
            members.append((item, 1.0))
        elif isinstance(item, dict) and set(item) <= {"text", "weight"} and "text" in item:
            members.append((item["text"], item.get("weight", 1.0)))
        elif isinstance(item, list | tuple) and len(item) == 2:
            members.append((item[0], item[1]))
        else:
            raise ValueError(
                f"{item!r} is not a prompt (a string, or a table with text and weight)"
            )
    for text, weight in members:
        if not isinstance(text, str):
            raise ValueError(f"prompt text {text!r} is not a string")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise ValueError(f"prompt weight {weight!r} must be a positive number")
    return tuple((text, float(weight)) for text, weight in members)


Prompt = Annotated[Ensemble, BeforeValidator(_parse_ensemble)]




def multiple_of_8(value: int, key: str) -> None:
    if value % PIXEL_MULTIPLE:
        raise ValueError(f"{key}: {value} is not a multiple of {PIXEL_MULTIPLE}")


class BoxRegion(Strict):
    """A rectangle of the canvas in pixels; bottom and right are excluded."""

    top: Annotated[int, Field(ge=0)]
    bottom: Annotated[int, Field(gt=0)]
    left: Annotated[int, Field(ge=0)]
    right: Annotated[int, Field(gt=0)]

    @model_validator(mode="after")
    def _geometry(self) -> BoxRegion:
        for key in ("top", "bottom", "left", "right"):
            multiple_of_8(getattr(self, key), key)
        if self.bottom <= self.top:
            raise ValueError(f"bottom: {self.bottom} is not below top {self.top}")
        if self.right <= self.left:
            raise ValueError(f"right: {self.right} is not right of left {self.left}")
        return self

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` in pixels."""
        return self.top, self.bottom, self.left, self.right


class TextRegion(BoxRegion):
    """A prompt (or ensemble) diffusing in a box, weighted by a mask profile."""

    kind: Literal["text"] = "text"
    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None
    mask_type: MaskType = "gaussian"
    mask_weight: Annotated[float, Field(ge=0)] = 1.0
    seed: Seed | None = None
    noise_eps: Annotated[float, Field(ge=0)] = 0.0


class ImageRegion(BoxRegion):
    """A reference image rescaled to the box; ``strength`` is img2img's (0 keeps the image)."""

    kind: Literal["image"]
    image: Path
    strength: Annotated[float, Field(ge=0, le=1)] = 0.5
    seed: Seed | None = None
    noise_eps: Annotated[float, Field(ge=0)] = 0.0


class RerollRegion(BoxRegion):
    """New initial noise in a box: ``reset`` replaces it, ``epsilon`` adds ``noise_eps`` of it."""

    kind: Literal["reroll"]
    mode: Literal["reset", "epsilon"] = "reset"
    seed: Seed
    noise_eps: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _eps(self) -> RerollRegion:
        if self.mode == "epsilon" and self.noise_eps <= 0:
            raise ValueError('noise_eps: must be above 0 for mode = "epsilon"')
        return self


class BrushRegion(Strict):
    """A semantic brush: a prompt over the white (or opaque) area of a canvas-sized PNG mask."""

    kind: Literal["brush"]
    mask: Path
    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None
    strength: Annotated[float, Field(ge=0)] = 1.0
    blur: Annotated[float, Field(ge=0, le=1024)] = 0.0


def _region_kind(value: Any) -> str:
    kind = value.get("kind", "text") if isinstance(value, dict) else getattr(value, "kind", "")
    return kind if kind in REGION_KINDS else "text"


Region = Annotated[
    Annotated[TextRegion, Tag("text")]
    | Annotated[ImageRegion, Tag("image")]
    | Annotated[RerollRegion, Tag("reroll")]
    | Annotated[BrushRegion, Tag("brush")],
    Discriminator(_region_kind),
]
