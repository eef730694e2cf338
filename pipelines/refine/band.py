"""One band of a detail pass: img2img over a row of overlapping windows that step together.

Each window of the band (`hypermosaic.upscale.strips.Band`) is a canvas `Window` with its
prompt and negative prompt, weighted by Mixture of Diffusers' gaussian profile; at each step
their guided predictions go through the UNet in batches (`predict_windows`: windows of one
shape together, ``batch_size`` per call) and are blended (`blend`)::

    eps = sum_j w_j eps_j / sum_j w_j

and one scheduler step moves the whole band. As diffusers' img2img, the band's clean latents
(`encode_tiled`, the VAE's mode) are noised to the timestep where ``strength`` starts and
denoised through the last ``int(steps * strength)`` steps; one window covering the image
is diffusers' `StableDiffusionImg2ImgPipeline` on the same latents and noise. The band's top
``hold`` rows continue the previous band (`hold_ramp`). The noise
is the position noise field (`noise`), or with ``noise_inversion`` the image's own
(`inversion`).

With a ControlNet (Tile; ``refine.controlnet``), the band's enlarged pixels are its condition:
every UNet call adds the ControlNet's residuals at ``refine.controlnet.scale``, each window
conditioned on its crop of the band (`ControlWindows`; the windows' boxes are relative to the
band, as its pixels are).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from hypermosaic.pipelines.canvas.conditioning import TextTable, encode_table
from hypermosaic.pipelines.canvas.loop import check_finite, check_pipeline
from hypermosaic.pipelines.canvas.masks import region_weights
from hypermosaic.pipelines.canvas.predict import CallSize, predict_windows
from hypermosaic.pipelines.canvas.tiled_vae import decode_tiled, encode_tiled, vae_scale_factor
from hypermosaic.pipelines.canvas.windows import TextRows, Window, blend
from hypermosaic.pipelines.controlnet import ControlWindows
from hypermosaic.pipelines.models import make_scheduler
from hypermosaic.pipelines.refine.inversion import invert_noise
from hypermosaic.pipelines.refine.noise import position_noise

__all__ = [
    "RefinedBand",
    "WindowPredictor",
    "band_windows",
    "geometry",
    "hold_ramp",
    "refine_band",
    "refine_timesteps",
]

VAE_TILE = 512  # pixels: the VAE encodes and decodes a band in tiles of this side

# The core's types, read by attribute only (the torch side does not import the commands):
Band = Any  # hypermosaic.upscale.strips.Band
RefinePlan = Any  # hypermosaic.upscale.strips.RefinePlan
RefineConfig = Any  # hypermosaic.upscale.refine.RefineConfig


class WindowPredictor(Protocol):
    """`predict_windows`' signature: every window's guided prediction for one step."""

    def __call__(self, unet: Any, windows: list[Window], scaled: torch.Tensor,
                 table: TextTable, t: torch.Tensor, call: CallSize) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class RefinedBand:
    """A refined band: its final latents ``(C, h, w)`` float32 (scaled, as the UNet sees them)
    and its pixels ``(h * f, w * f, 3)`` uint8 (padded as its input was)."""

    latents: np.ndarray
    pixels: np.ndarray


def hold_ramp(hold: int) -> np.ndarray:
    """The weights ``m`` ``(hold,)`` float32 by which a band's top rows hold the previous
    band's latents: 1 over the first half, then falling linearly (never reaching 0)."""
    full = hold // 2
    m = np.ones(hold, np.float32)
    rest = hold - full
    m[full:] = np.arange(rest, 0, -1, dtype=np.float32) / (rest + 1)
    return m


def geometry(pipe: Any) -> tuple[int, int]:
    """``(f, native)``: the VAE's factor and the model's native side in pixels (the UNet's
    ``sample_size`` latents), which size a pass's windows."""
    f = vae_scale_factor(pipe.vae)
    return f, int(pipe.unet.config.sample_size) * f


def refine_timesteps(scheduler: Any, steps: int, strength: float) -> torch.Tensor:
    """The img2img timesteps of ``strength``, as diffusers' img2img takes them: the last
    ``int(steps * strength)`` steps (``scheduler.set_timesteps`` already called), the
    scheduler told where it begins."""
    free = min(int(steps * strength), steps)
    begin = (steps - free) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    timesteps: torch.Tensor = scheduler.timesteps[begin:]
    return timesteps


def band_windows(band: Band, refine: RefineConfig, rows: TextRows, device: torch.device, *,
                 cfg: bool = True) -> list[Window]:
    """The band's windows, gaussian-weighted, each with its negative prompt (when guided:
    ``cfg`` and guidance above 1) and its prompt."""
    guided = cfg and refine.guidance > 1.0
    windows = []
    for box, prompt in zip(band.boxes, band.prompts, strict=True):
        top, bottom, left, right = box
        weight = region_weights("gaussian", bottom - top, right - left)
        windows.append(Window(
            box=box,
            rows=((rows(refine.negative_prompt),) if guided else ()) + (rows(prompt),),
            mix=(1.0,),
            guidance=refine.guidance,
            cfg=guided,
            weight=torch.from_numpy(weight)[None, None].to(device),
        ))
    return windows


def _step_kwargs(scheduler: Any) -> dict[str, Any]:
    """DDIM's ``eta`` 0 (deterministic), as diffusers' pipelines pass it."""
    return {"eta": 0.0} if "eta" in inspect.signature(scheduler.step).parameters else {}


@torch.no_grad()
def refine_band(pipe: Any, pixels: np.ndarray, band: Band, plan: RefinePlan,
                refine: RefineConfig, previous: np.ndarray | None = None, *,
                noise: torch.Tensor | None = None, controlnet: Any = None,
                callback: Callable[[int], None] | None = None) -> RefinedBand:
    """Refine one band: ``pixels`` ``(h * f, w * f, 3)`` uint8 are the enlarged image's rows
    of the band (padded); ``previous`` ``(C, hold, w)`` the previous band's final latents over
    the rows this band holds (None for the first band). ``noise`` replaces the position noise
    (tests compare with diffusers through it); ``controlnet`` is ``refine.controlnet``'s
    model, loaded (see the module); ``callback(n)`` follows each step with the windows it ran.

    Raises `InputError` for a pipeline that is not Stable Diffusion, `BuildError` for latents
    or pixels that are not finite.
    """
    check_pipeline(pipe)
    unet, vae, device = pipe.unet, pipe.vae, pipe.unet.device
    f = vae_scale_factor(vae)
    tile = VAE_TILE // f
    predict: WindowPredictor = predict_windows
    if controlnet is not None:
        predict = partial(predict_windows, control=ControlWindows(
            controlnet, pixels, refine.controlnet.scale, f))

    # 1. Scheduler and the img2img timesteps.
    scheduler = make_scheduler(refine.scheduler, pipe.scheduler)
    scheduler.set_timesteps(refine.steps, device=device)
    timesteps = refine_timesteps(scheduler, refine.steps, refine.strength)

    # 2. Windows and their texts' embeddings.
    rows = TextRows()
    windows = band_windows(band, refine, rows, device)
    height, width = band.bottom - band.top, plan.latent_size[1]
    table = encode_table(pipe, [text for text, _ in rows.texts], (height * f, width * f), f,
                         device)
    call = CallSize(refine.batch_size)

    # 3. Clean latents, the noise (the position field, or the image's own), initial latents.
    z0 = encode_tiled(vae, pixels, tile, tile // 4).to(device)
    if noise is None:
        noise = position_noise(refine.seed, band.top, band.bottom, width,
                               vae.config.latent_channels)
    noise = noise.to(device)
    if refine.noise_inversion:
        noise = invert_noise(_conditional(pipe, band, refine, call, predict), z0, timesteps,
                             scheduler.alphas_cumprod,
                             scheduler.config.get("prediction_type", "epsilon"))
    latents = scheduler.add_noise(z0, noise, timesteps[:1])

    # 4. The rows held to the previous band, and their ramp.
    held = None
    if previous is not None and band.hold:
        held = torch.from_numpy(previous)[None].to(device)
        m = torch.from_numpy(hold_ramp(band.hold))[None, None, :, None].to(device)

    # 5. Denoise the band, all windows together.
    for i, t in enumerate(timesteps):
        if held is not None:
            top = latents[:, :, : band.hold]
            top[:] = m * scheduler.add_noise(held, noise[:, :, : band.hold], t.reshape(1)) + (
                1 - m) * top
        scaled = scheduler.scale_model_input(latents, t)
        predictions = predict(unet, windows, scaled, table, t, call)
        eps = blend(latents.shape, windows, predictions)
        latents = scheduler.step(eps, t, latents, **_step_kwargs(scheduler)).prev_sample
        check_finite(latents, i + 1, len(timesteps))
        if callback is not None:
            callback(len(windows))
    if held is not None:
        top = latents[:, :, : band.hold]
        top[:] = m * held + (1 - m) * top

    # 6. Decode, tiled.
    image = decode_tiled(vae, latents, tile, tile // 4)
    return RefinedBand(latents[0].float().cpu().numpy(), image)


def _conditional(pipe: Any, band: Band, refine: RefineConfig, call: CallSize,
                 predict: WindowPredictor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The band's blended conditional prediction (guidance 1) as ``model(x, t)``: what noise
    inversion walks with."""
    rows = TextRows()
    windows = band_windows(band, refine, rows, pipe.unet.device, cfg=False)
    height, width = band.bottom - band.top, band.boxes[-1][3]
    f = vae_scale_factor(pipe.vae)
    table = encode_table(pipe, [text for text, _ in rows.texts], (height * f, width * f), f,
                         pipe.unet.device)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return blend(x.shape, windows, predict(pipe.unet, windows, x, table, t, call))

    return model
