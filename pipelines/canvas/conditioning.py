"""What a canvas window's UNet rows are conditioned on: its texts' embeddings and, for
SDXL-type models, pooled embeddings and time ids per window.

Each distinct text of a canvas is encoded once (`encode_table`, through the build's
`hypermosaic.pipelines.sdxl.encode_prompts`, one call per text as diffusers makes for one
prompt) into a `TextTable`: its states ``(R, T, D)`` and, with an SDXL-type model (both text
encoders, `is_sdxl`), its pooled embeddings ``(R, P)``. A UNet call of several windows takes
each row's states and pooled embedding, and its window's *time ids*, SDXL's
micro-conditioning: a window is taken as the crop of the canvas at its place, so

    original size = the canvas's (height, width)
    crop top-left = the window's offset (top, left) in the canvas
    target size   = the window's (height, width)                        (all in pixels)

The unconditional row of a window gets the same time ids (diffusers' default). One window
covering the whole canvas thus gets diffusers' own ids ``(H, W, 0, 0, H, W)``. With a model
that zeroes empty prompts (``force_zeros_for_empty_prompt``, SDXL base), an empty text
(the default negative prompt) embeds as zeros, as diffusers' SDXL pipelines embed a missing
negative prompt.

SDXL-type models decode with a float32 VAE when theirs is float16 and asks for it
(``force_upcast``, SDXL's VAE overflows in float16), as diffusers' SDXL pipelines do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas.tiled_vae import cpu_vae, float32_vae
from hypermosaic.pipelines.canvas.windows import Window
from hypermosaic.pipelines.sdxl import check_added_embedding, encode_prompts, is_sdxl, time_ids

__all__ = ["TextTable", "check_sdxl", "decoding_vae", "encode_table", "window_time_ids"]


@dataclass(frozen=True)
class TextTable:
    """The embedding rows of a canvas's texts: ``states`` ``(R, T, D)``, and for SDXL-type
    models ``pooled`` ``(R, P)`` and the canvas's ``size`` ``(H, W)`` and VAE factor ``f``
    (for the time ids)."""

    states: torch.Tensor
    pooled: torch.Tensor | None = None
    size: tuple[int, int] = (0, 0)
    f: int = 1

    def unet_kwargs(self, windows: Sequence[Window], dtype: torch.dtype) -> dict[str, Any]:
        """The conditioning keywords of one UNet call over ``windows``' rows, in order."""
        rows = torch.tensor([row for window in windows for row in window.rows])
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.states[rows]}
        if self.pooled is not None:
            ids = torch.tensor([window_time_ids(window, self.size, self.f)
                                for window in windows for _ in window.rows])
            kwargs["added_cond_kwargs"] = {
                "text_embeds": self.pooled[rows],
                "time_ids": ids.to(self.pooled.device, dtype),
            }
        return kwargs


def window_time_ids(window: Window, size: tuple[int, int], f: int) -> tuple[int, ...]:
    """SDXL's time ids of ``window`` (a latent box) in a canvas of ``size`` px: the canvas's
    size, the window's offset and its size, in pixels."""
    top, bottom, left, right = (edge * f for edge in window.box)
    return time_ids(size, (top, left), (bottom - top, right - left))


def encode_table(pipe: Any, texts: Sequence[str], size: tuple[int, int], f: int,
                 device: torch.device) -> TextTable:
    """The `TextTable` of ``texts`` (row ``r`` embeds ``texts[r]``; each distinct text is
    encoded once) for a canvas of ``size`` px and VAE factor ``f``."""
    distinct = list(dict.fromkeys(texts))
    encoded = [encode_prompts(pipe, [text], device) for text in distinct]
    order = [distinct.index(text) for text in texts]
    states = torch.cat([e["prompt_embeds"] for e in encoded])[order]
    if not is_sdxl(pipe):
        return TextTable(states)
    pooled = torch.cat([e["pooled_prompt_embeds"] for e in encoded])[order]
    if getattr(pipe, "config", {}).get("force_zeros_for_empty_prompt", False):
        empty = torch.tensor([text == "" for text in texts], device=states.device)
        states = states.masked_fill(empty[:, None, None], 0.0)
        pooled = pooled.masked_fill(empty[:, None], 0.0)
    return TextTable(states, pooled, size, f)


def check_sdxl(pipe: Any, plan: CanvasPlan) -> None:
    """`InputError` naming the key for what an SDXL-type ``pipe`` cannot paint: image prompts
    (``regions.N.image_prompt``), or a UNet that takes other added conditions (``model``)."""
    if not is_sdxl(pipe):
        return
    for prompt in plan.prompts:
        if prompt.image_prompt is not None:
            raise InputError(f"{prompt.name}.image_prompt: models with two text encoders (SDXL) "
                             "are not supported yet; use an SD 1.x or 2.x model")
    check_added_embedding(pipe)


def decoding_vae(pipe: Any, cpu: bool) -> Any:
    """The VAE a canvas of ``pipe`` encodes and decodes with: float32 on the CPU with ``cpu``
    (`cpu_vae`), a float32 copy on its device for an SDXL-type model whose VAE is float16
    and asks to be upcast, else the model's own."""
    vae = pipe.vae
    if cpu:
        return cpu_vae(vae)
    if is_sdxl(pipe) and vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
        return float32_vae(vae, vae.device)
    return vae
