"""The UNet calls of a stream step: every window of every latent of the ring, windows of one
shape batched together whatever latent they belong to, each row at its latent's timestep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hypermosaic.pipelines.canvas.predict import CallSize
from hypermosaic.pipelines.canvas.windows import Window, guidance_embedding, guided, window_input
from hypermosaic.pipelines.stream.ring import Slot
from hypermosaic.tiling import Box

__all__ = ["predict_slots"]


def _conditioning(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The conditioning keywords of several latents' rows joined along the batch."""
    joined: dict[str, Any] = {"encoder_hidden_states": torch.cat(
        [p["encoder_hidden_states"] for p in parts])}
    if "added_cond_kwargs" in parts[0]:
        joined["added_cond_kwargs"] = {
            key: torch.cat([p["added_cond_kwargs"][key] for p in parts])
            for key in parts[0]["added_cond_kwargs"]}
    return joined


def predict_slots(
    unet: Any,
    slots: Sequence[Slot],
    timesteps: torch.Tensor,
    backgrounds: Sequence[dict[Box, torch.Tensor] | None],
    call: CallSize,
) -> list[list[torch.Tensor]]:
    """Each latent's window predictions (guided, float32), in window order.

    ``slots[s]`` is at schedule index ``slots[s].step`` (its timestep in ``timesteps``) and
    sees ``backgrounds[s]`` during its bootstrap. Windows of every latent that share a shape
    go through the UNet together, up to ``call.windows`` per call (halved on out-of-memory).
    """
    embed_dim = getattr(unet.config, "time_cond_proj_dim", None)
    dtype = unet.dtype  # a property that walks the modules: once per frame, not per window
    out_of: list[list[torch.Tensor]] = [[torch.empty(0)] * len(s.scene.windows) for s in slots]
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for s, slot in enumerate(slots):
        for j, window in enumerate(slot.scene.windows):
            groups.setdefault(window.shape, []).append((s, j))
    for members in groups.values():
        start = 0
        while start < len(members):
            chunk = members[start : start + call.windows]
            inputs, times, guidance = [], [], []
            runs: dict[int, list[Window]] = {}  # each latent's windows of the chunk, in order
            for s, j in chunk:
                slot = slots[s]
                window = slot.scene.windows[j]
                condition = None if slot.scene.photo is None else slot.scene.photo.condition
                n = len(window.rows)
                inputs.append(window_input(window, slot.latents, backgrounds[s], condition
                                           ).expand(n, -1, -1, -1))
                times += [int(timesteps[slot.step])] * n
                guidance += [window.guidance - 1] * n
                runs.setdefault(s, []).append(window)
            x = torch.cat(inputs).to(dtype)
            extra = _conditioning([slots[s].scene.table.unet_kwargs(ws, dtype)
                                   for s, ws in runs.items()])
            if embed_dim is not None:
                extra["timestep_cond"] = guidance_embedding(torch.tensor(guidance), embed_dim
                                                            ).to(x.device, x.dtype)
            try:
                out = unet(x, torch.tensor(times, device=x.device), **extra).sample.float()
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                call.shrink(exc, len(chunk))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += len(chunk)
            offset = 0
            for s, j in chunk:
                window = slots[s].scene.windows[j]
                n = len(window.rows)
                out_of[s][j] = guided(window, out[offset : offset + n])
                offset += n
    return out_of
