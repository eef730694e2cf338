"""Image prompts checked against a diffusion model before any work, from configs alone.

The vision model must be on the machine (`vision.locate_vision_model`), and its image tokens as
wide as the prompt tokens they are compared with: the text encoder's hidden states
(``space = "hidden"``, the seed's way) or its projection (``"projected"``, which SD 1.x's
``CLIPTextModel`` lacks). Both widths are read from ``config.json`` files, without weights or
torch, so a wrong pairing stops a build with one line naming the key and both sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypermosaic.errors import InputError
from hypermosaic.pipelines.image_prompt.vision import (
    DEFAULT_VISION_MODEL,
    KEY,
    locate_vision_model,
)
from hypermosaic.pipelines.models import read_json_object

__all__ = ["PROJECTION_DIM", "check_vision_model", "resolve_space"]

PROJECTION_DIM = 512  # transformers' CLIPConfig / CLIPVisionConfig / CLIPTextConfig default
SPACE_KEY = "image_prompt.space"


def resolve_space(space: str, has_projection: bool) -> str:
    """``auto``: ``projected`` where the text encoder has a projection, else ``hidden``."""
    if space == "auto":
        return "projected" if has_projection else "hidden"
    return space


def check_vision_model(source: Any, vision_model: str, vision_config: str | None,
                       space: str) -> str:
    """The space image prompts work in with the located diffusion model ``source``
    (`hypermosaic.pipelines.models.ModelSource`); `InputError` naming the key otherwise."""
    folder: Path = source.folder
    index = read_json_object(folder / "model_index.json", "diffusion.model")
    if index.get("text_encoder_2") not in (None, [None, None]):
        raise InputError("image_prompt: models with two text encoders (SDXL) are not "
                         "supported yet; use an SD 1.x or 2.x model")
    text = read_json_object(folder / "text_encoder" / "config.json", "diffusion.model")
    has_projection = "CLIPTextModelWithProjection" in text.get("architectures", [])
    resolved = resolve_space(space, has_projection)
    if resolved == "projected" and not has_projection:
        raise InputError(f"{SPACE_KEY}: 'projected' needs the text encoder's projection, which "
                         "this model's text encoder (a CLIPTextModel, as in SD 1.x) lacks; use "
                         "space = \"hidden\" (or \"auto\")")
    located = locate_vision_model(vision_model, vision_config)
    vision = read_json_object(located.folder / "config.json", KEY)
    width = int(vision.get("projection_dim", PROJECTION_DIM))
    wanted = int(text.get("projection_dim", PROJECTION_DIM) if resolved == "projected"
                 else text.get("hidden_size", 0))
    if width != wanted:
        what = "projection" if resolved == "projected" else "prompt embeddings (hidden states)"
        raise InputError(
            f"{KEY}: {vision_model} projects images to {width} values but the text encoder's "
            f"{what} have {wanted}; use the CLIP vision model paired with this model's text "
            f"encoder (SD 1.x: {DEFAULT_VISION_MODEL})"
        )
    return resolved

