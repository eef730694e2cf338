"""The windows of a canvas: which latent boxes the UNet sees, with which texts, and the blend.

Each grid tile and text region is one window over its box (`prompt_windows`); each brush is
the windows of a sliding grid where its blurred mask has weight (`brush_windows`). A window
holds its embedding rows (unconditional first under classifier-free guidance, then the prompt
ensemble), its guidance and its weight map. After the UNet, each window's rows are mixed and
guided (`guided`) and all windows blended into one prediction for the canvas (`blend`)::

    eps = sum_j w_j * eps_j / sum_j w_j
    eps_j = eps_u + g_j * (sum_k a_k * eps_k - eps_u)       (classifier-free guidance, g_j > 1)

Guidance of 1 or less switches classifier-free guidance off for that window (``eps_j`` is the
conditioned prediction), except for a Mixture of Diffusers plan, which guides every window
whatever its scale, as Mixture of Diffusers does.

Pure tensor arithmetic on the CPU or the UNet's device; the denoising loop that drives it is
`hypermosaic.pipelines.canvas.loop`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from hypermosaic.canvas.plan import CELL, CanvasPlan
from hypermosaic.canvas.regions import MOD
from hypermosaic.pipelines.canvas.masks import (
    cells_to_latent,
    gaussian_blur,
    mask_weights,
    region_weights,
)
from hypermosaic.pipelines.canvas.wrap import ring_array, ring_fold, ring_spans, wrap_axes
from hypermosaic.tiling import Box, window_spans

__all__ = [
    "TextRows",
    "Window",
    "blend",
    "brush_windows",
    "guidance_embedding",
    "guided",
    "latent_slice",
    "prompt_windows",
    "window_input",
]


@dataclass
class Window:
    """One UNet input per step: a latent ``box`` and the embedding ``rows`` it is run with.

    ``rows`` holds the unconditional row first when ``cfg``, then one row per prompt of the
    ensemble, mixed by ``mix``. ``weight`` is its blending map ``(1, 1, h, w)``; ``keep``, for
    a brush during bootstrap, is the area it sees of the canvas (the rest is background).
    """

    box: Box
    rows: tuple[int, ...]
    mix: tuple[float, ...]
    guidance: float
    cfg: bool
    weight: torch.Tensor
    keep: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        top, bottom, left, right = self.box
        return bottom - top, right - left


class TextRows:
    """Gives each distinct text one row of the embedding table, in order of first use; the
    texts of a prompt in ``guided`` (by name: its image prompt moves its embeddings) get rows
    of their own, keyed ``(text, name)`` (other rows: ``(text, None)``)."""

    def __init__(self, guided: Collection[str] = ()) -> None:
        self.guided = frozenset(guided)
        self.texts: dict[tuple[str, str | None], int] = {}

    def __call__(self, text: str, owner: str | None = None) -> int:
        key = (text, owner if owner in self.guided else None)
        return self.texts.setdefault(key, len(self.texts))


def _window(
    box: Box,
    prompt: tuple[tuple[str, float], ...],
    negative: str,
    guidance: float,
    weight: np.ndarray,
    rows: TextRows,
    keep: np.ndarray | None = None,
    cfg: bool = True,
    always: bool = False,
    owner: str | None = None,
) -> Window:
    cfg = cfg and (always or guidance > 1.0)
    total = sum(w for _, w in prompt)
    return Window(
        box=box,
        rows=((rows(negative),) if cfg else ()) + tuple(rows(text, owner) for text, _ in prompt),
        mix=tuple(w / total for _, w in prompt),
        guidance=guidance,
        cfg=cfg,
        weight=torch.from_numpy(np.ascontiguousarray(weight, np.float32))[None, None],
        keep=None if keep is None else torch.from_numpy(np.ascontiguousarray(keep))[None, None],
    )


def prompt_windows(plan: CanvasPlan, f: int, rows: TextRows, *, cfg: bool = True
                   ) -> list[Window]:
    """One window per grid tile and text region: its box in latents, weighted by its profile
    (times its mask's weights, for a text region with a mask).

    ``cfg = False`` (guidance-embedded models) gives no window an unconditional row; else a
    window is guided when its guidance is above 1, or always in a Mixture of Diffusers plan.
    A prompt in ``rows.guided`` gets rows of its own for its texts (not its negative prompt).
    """
    always = plan.compat == MOD
    windows = []
    for prompt in plan.prompts:
        top, bottom, left, right = (edge // f for edge in prompt.box)
        weight = region_weights(prompt.mask_type, bottom - top, right - left, prompt.mask_weight)
        if prompt.mask is not None:
            weight = weight * mask_weights(prompt.mask, (top, bottom, left, right), f,
                                           wrap_axes(plan.wrap))
        windows.append(
            _window(
                (top, bottom, left, right),
                prompt.prompt,
                prompt.negative_prompt,
                prompt.guidance,
                weight,
                rows,
                cfg=cfg,
                always=always,
                owner=prompt.name,
            )
        )
    return windows


def brush_windows(
    plan: CanvasPlan, f: int, size: int, stride: int, rows: TextRows, *, cfg: bool = True
) -> list[Window]:
    """For each brush, the sliding windows (latent ``size``, ``stride``) where it has weight.

    A brush's weight is its mask blurred and scaled by its strength; inside a window the
    window takes the weight map as it is (MultiDiffusion's uniform views). ``cfg`` as in
    `prompt_windows`. On a wrapped axis the windows go round the canvas (`ring_spans`), those
    crossing its edge reaching past it into the ring-padded canvas.
    """
    height, width = plan.height // f, plan.width // f
    wrap_rows, wrap_cols = wrap_axes(plan.wrap)
    ys = ring_spans(height, size, stride) if wrap_rows else window_spans(
        height, min(size, height), stride)
    xs = ring_spans(width, size, stride) if wrap_cols else window_spans(
        width, min(size, width), stride)
    spans = [(top, bottom, left, right) for top, bottom in ys for left, right in xs]
    pads = ys[-1][1] - height, xs[-1][1] - width
    windows = []
    for brush in plan.brushes:
        weight = cells_to_latent(gaussian_blur(brush.cells, brush.blur / CELL,
                                               (wrap_rows, wrap_cols)), f) * brush.strength
        keep = cells_to_latent(brush.cells, f) if brush.bootstrap else None
        if pads != (0, 0):
            weight = ring_array(weight, *pads)
            keep = None if keep is None else ring_array(keep, *pads)
        for top, bottom, left, right in spans:
            crop = weight[top:bottom, left:right]
            if crop.max() > 0:
                windows.append(
                    _window(
                        (top, bottom, left, right),
                        brush.prompt,
                        brush.negative_prompt,
                        brush.guidance,
                        crop,
                        rows,
                        None if keep is None else keep[top:bottom, left:right],
                        cfg=cfg,
                        always=plan.compat == MOD,
                    )
                )
    return windows


def blend(
    latents_shape: torch.Size,
    windows: list[Window],
    predictions: list[torch.Tensor],
    pads: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """The weighted average of window predictions: ``sum_j w_j eps_j / sum_j w_j``.

    ``pads``: the rows and columns windows reach past a wrapped canvas's bottom and right
    edges; the sums are kept over the ring-padded canvas and folded back before dividing.

    Positions no window weighs come out as NaN; plans are checked to leave none, and weights
    are checked not to vanish in float32 (`hypermosaic.canvas.regions.WEIGHT_RANGE`). The loop
    refuses non-finite latents, so a NaN never reaches an image.
    """
    device = predictions[0].device if predictions else "cpu"
    n, c, height, width = latents_shape
    value = torch.zeros((n, c, height + pads[0], width + pads[1]), device=device)
    weight = torch.zeros((1, 1, height + pads[0], width + pads[1]), device=device)
    for window, eps in zip(windows, predictions, strict=True):
        top, bottom, left, right = window.box
        value[:, :, top:bottom, left:right] += window.weight * eps
        weight[:, :, top:bottom, left:right] += window.weight
    if pads != (0, 0):
        value, weight = ring_fold(value, height, width), ring_fold(weight, height, width)
    return value / weight


def guided(window: Window, out: torch.Tensor) -> torch.Tensor:
    """One window's prediction from its UNet rows: ensemble mix, then guidance."""
    conds = out[1:] if window.cfg else out
    eps = (
        conds[0:1]
        if len(conds) == 1
        else cast(torch.Tensor, sum(a * conds[k : k + 1] for k, a in enumerate(window.mix)))
    )
    if not window.cfg:
        return eps
    uncond = out[0:1]
    return uncond + window.guidance * (eps - uncond)


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embeddings ``(N, dim)`` float32 of guidance values ``w`` ``(N,)``: the
    ``timestep_cond`` of LCM-distilled UNets (the VDM embedding of ``1000 w``: sines, then
    cosines, at frequencies ``10000^(-k / (dim/2 - 1))``; an odd ``dim`` is zero-padded)."""
    half = dim // 2
    rate = torch.log(torch.tensor(10000.0)) / (half - 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -rate)
    angles = (w.float() * 1000.0)[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(embedding, (0, dim % 2))


def window_input(
    window: Window,
    scaled: torch.Tensor,
    backgrounds: dict[Box, torch.Tensor] | None = None,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """What ``window`` sees of the canvas's model input ``scaled``: the latents of its box,
    then its crop of ``condition`` (an inpainting UNet's mask and masked-photo channels).

    During bootstrap (``backgrounds``: each box's noised, scaled background) a window with a
    ``keep`` area sees ``keep * canvas + (1 - keep) * background``, so a brush denoises its
    own area over the background alone (StreamMultiDiffusion's prompt separation).
    """
    x = scaled[latent_slice(window.box)]
    if backgrounds is not None and window.keep is not None:
        x = window.keep * x + (1 - window.keep) * backgrounds[window.box]
    if condition is not None:
        x = torch.cat([x, condition[latent_slice(window.box)]], dim=1)
    return x


def latent_slice(box: Box) -> tuple[slice, ...]:
    """The index of ``box`` in a ``(N, C, H, W)`` latent tensor."""
    top, bottom, left, right = box
    return slice(None), slice(None), slice(top, bottom), slice(left, right)
