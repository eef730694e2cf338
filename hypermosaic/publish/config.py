"""What publishing writes beside a build's node images: the ``[publish]`` table of a config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from hypermosaic.settings import Strict

__all__ = ["PublishConfig"]


class PublishConfig(Strict):
    """DeepZoom pyramid (tile size and format; default: the node size and format), a preview
    PNG of ``preview`` pixels a side, and optionally a tiled pyramidal BigTIFF."""

    deepzoom: bool = True
    tile_size: Annotated[int, Field(ge=16, le=4096)] | None = None
    tile_format: Literal["jpeg", "png", "webp"] | None = None
    tiff: bool = False
    preview: Annotated[int, Field(ge=16, le=16384)] = 1024
