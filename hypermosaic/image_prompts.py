"""Image prompts' settings: the schema every command's config shares (docs/image-prompts.md).

An image prompt steers a prompt's token embeddings towards a picture's CLIP image embeddings
(`hypermosaic.pipelines.image_prompt.guidance`, after flexdiffuse). This torch-free model mirrors
that module's `ImagePromptSettings` (same names, defaults and ranges) and adds where the picture
and the CLIP vision model come from. ``method = "ip_adapter"`` runs diffusers' IP-Adapter
instead (`hypermosaic.pipelines.image_prompt.ip_adapter`): its weights and scale are the
``ip_adapter*`` keys, and the flex settings are then unused. A partial table (a build's
``[levels.N.image_prompt]``) is laid over a full one with `merge_image_prompts`: only the keys a
table sets count.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from hypermosaic.settings import Strict

__all__ = [
    "DEFAULT_VISION_MODEL",
    "GUIDANCE_KEYS",
    "IP_ADAPTER",
    "IP_ADAPTER_KEYS",
    "TILE",
    "ImagePromptConfig",
    "merge_image_prompts",
]

DEFAULT_VISION_MODEL = "openai/clip-vit-large-patch14"  # SD 1.x's text encoder is its text half
TILE = "tile"  # build: each node is guided by the tile it replaces
IP_ADAPTER = "ip_adapter"  # the method that runs diffusers' IP-Adapter

Weight = Annotated[float, Field(ge=-1, le=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class ImagePromptConfig(Strict):
    """One image prompt: the picture, the guidance settings and the CLIP vision model.

    ``image``: ``"tile"`` (build only) or an image file. ``space = "auto"`` resolves to
    ``"projected"`` where the text encoder has a projection and to ``"hidden"`` (the seed's own
    way) where it has none, as SD 1.x's. ``concept``: the concept-mapping second prompt.
    ``ip_adapter``: a folder, a cached Hugging Face id or a ``.safetensors`` file, with
    ``ip_adapter_subfolder`` and ``ip_adapter_weight_name`` as diffusers' ``load_ip_adapter``
    takes them; ``ip_adapter_scale`` is its ``set_ip_adapter_scale``.
    """

    image: str | None = None
    method: Literal["flex", "image_only", "ip_adapter"] = "flex"
    linear_start: Weight = 0.1
    linear_end: Weight = 0.5
    clustered: Weight = 0.25
    cluster_floor: Fraction | None = None
    threshold: Weight = 0.25
    threshold_floor: Fraction | None = 0.75
    max_image_guidance: Fraction = 0.35
    header_cap: Fraction = 0.15
    concept_alignment: Fraction = 0.9
    logit_scale: Annotated[float, Field(ge=1e-3, le=1e3)] = 100.0
    space: Literal["auto", "projected", "hidden"] = "auto"
    vision_model: str = DEFAULT_VISION_MODEL
    vision_config: str | None = None
    concept: str | None = None
    ip_adapter: str | None = None
    ip_adapter_subfolder: str = ""
    ip_adapter_weight_name: str | None = None
    ip_adapter_scale: Annotated[float, Field(ge=0, le=2)] = 1.0

    @property
    def guidance(self) -> dict[str, Any]:
        """The settings `ImagePromptSettings` takes (``space`` still possibly ``auto``)."""
        return {key: getattr(self, key) for key in GUIDANCE_KEYS}


IP_ADAPTER_KEYS = tuple(key for key in ImagePromptConfig.model_fields
                        if key.startswith("ip_adapter"))
GUIDANCE_KEYS = tuple(key for key in ImagePromptConfig.model_fields
                      if key not in ("image", "vision_model", "vision_config", "concept",
                                     *IP_ADAPTER_KEYS))


def merge_image_prompts(*layers: ImagePromptConfig | None) -> ImagePromptConfig | None:
    """The keys each layer sets, later layers winning; None when no layer is given."""
    given = [layer for layer in layers if layer is not None]
    if not given:
        return None
    merged: dict[str, Any] = {}
    for layer in given:
        merged.update(layer.model_dump(exclude_unset=True))
    return ImagePromptConfig(**merged)
