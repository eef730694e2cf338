"""ControlNet in configs: the ``controlnet = { model, scale, image }`` schema, torch-free.

A ControlNet steers each UNet call with an image: ControlNet Tile with the very pixels being
redrawn keeps their structure where colours alone would drift. The build (``[diffusion]``)
conditions each tile's img2img on the tile itself (``image = "tile"``); a canvas conditions each
window on its crop of one control image of the canvas's size (``image = "path.png"``, or
``"tile"`` for the background photo). Only a resize is done to a control image, no
preprocessor: ControlNets that take an image as it is (Tile, and any other fed with an image
prepared for it, such as a depth map or an edge image) work.

The model is checked against the base model on the client before any work
(`hypermosaic.registry.check_controlnet`) and loaded once per worker
(`hypermosaic.pipelines.controlnet`). What decides the pixels is in `controlnet_identity`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from hypermosaic.identity import file_digest, model_file_digest
from hypermosaic.settings import Strict

__all__ = [
    "TILE_IMAGE",
    "ControlNetSetting",
    "ControlNetSpec",
    "TileControlNet",
    "controlnet_identity",
    "controlnet_setting",
    "resolve_controlnet_paths",
]

TILE_IMAGE = "tile"

ControlNetSetting = tuple[str, float]
"""``(model, scale)`` of a ControlNet: hashable, for a worker's model cache key."""


class ControlNetSpec(Strict):
    """A ControlNet: its ``model`` (a diffusers folder, or a Hugging Face id in the local
    cache), the ``scale`` its residuals are added at (0: no effect) and the control ``image``
    (``"tile"``: the pixels being redrawn; a canvas also takes an image file)."""

    model: str
    scale: Annotated[float, Field(ge=0, le=4)] = 1.0
    image: str = TILE_IMAGE


def _tile_only(spec: ControlNetSpec) -> ControlNetSpec:
    if spec.image != TILE_IMAGE:
        raise ValueError(f"image = {spec.image!r}: only a canvas takes a control image file; "
                         'here each tile is conditioned on its own pixels (image = "tile")')
    return spec


TileControlNet = Annotated[ControlNetSpec, AfterValidator(_tile_only)]
"""A ControlNet that conditions each tile (a build's, a detail pass's window) on itself."""


def resolve_controlnet_paths(table: Any, base: Path) -> None:
    """Make a relative ``controlnet.model`` folder and ``controlnet.image`` file in ``table`` (a
    raw config table, as read from TOML) relative to the config file's folder ``base``, in
    place; Hugging Face ids and ``"tile"`` are left as they are."""
    spec = table.get("controlnet") if isinstance(table, dict) else None
    if not isinstance(spec, dict):
        return
    for key in ("model", "image"):
        value = spec.get(key)
        if isinstance(value, str) and value != TILE_IMAGE and (base / value).exists():
            spec[key] = str(base / value)


def controlnet_setting(spec: ControlNetSpec | None) -> ControlNetSetting | None:
    """What a worker loads and applies, or None without a ControlNet."""
    return None if spec is None else (spec.model, spec.scale)


def controlnet_identity(spec: ControlNetSpec, key: str) -> dict[str, Any]:
    """The ControlNet as fingerprinted: its model (name, and a single file's digest), scale and
    image (a file by content); `InputError` naming ``key`` if a file cannot be read."""
    image = spec.image
    if image != TILE_IMAGE:
        image = file_digest(Path(image), f"{key}.image")
    return {"model": spec.model, "model_file": model_file_digest(spec.model, f"{key}.model"),
            "scale": spec.scale, "image": image}
