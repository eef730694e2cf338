"""Prompt conditioning of Stable Diffusion and SDXL-type models, shared by the build's engine
(`hypermosaic.pipelines.img2img`) and the canvas (`hypermosaic.pipelines.canvas`).

SDXL-type models (a UNet with ``addition_embed_type = "text_time"``: SDXL, its LCM and
inpainting forms) are conditioned on more than the text states: both text encoders' states,
concatenated, go to cross-attention; the second encoder's pooled embedding and six
micro-conditioning numbers, the *time ids* (original size, crop's top-left corner, target
size, in pixels, each ``(height, width)`` or ``(top, left)``), go to the UNet's added
embedding (SDXL paper, arXiv 2307.01952, section 2.2). The pipeline's own ``encode_prompt``
does the encoding, so both families are encoded exactly as diffusers encodes them.

- `encode_prompts(pipe, prompts, device, negatives=None)`: the named embeddings
  (`EMBEDDING_NAMES`) the pipeline gives for a batch of prompts.
- `is_sdxl(pipe)`: whether the UNet takes pooled embeddings and time ids.
- `time_ids(original, crop, target)`: the six numbers, in diffusers' order.
- `check_added_embedding(pipe)`: `InputError` naming ``model`` when the UNet's added
  embedding does not take six time ids and the pooled embedding (an SDXL refiner, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hypermosaic.errors import InputError

__all__ = [
    "EMBEDDING_NAMES",
    "TIME_IDS",
    "check_added_embedding",
    "encode_prompts",
    "is_sdxl",
    "time_ids",
]

# what `encode_prompt` returns, in order (SD and LCM: the first two; SDXL: all four)
EMBEDDING_NAMES = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)
TIME_IDS = 6  # original size (h, w), crop's top-left corner (top, left), target size (h, w)


def is_sdxl(pipe: Any) -> bool:
    """Whether ``pipe``'s UNet is conditioned on pooled embeddings and time ids (SDXL-type)."""
    return getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"


def encode_prompts(
    pipe: Any, prompts: Sequence[str], device: torch.device, negatives: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The embeddings of ``prompts`` by name (`EMBEDDING_NAMES`), as ``pipe.encode_prompt``
    gives them: ``prompt_embeds`` ``(N, T, D)``, for SDXL-type models also
    ``pooled_prompt_embeds`` ``(N, P)``; with ``negatives`` (classifier-free guidance) the
    negative prompts' too. One encoder call per encoder for the whole batch."""
    with torch.no_grad():
        encoded = pipe.encode_prompt(
            prompt=list(prompts),
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=negatives is not None,
            negative_prompt=None if negatives is None else list(negatives),
        )
    return {
        name: value
        for name, value in zip(EMBEDDING_NAMES, encoded, strict=False)
        if value is not None
    }


def time_ids(
    original: tuple[int, int], crop: tuple[int, int], target: tuple[int, int]
) -> tuple[int, ...]:
    """SDXL's micro-conditioning of one image, in pixels: ``original`` size ``(h, w)``, the
    ``crop``'s top-left corner ``(top, left)`` and the ``target`` size ``(h, w)``."""
    return (*original, *crop, *target)


def check_added_embedding(pipe: Any) -> None:
    """`InputError` naming ``model`` unless the UNet's added embedding takes `TIME_IDS`
    time ids and the pooled embedding (an SDXL refiner takes an aesthetic score instead)."""
    unet = pipe.unet
    encoder = getattr(pipe, "text_encoder_2", None) or pipe.text_encoder
    pooled = encoder.config.projection_dim
    wanted = unet.config.addition_time_embed_dim * TIME_IDS + pooled
    takes = unet.add_embedding.linear_1.in_features
    if takes != wanted:
        raise InputError(
            f"model: its UNet's added embedding takes {takes} values, not {TIME_IDS} time ids "
            f"and a pooled embedding of {pooled} ({wanted}); a refiner? use an SDXL base model"
        )
