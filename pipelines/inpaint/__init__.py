"""Stable Diffusion inpainting (issue 14): a masked region repainted with the rest of the picture
as context, by an inpainting UNet or by masked latent blending with any SD model.

`InpaintEngine` gives several candidates of one `InpaintJob`, one per seed, composited so that
pixels outside the mask are the input's. The core reaches it through `hypermosaic.registry`
(`inpaint_engine`).
"""

from __future__ import annotations

from hypermosaic.pipelines.inpaint.engine import (
    INPAINTING_CHANNELS,
    InpaintEngine,
    InpaintJob,
    composite,
    feather_weights,
    inside,
)

__all__ = [
    "INPAINTING_CHANNELS",
    "InpaintEngine",
    "InpaintJob",
    "composite",
    "feather_weights",
    "inside",
]
