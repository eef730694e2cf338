"""Noise inversion: the noise that DDIM, run backwards, finds in the image itself.

Fresh noise lets a window drift from the enlarged image's structure at higher strengths;
Tiled Diffusion's noise inversion starts instead from the image's own inverted latents. Here
the clean latents ``z_0`` are walked up the img2img timesteps, lowest first, by the
deterministic DDIM update run backwards (Song et al., arXiv 2010.02502, eq. 13; the usual
one-step-lag approximation evaluates the model at the level being reached)::

    x0   = (x - sqrt(1 - a) eps) / sqrt(a)          eps = eps(x, t_next), a = alpha of x's level
    x   <- sqrt(a_next) x0 + sqrt(1 - a_next) eps

with the windows' conditional predictions blended as in denoising (guidance 1: one UNet row
per window). The result is returned as *noise*, ``(x_T - sqrt(a_T) z_0) / sqrt(1 - a_T)``,
which any scheduler's ``add_noise(z_0, noise, t_start)`` turns back into ``x_T``: inversion
replaces the position noise and nothing else changes. Cost: one conditional UNet pass per
window per img2img step, about half a denoising pass with classifier-free guidance (the pass
takes about 1.5 times as long).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["invert_noise"]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _eps(out: torch.Tensor, x: torch.Tensor, a: torch.Tensor, prediction: str) -> torch.Tensor:
    """The model output as a noise prediction (v-prediction converted)."""
    if prediction == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * x
    return out


@torch.no_grad()
def invert_noise(model: EpsModel, z0: torch.Tensor, timesteps: torch.Tensor,
                 alphas_cumprod: torch.Tensor, prediction: str = "epsilon") -> torch.Tensor:
    """The noise whose ``add_noise(z0, noise, timesteps[0])`` is ``z0`` DDIM-inverted to the
    first (highest) of ``timesteps`` (the img2img steps, highest first). ``model(x, t)`` is the
    blended model output for latents ``x`` at timestep ``t``."""
    x, a = z0, torch.tensor(1.0, device=z0.device)
    for t in timesteps.flip(0):
        a_next = alphas_cumprod[int(t)].to(z0.device, torch.float32)
        out = model(x, t)
        eps = _eps(out, x, a_next, prediction)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        a = a_next
    return (x - a.sqrt() * z0) / (1 - a).sqrt()
