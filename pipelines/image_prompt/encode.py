"""Image prompts applied to a batch of tiles' prompt states (the build's diffusion engine).

`ImagePrompts` belongs to one engine, so to one worker: it loads each CLIP vision model once,
embeds a batch's guide images (each tile's init for ``image = "tile"``, or the style image the
engine was given) in one vision call, and moves each guided tile's prompt states with
`guidance.guide`; negative prompts are never touched. A tile whose settings move nothing (every
weight 0 and no concept prompt) is not guided at all: the engine then passes the very tensors
it passes without an image prompt (`with_guidance`), so its pixels are the same bytes.
Tiles with ``method = "ip_adapter"`` are not guided here: `ImagePrompts.embed` gives their image
embeddings (one vision call per batch too) and `adapter` their IP-Adapter file, which the engine
runs (`hypermosaic.pipelines.image_prompt.ip_adapter`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hypermosaic.build.engines import TileJob
from hypermosaic.image_prompts import GUIDANCE_KEYS, IP_ADAPTER, TILE
from hypermosaic.images import decode
from hypermosaic.pipelines.image_prompt.checks import resolve_space
from hypermosaic.pipelines.image_prompt.guidance import ImagePromptSettings, guide
from hypermosaic.pipelines.image_prompt.ip_adapter import IPAdapters, locate_ip_adapter
from hypermosaic.pipelines.image_prompt.vision import (
    VisionModel,
    image_embeddings,
    image_token_embeddings,
    load_vision_model,
)

__all__ = ["ImagePrompts", "moves", "with_guidance"]

WEIGHT_KEYS = ("linear_start", "linear_end", "clustered", "threshold")


def moves(prompt: dict[str, Any]) -> bool:
    """Whether an image prompt (a job's items as a dict) can change any prompt token."""
    if prompt["method"] != "flex" or prompt["concept"]:
        return True
    return prompt["max_image_guidance"] > 0 and any(prompt[key] != 0 for key in WEIGHT_KEYS)


def with_guidance(states: Tensor, guided: Sequence[Tensor | None]) -> Tensor:
    """``states`` (B, T, D) with row ``b`` replaced by ``guided[b]`` where given; ``states``
    itself when nothing is given."""
    if all(row is None for row in guided):
        return states
    return torch.stack([own if row is None else row for own, row in zip(states, guided,
                                                                          strict=True)])


class ImagePrompts:
    """Image guidance for one engine: vision models on ``device`` in ``dtype`` (the engine's
    names), and the style images it was given as ``(key, encoded image)`` pairs."""

    def __init__(self, device: str, dtype: str, style_images: Sequence[tuple[str, bytes]] = ()
                 ) -> None:
        self.device, self.dtype = device, dtype
        self.styles = {key: decode(data) for key, data in style_images}
        self._vision: dict[tuple[str, str | None], VisionModel] = {}
        self._adapters: dict[tuple[str, str, str | None], Path] = {}
        self.ip_adapters = IPAdapters()

    def vision(self, name: str, config: str | None) -> VisionModel:
        """The vision model ``name``, loaded the first time it is asked for."""
        if (name, config) not in self._vision:
            self._vision[name, config] = load_vision_model(name, self.device, self.dtype, config)
        return self._vision[name, config]

    def adapter(self, prompt: dict[str, Any]) -> Path:
        """The IP-Adapter file of an ``ip_adapter`` image prompt (a job's items as a dict)."""
        key = (prompt["ip_adapter"], prompt["ip_adapter_subfolder"],
               prompt["ip_adapter_weight_name"])
        if key not in self._adapters:
            self._adapters[key] = locate_ip_adapter(*key)
        return self._adapters[key]

    def embed(self, jobs: Sequence[TileJob], inits: np.ndarray, device: torch.device,
              dtype: torch.dtype) -> dict[int, Tensor]:
        """The CLIP image embedding (D,) of each ``ip_adapter`` tile, by index into ``jobs``."""
        active = {i: dict(job.image_prompt) for i, job in enumerate(jobs)
                  if job.image_prompt is not None
                  and dict(job.image_prompt)["method"] == IP_ADAPTER}
        return self._embedded(active, inits, image_embeddings, device, dtype)

    def guide(self, pipe: Any, states: Tensor, jobs: Sequence[TileJob], inits: np.ndarray
              ) -> dict[int, Tensor]:
        """The guided prompt states (T, D) of each tile its image prompt moves, by index into
        ``jobs``; ``states`` (B, T, D) are the tiles' own, in the order of ``jobs``."""
        # 1. the tiles an image prompt moves (an IP-Adapter moves no prompt token)
        active = {i: dict(job.image_prompt) for i, job in enumerate(jobs)
                  if job.image_prompt is not None and dict(job.image_prompt)["method"] !=
                  IP_ADAPTER and moves(dict(job.image_prompt))}
        if not active:
            return {}
        # 2. image tokens: one vision call per vision model (siblings share one), each image once
        tokens = self._embedded(active, inits, image_token_embeddings, states.device,
                                states.dtype)
        # 3. concept prompts, each encoded once, without classifier-free guidance
        concepts = sorted({prompt["concept"] for prompt in active.values() if prompt["concept"]})
        concept_states = {}
        if concepts:
            with torch.no_grad():
                encoded = pipe.encode_prompt(prompt=concepts, device=states.device,
                                             num_images_per_prompt=1,
                                             do_classifier_free_guidance=False)[0]
            concept_states = {text: encoded[j : j + 1] for j, text in enumerate(concepts)}
        # 4. each tile's own prompt states moved
        has_projection = hasattr(pipe.text_encoder, "text_projection")
        guided = {}
        for i, prompt in active.items():
            space = resolve_space(prompt["space"], has_projection)
            settings = ImagePromptSettings(**{**{key: prompt[key] for key in GUIDANCE_KEYS},
                                              "space": space})
            projection = (pipe.text_encoder.text_projection.weight if space == "projected"
                          else torch.eye(states.shape[-1], device=states.device))
            guided[i] = guide(states[i : i + 1], tokens[i][None], projection, settings,
                              concept_states.get(prompt["concept"]))[0]
        return guided

    def _embedded(self, active: dict[int, dict[str, Any]], inits: np.ndarray,
                  embed: Callable[..., Tensor], device: torch.device, dtype: torch.dtype
                  ) -> dict[int, Tensor]:
        """``embed`` of each active tile's image, by index: one call per vision model
        (siblings share one), each image once."""
        embedded: dict[int, Tensor] = {}
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, prompt in active.items():
            groups.setdefault((prompt["vision_model"], prompt["vision_config"]), []).append(i)
        for (name, config), members in groups.items():
            # a tile's own init by its index, a style image by its key
            keys: list[int | str] = [i if active[i]["image"] == TILE else active[i]["image"]
                                     for i in members]
            distinct = list(dict.fromkeys(keys))
            images = np.stack([inits[key] if isinstance(key, int) else self.styles[key]
                               for key in distinct])
            values = embed(self.vision(name, config), images, device, dtype)
            for i, key in zip(members, keys, strict=True):
                embedded[i] = values[distinct.index(key)]
        return embedded
