"""Canvas regions and the value types every canvas config shares.

Boxes are pixels, ``top``, ``bottom``, ``left``, ``right`` with the bottom and right edges
excluded, every edge a multiple of 8 (one Stable Diffusion latent position). A prompt is a
string or an ensemble of weighted prompts whose conditioned predictions are averaged.

Guidance scales are capped at `MAX_GUIDANCE`, except in configs validated with the
Mixture of Diffusers context (``context={"compat": MOD}``, what its JSON configs get), which
accept any finite scale as it does. Blend weights (``mask_weight``, a brush's ``strength``) are
0 or within `WEIGHT_RANGE`, so that no region's weights vanish or overflow in float32.
Text, image and reroll regions may act only inside a mask image of the canvas's size, as a
brush does (`MaskedRegion`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    model_validator,
)

from hypermosaic.canvas.image_prompts import RegionImagePrompt
from hypermosaic.settings import Strict

__all__ = [
    "Blur",
    "BrushRegion",
    "Compat",
    "Ensemble",
    "Guidance",
    "HYPERMOSAIC",
    "ImageRegion",
    "MAX_GUIDANCE",
    "MOD",
    "MaskType",
    "MaskedRegion",
    "PIXEL_MULTIPLE",
    "Prompt",
    "REGION_KINDS",
    "REGION_TAGS",
    "Region",
    "RerollRegion",
    "Seed",
    "SeedMode",
    "TextRegion",
    "WEIGHT_RANGE",
    "Weight",
    "is_mod",
    "multiple_of_8",
]

PIXEL_MULTIPLE = 8
REGION_KINDS = ("text", "image", "reroll", "brush")
REGION_TAGS = tuple(f"{kind} region" for kind in REGION_KINDS)
"""The tags of the region union: they appear in validation locations (and are left out of
messages), so they must not be field names (an image region has a field ``image``)."""
MaskType = Literal["constant", "gaussian", "quartic"]
SeedMode = Literal["full", "exclusive"]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Compat = Literal["hypermosaic", "mixture-of-diffusers"]
"""Whose semantics a canvas config runs with: ours, or Mixture of Diffusers' (its JSON)."""
HYPERMOSAIC: Final = "hypermosaic"
MOD: Final = "mixture-of-diffusers"
MAX_GUIDANCE = 50.0
WEIGHT_RANGE = (1e-12, 1e12)


def is_mod(info: ValidationInfo) -> bool:
    """Whether a config is being validated with Mixture of Diffusers' semantics."""
    return isinstance(info.context, dict) and info.context.get("compat") == MOD


def _guidance(value: float, info: ValidationInfo) -> float:
    if not is_mod(info) and not 0 <= value <= MAX_GUIDANCE:
        raise ValueError(f"{value:g} is outside 0 to {MAX_GUIDANCE:g}")
    return value


def _weight(value: float) -> float:
    low, high = WEIGHT_RANGE
    if 0 < value < low:
        raise ValueError(f"{value:g} is too small: the blend's weights would vanish in float32 "
                         f"(give 0 for no weight, or at least {low:g})")
    if value > high:
        raise ValueError(f"{value:g} is too large: the blend's weights would overflow in "
                         f"float32 (at most {high:g})")
    return value


Guidance = Annotated[float, AfterValidator(_guidance)]
"""A classifier-free guidance scale: 0 to 50, any finite value for Mixture of Diffusers."""
Weight = Annotated[float, Field(ge=0), AfterValidator(_weight)]
"""A blend weight multiplier: 0 (no weight) or within `WEIGHT_RANGE`."""
Blur = Annotated[float, Field(ge=0, le=1024)]
"""The standard deviation in pixels of the Gaussian blur of a mask's weights."""

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


def multiple_of_8(value: int, key: str | None = None) -> None:
    """ValueError unless ``value`` is a multiple of 8; the message starts with ``key`` when
    given (for a check made above the key's own level)."""
    if value % PIXEL_MULTIPLE:
        prefix = f"{key}: " if key else ""
        raise ValueError(f"{prefix}{value} is not a multiple of {PIXEL_MULTIPLE}")


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


class MaskedRegion(BoxRegion):
    """A box region that may act only where a canvas-sized ``mask`` image is on (as a brush's
    mask: alpha, else grey level), its weights blurred by ``blur`` pixels."""

    mask: Path | None = None
    blur: Blur = 0.0

    @model_validator(mode="after")
    def _blur_needs_mask(self) -> MaskedRegion:
        if self.blur and self.mask is None:
            raise ValueError("blur: a blur needs a mask; give the region a mask image")
        return self


class TextRegion(MaskedRegion):
    """A prompt (or ensemble) diffusing in a box, weighted by a mask profile, its embeddings
    optionally guided by an image (`hypermosaic.canvas.image_prompts`)."""

    kind: Literal["text"] = "text"
    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None
    mask_type: MaskType = "gaussian"
    mask_weight: Weight = 1.0
    seed: Seed | None = None
    noise_eps: Annotated[float, Field(ge=0)] = 0.0
    image_prompt: RegionImagePrompt | None = None


class ImageRegion(MaskedRegion):
    """A reference image rescaled to the box; ``strength`` is img2img's (0 keeps the image)."""

    kind: Literal["image"]
    image: Path
    strength: Annotated[float, Field(ge=0, le=1)] = 0.5
    seed: Seed | None = None
    noise_eps: Annotated[float, Field(ge=0)] = 0.0


class RerollRegion(MaskedRegion):
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
    strength: Weight = 1.0
    blur: Blur = 0.0


def _region_tag(value: Any) -> str:
    kind = value.get("kind", "text") if isinstance(value, dict) else getattr(value, "kind", "")
    return f"{kind if kind in REGION_KINDS else 'text'} region"


def _known_kind(value: Any) -> Any:
    """ValueError naming ``kind`` when a region's kind is not one of `REGION_KINDS`."""
    if isinstance(value, dict) and value.get("kind", "text") not in REGION_KINDS:
        raise ValueError(f"kind: {value['kind']!r} is not a region kind (use "
                         f"{', '.join(REGION_KINDS)})")
    return value


Region = Annotated[
    Annotated[TextRegion, Tag(REGION_TAGS[0])]
    | Annotated[ImageRegion, Tag(REGION_TAGS[1])]
    | Annotated[RerollRegion, Tag(REGION_TAGS[2])]
    | Annotated[BrushRegion, Tag(REGION_TAGS[3])],
    Discriminator(_region_tag),
    BeforeValidator(_known_kind),
]
