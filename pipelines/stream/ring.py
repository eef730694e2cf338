"""The ring's parts: what a latent is painted with (`Scene`) and the latent itself (`Slot`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hypermosaic.canvas.plan import CanvasPlan
from hypermosaic.pipelines.canvas.conditioning import TextTable
from hypermosaic.pipelines.canvas.photo import Photo
from hypermosaic.pipelines.canvas.windows import Window

__all__ = ["Scene", "Slot"]


@dataclass
class Scene:
    """What a latent is painted with, from one plan: windows on the device, the texts'
    embeddings, the photo and the bootstrap background (white, encoded)."""

    plan: CanvasPlan
    windows: list[Window]
    table: TextTable
    photo: Photo | None
    white: torch.Tensor | None


@dataclass
class Slot:
    """One latent of the ring: its frame ``index`` and ``seed``, its scene, latents, initial
    noise, generator (for the step noise) and the schedule index it is at."""

    index: int
    seed: int
    scene: Scene
    latents: torch.Tensor
    noise: torch.Tensor
    generator: torch.Generator
    step: int = 0
