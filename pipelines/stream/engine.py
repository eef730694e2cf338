"""Multi-prompt stream batch: a ring of latents at the timesteps of an LCM schedule, advanced
together by one batched UNet call, one finished frame per call.

StreamDiffusion's stream batch (arXiv 2312.12491) denoises S latents that sit at the S
timesteps of a few-step schedule in one batch; StreamMultiDiffusion (arXiv 2403.09055) makes
each of them a whole region-based canvas. Here each latent of the ring is a canvas
(`hypermosaic.canvas.plan.CanvasPlan`: brushes, background, masks, bootstrap, a background
photo) and every call runs

1. a fresh latent enters at the noisy end with the inputs of that moment (its `Scene`: the
   plan's windows, masks and embeddings, built once per distinct plan) and its own noise,
   `initial_noise` of the plan with that frame's seed;
2. every window of every latent goes through the UNet in shared calls (windows x S rows,
   each row at its latent's timestep; `predict_slots`), blended per latent (`blend`);
3. each latent takes its own LCM step (`lcm_step`), drawing its step noise from its own
   generator, as `render_canvas` draws from the plan's;
4. the latent that took the last step leaves and is decoded: the frame.

A latent reads its inputs when it enters and keeps them, so a change reaches the screen after
S calls, and a latent that entered after the last change is exactly the plain few-step loop's
result (`render_canvas` of the same plan and seed) up to the batch's float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from hypermosaic.canvas.plan import CanvasPlan, check_window_stride
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas.conditioning import check_sdxl, decoding_vae, encode_table
from hypermosaic.pipelines.canvas.loop import (
    WHITE,
    canvas_scheduler,
    check_finite,
    check_pipeline,
    initial_noise,
)
from hypermosaic.pipelines.canvas.photo import composite_photo, hold_photo, prepare_photo
from hypermosaic.pipelines.canvas.predict import CallSize
from hypermosaic.pipelines.canvas.tiled_vae import decode_tiled, encode_tiled, vae_scale_factor
from hypermosaic.pipelines.canvas.windows import (
    TextRows,
    blend,
    brush_windows,
    latent_slice,
    prompt_windows,
)
from hypermosaic.pipelines.image_prompt.canvas import guide_rows, guided_prompts
from hypermosaic.pipelines.stream.predict import predict_slots
from hypermosaic.pipelines.stream.ring import Scene, Slot
from hypermosaic.pipelines.stream.schedule import LcmSchedule, lcm_schedule, lcm_step

__all__ = ["StreamBatch", "StreamFrame", "build_scene", "check_stream_plan"]


def check_stream_plan(plan: CanvasPlan) -> None:
    """`InputError` naming the key for what the stream does not paint: a scheduler other than
    ``lcm``, image regions, a ControlNet, a wrapped canvas."""
    if plan.scheduler != "lcm":
        raise InputError(f'scheduler: the stream needs "lcm" (few-step), not {plan.scheduler!r}')
    if plan.images:
        raise InputError(f"{plan.images[0].name}: image regions are not streamed")
    if plan.control is not None:
        raise InputError("controlnet: not streamed")
    if plan.wrap != "none":
        raise InputError(f"wrap: {plan.wrap!r} canvases are not streamed")


@dataclass(frozen=True)
class StreamFrame:
    """A finished frame: the index and seed it entered with, its plan, its final latents and
    the decoded image ``(H, W, 3)`` uint8."""

    index: int
    seed: int
    plan: CanvasPlan
    latents: torch.Tensor
    image: np.ndarray


class StreamBatch:
    """The ring of latents of one stream on ``pipe`` (a Stable Diffusion pipeline with an
    LCM-distilled UNet, or any UNet driven by the LCM scheduler)."""

    def __init__(self, pipe: Any) -> None:
        check_pipeline(pipe)
        self.pipe = pipe
        self.f = vae_scale_factor(pipe.vae)
        self.slots: list[Slot] = []
        self.scene: Scene | None = None
        self.schedule: LcmSchedule | None = None
        self.scheduler: Any = None
        self.call: CallSize | None = None

    @torch.no_grad()
    def advance(self, plan: CanvasPlan, index: int, seed: int) -> StreamFrame | None:
        """Let frame ``index`` enter with ``plan`` and ``seed``, move every latent one step,
        and return the frame that finished (None while the ring fills up).

        A plan of another size or step count than the latents in flight empties the ring.
        Raises `InputError` for a plan the stream cannot paint, `BuildError` for latents that
        are not finite.
        """
        scene = self._scene(plan)
        schedule = self.schedule
        assert schedule is not None and self.call is not None
        unet = self.pipe.unet
        # 1. The new latent enters at the noisy end with its own noise (the plan's, reseeded).
        noise, generator = initial_noise(replace(plan, seed=seed),
                                         self.pipe.vae.config.latent_channels, self.f)
        noise = noise.to(unet.device)
        self.slots.insert(0, Slot(index, seed, scene, noise * self.scheduler.init_noise_sigma,
                                  noise, generator))
        # 2. Every window of every latent, in shared UNet calls at their own timesteps.
        backgrounds = [self._backgrounds(slot, schedule) for slot in self.slots]
        predictions = predict_slots(unet, self.slots, schedule.timesteps, backgrounds, self.call)
        # 3. Each latent's own step (and its photo held outside the repainted areas).
        eps = torch.cat([blend(slot.latents.shape, slot.scene.windows, p)
                         for slot, p in zip(self.slots, predictions, strict=True)])
        x = torch.cat([slot.latents for slot in self.slots])
        steps = torch.tensor([slot.step for slot in self.slots])
        draws = [torch.randn(slot.latents.shape, generator=slot.generator).to(unet.device)
                 for slot in self.slots if slot.step < schedule.steps - 1]
        moving = steps < schedule.steps - 1
        z = None
        if draws:
            z = torch.zeros_like(x)
            z[moving.to(x.device)] = torch.cat(draws)
        stepped = lcm_step(schedule, steps, eps, x, z)
        for row, slot in enumerate(self.slots):
            slot.latents = stepped[row : row + 1]
            slot.step += 1
            if slot.scene.photo is not None:
                following = schedule.timesteps[slot.step] if slot.step < schedule.steps else None
                slot.latents = hold_photo(self.scheduler, slot.latents, slot.scene.photo,
                                          slot.noise, following)
            check_finite(slot.latents, slot.step, schedule.steps)
        # 4. The latent that took the last step leaves, decoded.
        if self.slots[-1].step < schedule.steps:
            return None
        done = self.slots.pop()
        return StreamFrame(done.index, done.seed, done.scene.plan, done.latents,
                           self._decode(done))

    def _backgrounds(self, slot: Slot, schedule: LcmSchedule) -> dict[Any, torch.Tensor] | None:
        """The bootstrap backgrounds of a latent still in its plan's bootstrap steps: plain
        white noised to its timestep, as `render_canvas` gives its isolated brushes."""
        scene = slot.scene
        if scene.white is None or slot.step >= scene.plan.bootstrap_steps:
            return None
        level = schedule.timesteps[slot.step].reshape(1)
        return {w.box: self.scheduler.add_noise(scene.white, slot.noise[latent_slice(w.box)],
                                                level)
                for w in scene.windows if w.keep is not None}

    def _decode(self, slot: Slot) -> np.ndarray:
        plan = slot.scene.plan
        vae = decoding_vae(self.pipe, plan.cpu_vae)
        tile = plan.vae_tile // self.f
        return composite_photo(decode_tiled(vae, slot.latents, tile, tile // 4), plan)

    def _scene(self, plan: CanvasPlan) -> Scene:
        """The scene of ``plan`` (the last one again when the plan is equal); a plan whose
        size or steps differ from those in flight empties the ring first."""
        if self.scene is not None and self.scene.plan == plan:
            return self.scene
        check_stream_plan(plan)
        check_sdxl(self.pipe, plan)
        old = self.scene
        if old is None or (old.plan.steps, old.plan.height, old.plan.width) != (
                plan.steps, plan.height, plan.width):
            self.slots.clear()
            self.scheduler = canvas_scheduler(plan, self.pipe.scheduler)
            self.schedule = lcm_schedule(self.scheduler, plan.steps)
            self.call = CallSize(plan.batch_size * plan.steps)
        self.scene = build_scene(self.pipe, plan, self.f)
        return self.scene


def build_scene(pipe: Any, plan: CanvasPlan, f: int) -> Scene:
    """The `Scene` of ``plan``: `render_canvas`'s steps 2 to 4 (windows, embeddings, photo,
    bootstrap background), done once per distinct plan."""
    unet, device = pipe.unet, pipe.unet.device
    vae = decoding_vae(pipe, plan.cpu_vae)
    tile = plan.vae_tile // f
    rows = TextRows(guided_prompts(plan))
    native = unet.config.sample_size * f if plan.window_size is None else plan.window_size
    check_window_stride(plan.window_stride, native, plan.window_size)
    size = native // f
    stride = size // 2 if plan.window_stride is None else plan.window_stride // f
    cfg = getattr(unet.config, "time_cond_proj_dim", None) is None
    windows = prompt_windows(plan, f, rows, cfg=cfg) + brush_windows(
        plan, f, size, max(1, stride), rows, cfg=cfg)
    for window in windows:
        window.weight = window.weight.to(device)
        window.keep = None if window.keep is None else window.keep.to(device)
    table = encode_table(pipe, [text for text, _ in rows.texts], (plan.height, plan.width), f,
                         device)
    table = replace(table, states=guide_rows(pipe, plan, table.states, list(rows.texts)))
    photo = prepare_photo(vae, unet, plan, f, tile)
    isolated = [w for w in windows if w.keep is not None]
    white = None
    if isolated and plan.bootstrap_steps:
        h, w = isolated[0].shape
        white = encode_tiled(vae, np.full((h * f, w * f, 3), WHITE, np.uint8), tile,
                             tile // 4).to(device)
    if not windows:
        raise InputError("canvas: nothing to paint (no region, brush or background)")
    return Scene(plan, windows, table, photo, white)
