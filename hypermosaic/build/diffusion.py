"""The ``[diffusion]`` table of a build config: the Stable Diffusion engine's model and what
goes with it (scheduler, dtype, batch, device, LoRAs, ControlNet), torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from hypermosaic.controlnet import TileControlNet, resolve_controlnet_paths
from hypermosaic.identity import Device, Dtype, SchedulerName
from hypermosaic.lora import LoraSpec, resolve_lora_paths
from hypermosaic.settings import Strict

__all__ = ["DiffusionConfig", "resolve_diffusion_paths"]


class DiffusionConfig(Strict):
    """The Stable Diffusion engine."""

    model: str | None = None
    config: str | None = None
    scheduler: SchedulerName = "default"
    dtype: Dtype = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] = 4
    device: Device = "auto"
    lora: list[LoraSpec] = []
    controlnet: TileControlNet | None = None


def resolve_diffusion_paths(table: Any, base: Path) -> None:
    """The LoRA and ControlNet paths of a raw ``[diffusion]`` table made relative to the
    config file's folder ``base``, in place."""
    resolve_lora_paths(table, base)
    resolve_controlnet_paths(table, base)
