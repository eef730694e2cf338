"""The detail pass of an upscale on the torch side: img2img in overlapping windows, band by
band (`hypermosaic.upscale.strips` plans the bands).

- `band`: `refine_band(pipe, pixels, band, plan, refine, previous, controlnet=...)`, one
  band's windows denoised together with Mixture of Diffusers blending (each conditioned on its
  own pixels by a ControlNet Tile when one is given), its top rows continuing the previous
  band; `WindowPredictor`, `predict_windows`' signature.
- `noise`: the noise field, drawn from seeds derived from the position of its rows.
- `inversion`: DDIM inversion, noise that starts from the image's own structure.

The core reaches it through `hypermosaic.registry` (``refine.band``) only.
"""

from __future__ import annotations

from hypermosaic.pipelines.refine.band import (
    RefinedBand,
    WindowPredictor,
    band_windows,
    geometry,
    hold_ramp,
    refine_band,
    refine_timesteps,
)
from hypermosaic.pipelines.refine.inversion import invert_noise
from hypermosaic.pipelines.refine.noise import NOISE_ROWS, position_noise

__all__ = [
    "NOISE_ROWS",
    "RefinedBand",
    "WindowPredictor",
    "band_windows",
    "geometry",
    "hold_ramp",
    "invert_noise",
    "position_noise",
    "refine_band",
    "refine_timesteps",
]
