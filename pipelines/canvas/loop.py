"""Mixture-of-diffusers canvases: one latent denoising loop over the whole canvas.

At every step the UNet sees overlapping latent windows: one per grid tile or text region (its
box), and for each brush (and the background) the windows of a sliding grid of the model's
native size where its mask has weight (`hypermosaic.pipelines.canvas.windows`). Their noise
predictions are blended by weight maps (`hypermosaic.pipelines.canvas.masks`) into one
prediction for the canvas::

    eps = sum_j w_j * eps_j / sum_j w_j
    eps_j = eps_u + g_j * (sum_k a_k * eps_k - eps_u)       (classifier-free guidance, g_j > 1)

where ``a_k`` are the normalised weights of a prompt ensemble (one prompt: ``a = 1``). One
scheduler step then moves the whole canvas, so tiles never drift apart and no seam forms
(Mixture of Diffusers, arXiv 2302.02412; MultiDiffusion; StreamMultiDiffusion, 2403.09055).

A text region's image prompt moves its prompt's embedding rows once, before the first step
(`hypermosaic.pipelines.image_prompt.canvas`); its negative prompt is never moved.

Speed: the windows of a step that share a shape go through the UNet together, up to
``batch_size`` windows per call, each window with its unconditional and conditional rows
(classifier-free guidance batched too); prompt embeddings are computed once per canvas. A call
that runs out of device memory is retried with half as many windows, and the smaller size
kept for the rest of the canvas (`CallSize`). ``batch_size = 1`` is the original
one-window-per-call loop and gives the same image.

LCM-distilled UNets (``unet.config.time_cond_proj_dim`` set) take the guidance scale as an
input instead: each window's UNet rows get ``timestep_cond``, the embedding of its guidance
``g_j - 1`` (`guidance_embedding`, as diffusers' ``LatentConsistencyModelPipeline``), and no
unconditional row (classifier-free guidance off, negative prompts unused).

SDXL-type UNets (two text encoders, pooled embeddings) get each row's pooled embedding and its
window's time ids, the window taken as a crop of the canvas at its offset
(`hypermosaic.pipelines.canvas.conditioning`); they batch as Stable Diffusion's windows do.

Image regions hold their reference's latents, noised to each step's level, until their
img2img strength lets them go (strength 0: to the end, so the region is the reference
through the VAE); one with a mask holds them by its mask's weights, as rerolls draw their
noise (`initial_noise`). Brushes, for their first ``bootstrap_steps``, see their own area only, over
a plain white background noised to the step's level (StreamMultiDiffusion's bootstrapping),
so that their prompts stay apart. Over a background photo (``plan.background``) the regions
repaint only their areas and the rest stays the photo, pixel for pixel (`photo`); inpainting
(9-channel) UNets get its mask and masked latents as extra channels. The initial noise and
every random draw come from CPU generators seeded by the plan: the same plan gives the same
pixels on any device.

A wrapped canvas (``plan.wrap``: a 360° panorama or a tileable texture) has windows that go
round its edges, seen in the canvas ring-padded past them, and a VAE decode that wraps too
(`hypermosaic.pipelines.canvas.wrap`).

A Mixture of Diffusers plan (``plan.compat``, its JSON configs) guides every window whatever
its scale and builds ``ddim`` and ``lms`` as it does (`canvas_scheduler`). Latents that are not
finite (a model that overflowed in float16) stop the canvas with `BuildError` at the step they
appear, and so does a VAE that decodes them so: no NaN ever reaches an image.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from hypermosaic.canvas.plan import CELL, CanvasPlan, check_window_stride
from hypermosaic.canvas.regions import MOD
from hypermosaic.canvas.wrap import check_wrap_window
from hypermosaic.errors import BuildError, InputError
from hypermosaic.pipelines.canvas.conditioning import check_sdxl, decoding_vae, encode_table
from hypermosaic.pipelines.canvas.masks import mask_weights
from hypermosaic.pipelines.canvas.photo import composite_photo, hold_photo, prepare_photo
from hypermosaic.pipelines.canvas.predict import CallSize, predict_windows
from hypermosaic.pipelines.canvas.tiled_vae import decode_tiled, encode_tiled, vae_scale_factor
from hypermosaic.pipelines.canvas.windows import (
    TextRows,
    blend,
    brush_windows,
    latent_slice,
    prompt_windows,
)
from hypermosaic.pipelines.canvas.wrap import NO_WRAP, decode_ring, ring_pad, wrap_axes
from hypermosaic.pipelines.controlnet import control_windows
from hypermosaic.pipelines.image_prompt.canvas import guide_rows, guided_prompts
from hypermosaic.pipelines.models import make_scheduler
from hypermosaic.tiling import Box

__all__ = [
    "MOD_SCHEDULERS",
    "StepCallback",
    "canvas_scheduler",
    "check_finite",
    "check_pipeline",
    "initial_noise",
    "render_canvas",
]

StepCallback = Callable[[int, int], None]
WHITE = 255

# Mixture of Diffusers' schedulers (generate_grid_from_json.py): a default DDIMScheduler(), and
# LMS with Stable Diffusion 1's betas; not built from the model's scheduler config.
MOD_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {"beta_start": 0.00085, "beta_end": 0.012,
                                     "beta_schedule": "scaled_linear",
                                     "num_train_timesteps": 1000}),
}


def canvas_scheduler(plan: CanvasPlan, own: Any) -> Any:
    """A fresh scheduler of ``plan.scheduler`` for the model whose scheduler is ``own``.

    From ``own``'s config (`make_scheduler`), except for ``ddim`` and ``lms`` in a Mixture of
    Diffusers plan, which are built as Mixture of Diffusers builds them (`MOD_SCHEDULERS`),
    keeping only the model's ``prediction_type`` (so that a v-prediction model still works).
    """
    if plan.compat != MOD or plan.scheduler not in MOD_SCHEDULERS:
        return make_scheduler(plan.scheduler, own)
    import diffusers

    class_name, arguments = MOD_SCHEDULERS[plan.scheduler]
    prediction = own.config.get("prediction_type", "epsilon")
    return getattr(diffusers, class_name)(**arguments, prediction_type=prediction)


def check_finite(latents: torch.Tensor, step: int, total: int) -> None:
    """`BuildError` unless every latent is finite (``step`` of ``total`` just ran)."""
    if not bool(torch.isfinite(latents).all()):
        raise BuildError(
            f"canvas: the latents hold NaN or infinite values after step {step} of {total}; "
            'the model overflowed (in float16, try dtype = "float32"); nothing was written'
        )


def check_pipeline(pipe: Any) -> None:
    """Reject a pipeline the canvas cannot drive; `InputError` naming the model."""
    for part in ("unet", "vae", "encode_prompt"):
        if getattr(pipe, part, None) is None:
            raise InputError(
                f"model: {type(pipe).__name__} has no {part}; not a Stable Diffusion pipeline"
            )
    f = vae_scale_factor(pipe.vae)
    if CELL % f:
        raise InputError(f"model: its VAE scale factor {f} does not divide {CELL}")


def initial_noise(plan: CanvasPlan, channels: int, f: int) -> tuple[torch.Tensor, torch.Generator]:
    """The canvas's initial noise ``(1, C, H/f, W/f)`` (CPU float32) and the generator it came
    from, positioned for the scheduler's own draws (as diffusers' pipelines leave it).

    The plan's noise edits apply in order: each draws ``randn`` over its ``draw`` box from its
    seed and writes (``reset``) or adds ``eps`` times (``epsilon``) the part inside ``write``.
    An edit with a mask of weights ``m`` (`mask_weights`) resets to ``sqrt(m) new + sqrt(1 - m)
    old`` (unit variance, independent noises) and adds ``eps m new``.
    """
    generator = torch.Generator("cpu").manual_seed(plan.seed)
    noise = torch.randn((1, channels, plan.height // f, plan.width // f), generator=generator)
    for edit in plan.noise_edits:
        top, bottom, left, right = (edge // f for edge in edit.draw)
        fresh = torch.randn(
            (1, channels, bottom - top, right - left),
            generator=torch.Generator("cpu").manual_seed(edit.seed),
        )
        w_top, w_bottom, w_left, w_right = (edge // f for edge in edit.write)
        part = fresh[:, :, w_top - top : w_bottom - top, w_left - left : w_right - left]
        written = noise[:, :, w_top:w_bottom, w_left:w_right]
        m = None if edit.mask is None else torch.from_numpy(
            mask_weights(edit.mask, (w_top, w_bottom, w_left, w_right), f, wrap_axes(plan.wrap)))
        if edit.mode == "reset":
            written[:] = part if m is None else m.sqrt() * part + (1 - m).sqrt() * written
        else:
            written += edit.eps * (part if m is None else m * part)
    return noise, generator


def _step_kwargs(scheduler: Any, generator: torch.Generator) -> dict[str, Any]:
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = generator
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs


@torch.no_grad()
def render_canvas(pipe: Any, plan: CanvasPlan, callback: StepCallback | None = None,
                  controlnet: Any = None) -> np.ndarray:
    """Generate the canvas of ``plan`` with ``pipe``; returns ``(H, W, 3)`` uint8 RGB.

    With ``plan.control``, ``controlnet`` (its model, loaded) adds its residuals to every UNet
    call, each window conditioned on its crop of the control image (`ControlWindows`).

    ``pipe`` is a Stable Diffusion or SDXL pipeline (`hypermosaic.pipelines.models.load_pipeline`);
    its scheduler is not touched (a fresh one of ``plan.scheduler`` is made, `canvas_scheduler`).
    ``callback(step, steps)`` runs after each denoising step. Raises `InputError` for a model
    the canvas cannot use, `BuildError` for latents or pixels that are not finite.
    """
    check_pipeline(pipe)
    check_sdxl(pipe, plan)
    unet, device = pipe.unet, pipe.unet.device
    f = vae_scale_factor(pipe.vae)
    vae = decoding_vae(pipe, plan.cpu_vae)
    vae_tile = plan.vae_tile // f

    # 1. Scheduler and timesteps (PNDM has more timesteps than steps: count timesteps).
    scheduler = canvas_scheduler(plan, pipe.scheduler)
    scheduler.set_timesteps(plan.steps, device=device)
    timesteps = scheduler.timesteps
    total = len(timesteps)

    # 2. Windows, and the embeddings of every distinct text (with SDXL also pooled), computed
    #    once; the rows of a region with an image prompt that moves something are guided, once.
    rows = TextRows(guided_prompts(plan))
    native = unet.config.sample_size * f if plan.window_size is None else plan.window_size
    check_window_stride(plan.window_stride, native, plan.window_size)
    check_wrap_window(plan.wrap, native, plan.height, plan.width)
    size = native // f
    stride = size // 2 if plan.window_stride is None else plan.window_stride // f
    cfg = getattr(unet.config, "time_cond_proj_dim", None) is None
    windows = prompt_windows(plan, f, rows, cfg=cfg) + brush_windows(
        plan, f, size, max(1, stride), rows, cfg=cfg
    )
    for window in windows:
        window.weight = window.weight.to(device)
        window.keep = None if window.keep is None else window.keep.to(device)
    pads = (max(w.box[1] for w in windows) - plan.height // f,
            max(w.box[3] for w in windows) - plan.width // f) if plan.wrap != NO_WRAP else (0, 0)
    table = encode_table(pipe, [text for text, _ in rows.texts], (plan.height, plan.width), f,
                         device)
    table = replace(table, states=guide_rows(pipe, plan, table.states, list(rows.texts)))

    # 3. Initial noise and latents; the background photo's latents (and an inpainting UNet's
    #    extra channels).
    photo = prepare_photo(vae, unet, plan, f, vae_tile)
    control = control_windows(plan, controlnet, f)
    noise, generator = initial_noise(plan, vae.config.latent_channels, f)
    noise = noise.to(device)
    latents = noise * scheduler.init_noise_sigma

    # 4. Latents of the image regions (and their masks' weights) and of the bootstrap
    #    background.
    images = [
        (
            box,
            encode_tiled(vae, image.pixels, vae_tile, vae_tile // 4).to(device),
            _hold_until(image.strength, plan.steps, total, scheduler.order),
            None if image.mask is None
            else torch.from_numpy(mask_weights(image.mask, box, f, wrap_axes(plan.wrap))
                                  ).to(device),
        )
        for image in plan.images
        for box in [tuple(edge // f for edge in image.box)]
    ]
    isolated = [w for w in windows if w.keep is not None]
    white = None
    if isolated and plan.bootstrap_steps:
        h, w = isolated[0].shape
        white = encode_tiled(
            vae, np.full((h * f, w * f, 3), WHITE, np.uint8), vae_tile, vae_tile // 4
        ).to(device)
    step_kwargs = _step_kwargs(scheduler, generator)
    call = CallSize(plan.batch_size)
    # On a wrapped canvas windows see it ring-padded past its edges (pads 0: the canvas).
    ring_noise = ring_pad(noise, *pads)
    condition = None if photo is None or photo.condition is None else ring_pad(
        photo.condition, *pads)

    # 5. Denoise the whole canvas.
    for i, t in enumerate(timesteps):
        level = t.reshape(1)
        for box, reference, start, m in images:
            if i <= start:
                _hold(latents, box, scheduler.add_noise(reference, noise[latent_slice(box)],
                                                        level), m)
        scaled = ring_pad(scheduler.scale_model_input(latents, t), *pads)
        backgrounds = None
        if white is not None and i < plan.bootstrap_steps:
            backgrounds = {
                w.box: scheduler.scale_model_input(
                    scheduler.add_noise(white, ring_noise[latent_slice(w.box)], level), t
                )
                for w in isolated
            }
        predictions = predict_windows(unet, windows, scaled, table, t, call, backgrounds,
                                      condition, control)
        eps = blend(latents.shape, windows, predictions, pads)
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        if photo is not None:
            latents = hold_photo(scheduler, latents, photo, noise,
                                 timesteps[i + 1] if i + 1 < total else None)
        check_finite(latents, i + 1, total)
        if callback is not None:
            callback(i + 1, total)
    for box, reference, start, m in images:
        if start >= total:
            _hold(latents, box, reference, m)

    # 6. Decode, tiled (round the seams of a wrapped canvas), and lay the repainted areas over
    #    the photo.
    if plan.wrap != NO_WRAP:
        return composite_photo(decode_ring(vae, latents, vae_tile, vae_tile // 4, plan.wrap),
                               plan)
    return composite_photo(decode_tiled(vae, latents, vae_tile, vae_tile // 4), plan)


def _hold(latents: torch.Tensor, box: Box, value: torch.Tensor, m: torch.Tensor | None) -> None:
    """Set ``latents`` in ``box`` to ``value``, or to ``m value + (1 - m) latents`` with mask
    weights ``m``."""
    region = latents[latent_slice(box)]
    region[:] = value if m is None else m * value + (1 - m) * region


def _hold_until(strength: float, steps: int, total: int, order: int) -> int:
    """The last timestep index at which an image region is set to its noised reference.

    As diffusers' img2img, ``int(steps * strength)`` steps denoise it, starting at timestep
    index ``(steps - that) * order``; with none (strength 0) it is held through all ``total``
    timesteps and restored at the end.
    """
    free = min(int(steps * strength), steps)
    return total if free == 0 else (steps - free) * order


