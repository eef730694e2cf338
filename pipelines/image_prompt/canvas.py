"""Image prompts on canvas text regions: their rows of the embedding table, moved once per canvas.

A canvas embeds each distinct text once (`hypermosaic.pipelines.canvas.loop`); a text region
whose image prompt moves something (`encode.moves`) has rows of its own, keyed ``(text,
region name)``, which `guide_rows` replaces with their guided states before the first step,
so the guidance costs nothing per step or per window. Each vision model is loaded once per
pipeline, so once per worker (workers keep their pipeline), and each distinct image of a
canvas is embedded once, one vision call per vision model; concept prompts are encoded once.
Negative prompts are never moved. A plan whose image prompts move nothing keeps the very
table it has without them, so its pixels are the same bytes.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.image_prompts import GUIDANCE_KEYS
from hypermosaic.pipelines.image_prompt.checks import resolve_space
from hypermosaic.pipelines.image_prompt.encode import moves
from hypermosaic.pipelines.image_prompt.guidance import ImagePromptSettings, guide
from hypermosaic.pipelines.image_prompt.vision import (
    VisionModel,
    image_token_embeddings,
    load_vision_model,
)

__all__ = ["guide_rows", "guided_prompts", "vision_model"]

RowKey = tuple[str, str | None]
"""A row of the embedding table: ``(text, name of the guided prompt or None)``."""

_VISION: weakref.WeakKeyDictionary[Any, dict[tuple[str, str | None], VisionModel]] = (
    weakref.WeakKeyDictionary())


def guided_prompts(plan: CanvasPlan) -> frozenset[str]:
    """The names of the prompts of ``plan`` whose image prompt can move a token."""
    return frozenset(prompt.name for prompt in plan.prompts
                     if prompt.image_prompt is not None and moves(prompt.image_prompt.items))


def vision_model(pipe: Any, name: str, config: str | None) -> VisionModel:
    """The vision model ``name`` on ``pipe``'s device in its text encoder's dtype, loaded the
    first time ``pipe`` asks for it and kept while ``pipe`` lives."""
    models = _VISION.setdefault(pipe, {})
    if (name, config) not in models:
        dtype = str(pipe.text_encoder.dtype).removeprefix("torch.")
        models[name, config] = load_vision_model(name, str(pipe.unet.device), dtype, config)
    return models[name, config]


def guide_rows(pipe: Any, plan: CanvasPlan, table: Tensor, keys: Sequence[RowKey]) -> Tensor:
    """``table`` (R, T, D), whose row ``r`` embeds ``keys[r]``, with every row keyed by a
    guided prompt moved towards that prompt's image (`guidance.guide`)."""
    owners = {owner for _, owner in keys if owner is not None}
    active = {p.name: p.image_prompt for p in plan.prompts
              if p.name in owners and p.image_prompt is not None}
    if not active:
        return table
    items = {name: image_prompt.items for name, image_prompt in active.items()}
    # 1. image tokens: one vision call per vision model, each distinct image once
    groups: dict[tuple[str, str | None], dict[str, np.ndarray]] = {}
    for name, image_prompt in active.items():
        source = (items[name]["vision_model"], items[name]["vision_config"])
        groups.setdefault(source, {}).setdefault(image_prompt.digest, image_prompt.pixels)
    tokens: dict[tuple[str, str | None, str], Tensor] = {}
    for (model, config), images in groups.items():
        embedded = image_token_embeddings(vision_model(pipe, model, config),
                                          np.stack(list(images.values())), table.device,
                                          table.dtype)
        for j, digest in enumerate(images):
            tokens[model, config, digest] = embedded[j]
    # 2. concept prompts, each encoded once, without classifier-free guidance
    concepts = sorted({own["concept"] for own in items.values() if own["concept"]})
    concept_states: dict[str, Tensor] = {}
    if concepts:
        encoded = pipe.encode_prompt(prompt=concepts, device=table.device,
                                     num_images_per_prompt=1,
                                     do_classifier_free_guidance=False)[0]
        concept_states = {text: encoded[j : j + 1] for j, text in enumerate(concepts)}
    # 3. each guided row moved
    has_projection = hasattr(pipe.text_encoder, "text_projection")
    rows = []
    for row, (_, owner) in enumerate(keys):
        if owner is None:
            rows.append(table[row])
            continue
        own = items[owner]
        space = resolve_space(own["space"], has_projection)
        settings = ImagePromptSettings(**{**{key: own[key] for key in GUIDANCE_KEYS},
                                          "space": space})
        projection = (pipe.text_encoder.text_projection.weight if space == "projected"
                      else torch.eye(table.shape[-1], device=table.device))
        image = tokens[own["vision_model"], own["vision_config"], active[owner].digest]
        rows.append(guide(table[row : row + 1], image[None], projection, settings,
                          concept_states.get(own["concept"]))[0])
    return torch.stack(rows)
