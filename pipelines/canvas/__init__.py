"""Mixture-of-diffusers canvases on the torch side: the loop, its windows, masks and VAE.

- `loop`: `render_canvas(pipe, plan, callback)`, one denoising loop over a whole
  `hypermosaic.canvas.plan.CanvasPlan` (Stable Diffusion 1.x/2.x, SDXL and their LCM and
  inpainting forms); `check_pipeline` refuses a model it cannot drive.
- `conditioning`: the texts' embeddings, and SDXL's pooled embeddings and per-window time ids.
- `predict`: the batched UNet calls of a step; `photo`: canvases over a background photo.
- `windows`: the latent windows of tiles, text regions and brushes, guidance and the blend.
- `masks`: the weight profiles of windows and the blur of brush masks (numpy only).
- `tiled_vae`: VAE encode and decode in overlapping tiles, for canvases larger than memory.

The core reaches it through `hypermosaic.registry` (``canvas.render``) only.
"""

from __future__ import annotations

from hypermosaic.pipelines.canvas.loop import (
    StepCallback,
    check_pipeline,
    initial_noise,
    render_canvas,
)
from hypermosaic.pipelines.canvas.predict import CallSize
from hypermosaic.pipelines.canvas.tiled_vae import (
    cpu_vae,
    decode_tiled,
    encode_tiled,
    vae_scale_factor,
)
from hypermosaic.pipelines.canvas.windows import (
    Window,
    blend,
    guidance_embedding,
    guided,
    window_input,
)

__all__ = [
    "CallSize",
    "StepCallback",
    "Window",
    "blend",
    "check_pipeline",
    "cpu_vae",
    "decode_tiled",
    "encode_tiled",
    "guidance_embedding",
    "guided",
    "initial_noise",
    "render_canvas",
    "vae_scale_factor",
    "window_input",
]
