"""The UNet calls of a canvas step: every window's guided prediction, windows of one shape
batched together, the batch halved when the device runs out of memory (`CallSize`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hypermosaic.pipelines.canvas.conditioning import TextTable
from hypermosaic.pipelines.canvas.windows import Window, guidance_embedding, guided, window_input
from hypermosaic.pipelines.controlnet import ControlWindows
from hypermosaic.pipelines.models import is_out_of_memory
from hypermosaic.tiling import Box

__all__ = ["CallSize", "predict_windows"]


@dataclass
class CallSize:
    """Windows per UNet call: the plan's ``batch_size``, halved (down to one) each time a call
    runs out of device memory, and kept halved for the later steps."""

    windows: int

    def shrink(self, exc: RuntimeError, tried: int) -> None:
        """After a call of ``tried`` windows raised ``exc``: on out-of-memory, half as many as
        were tried; re-raise anything else, or when a single window did not fit."""
        if not is_out_of_memory(exc) or tried == 1:
            raise exc
        self.windows = min(self.windows, tried) // 2


def predict_windows(
    unet: Any,
    windows: list[Window],
    scaled: torch.Tensor,
    table: TextTable,
    t: torch.Tensor,
    call: CallSize,
    backgrounds: dict[Box, torch.Tensor] | None = None,
    condition: torch.Tensor | None = None,
    control: ControlWindows | None = None,
) -> list[torch.Tensor]:
    """Every window's guided prediction, float32, in order; equal shapes share UNet calls of
    up to ``call.windows`` windows (halved on out-of-memory, see `CallSize`).

    ``scaled`` is the canvas's model input, each window seeing `window_input` (with its crop
    of an inpainting UNet's ``condition``) and its rows of ``table`` (with an SDXL-type UNet
    also their pooled embeddings and the window's time ids). A UNet with ``time_cond_proj_dim``
    gets each row's window guidance embedded as ``timestep_cond``; a ``control`` adds its
    ControlNet's residuals, each row conditioned on its window's crop.
    """
    embed_dim = getattr(unet.config, "time_cond_proj_dim", None)
    predictions: list[torch.Tensor] = [torch.empty(0)] * len(windows)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, window in enumerate(windows):
        groups.setdefault(window.shape, []).append(index)
    for members in groups.values():
        start = 0
        while start < len(members):
            chunk = members[start : start + call.windows]
            inputs = [
                window_input(windows[i], scaled, backgrounds, condition).expand(
                    len(windows[i].rows), -1, -1, -1)
                for i in chunk
            ]
            x = torch.cat(inputs).to(unet.dtype)
            extra = table.unet_kwargs([windows[i] for i in chunk], x.dtype)
            if embed_dim is not None:
                w = torch.tensor([windows[i].guidance - 1 for i in chunk for _ in windows[i].rows])
                extra["timestep_cond"] = guidance_embedding(w, embed_dim).to(x.device, x.dtype)
            try:
                if control is not None:
                    boxes = [windows[i].box for i in chunk for _ in windows[i].rows]
                    extra.update(control.residuals(x, t, boxes, extra))
                out = unet(x, t, **extra).sample.float()
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                call.shrink(exc, len(chunk))
                out = None
            if out is None:  # out of memory: the failed call's tensors are gone by now
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += len(chunk)
            offset = 0
            for i in chunk:
                n = len(windows[i].rows)
                predictions[i] = guided(windows[i], out[offset : offset + n])
                offset += n
    return predictions
