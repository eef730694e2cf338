"""LCM's few-step update written per row, so latents at different timesteps step together.

diffusers' `LCMScheduler.step` keeps a step counter and moves one sample along one schedule;
a stream batch holds one latent per timestep, so each row needs its own step. For row ``r``
at schedule index ``i`` (timestep ``t``, next timestep ``t'``; ``a`` are ``alphas_cumprod``)::

    x0_r   = (x_r - sqrt(1 - a_t) eps_r) / sqrt(a_t)                      (epsilon prediction)
    d_r    = c_out(t) x0_r + c_skip(t) x_r                  (consistency boundary condition)
    x'_r   = sqrt(a_t') d_r + sqrt(1 - a_t') z_r     (z_r ~ N(0, I); x'_r = d_r at the end)

with ``c_skip = s^2 / ((10 t)^2 + s^2)``, ``c_out = 10 t / sqrt((10 t)^2 + s^2)``, ``s = 0.5``
(LCM, arXiv 2310.04378; the scheduler's ``timestep_scaling``). Pure functions of tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hypermosaic.errors import InputError

__all__ = ["LcmSchedule", "lcm_schedule", "lcm_step"]

SIGMA_DATA = 0.5


@dataclass(frozen=True)
class LcmSchedule:
    """The per-index constants of an LCM schedule of ``len(timesteps)`` steps (float32)."""

    timesteps: torch.Tensor
    alpha: torch.Tensor
    alpha_next: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    prediction: str
    clip: float | None

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def lcm_schedule(scheduler: Any, steps: int) -> LcmSchedule:
    """The constants of ``scheduler`` (an `LCMScheduler`, left untouched but for
    ``set_timesteps``) for ``steps`` steps; `InputError` naming ``scheduler`` otherwise."""
    if type(scheduler).__name__ != "LCMScheduler":
        raise InputError(f'scheduler: the stream needs "lcm", not {type(scheduler).__name__}')
    config = scheduler.config
    if config.get("thresholding", False):
        raise InputError("scheduler: LCM with dynamic thresholding is not supported by the stream")
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.long()
    a = scheduler.alphas_cumprod.float()
    alpha = a[timesteps]
    alpha_next = torch.cat([a[timesteps[1:]], alpha[-1:]])  # the last step adds no noise
    scaled = timesteps.float() * config.get("timestep_scaling", 10.0)
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    clip = config.get("clip_sample_range", 1.0) if config.get("clip_sample", False) else None
    return LcmSchedule(timesteps, alpha, alpha_next, c_skip, c_out,
                       config.get("prediction_type", "epsilon"), clip)


def lcm_step(schedule: LcmSchedule, index: torch.Tensor, eps: torch.Tensor, x: torch.Tensor,
             noise: torch.Tensor | None) -> torch.Tensor:
    """One LCM step of each row of ``x`` ``(B, C, h, w)`` from its schedule ``index`` ``(B,)``
    with prediction ``eps``; ``noise`` ``(B, C, h, w)`` is used by rows not at the last index
    (None when every row is)."""
    def per_row(values: torch.Tensor) -> torch.Tensor:
        return values[index].to(x.device, x.dtype)[:, None, None, None]

    a, a_next = per_row(schedule.alpha), per_row(schedule.alpha_next)
    if schedule.prediction == "epsilon":
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    elif schedule.prediction == "sample":
        x0 = eps
    else:  # v_prediction
        x0 = a.sqrt() * x - (1 - a).sqrt() * eps
    if schedule.clip is not None:
        x0 = x0.clamp(-schedule.clip, schedule.clip)
    denoised = per_row(schedule.c_out) * x0 + per_row(schedule.c_skip) * x
    if noise is None:
        return denoised
    last = (index == schedule.steps - 1).to(x.device)[:, None, None, None]
    moved = a_next.sqrt() * denoised + (1 - a_next).sqrt() * noise
    return torch.where(last, denoised, moved)
