"""The build's diffusion tile engine: Stable Diffusion img2img over batches of sibling tiles.

`DiffusionEngine` implements `hypermosaic.build.engines.Engine` (a primary image from a prompt,
sub-images from tiles); `to_uint8` rounds the pipelines' float images to uint8 pixels. The core
reaches it through `hypermosaic.registry` (``engine.diffusion``) only.
"""

from __future__ import annotations

from hypermosaic.pipelines.img2img.engine import DiffusionEngine, to_uint8

__all__ = ["DiffusionEngine", "to_uint8"]
