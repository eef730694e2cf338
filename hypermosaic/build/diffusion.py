"""The ``[diffusion]`` table of a build config: the Stable Diffusion engine's model and what
goes with it (scheduler, dtype, batch, device, LoRAs, ControlNet), torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from hypermosaic.controlnet import TILE_IMAGE, ControlNetSpec, resolve_controlnet_paths
from hypermosaic.identity import Dtype, SchedulerName, check_device
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
    device: str = "auto"
    lora: list[LoraSpec] = []
    controlnet: ControlNetSpec | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("controlnet")
    @classmethod
    def _tile_control(cls, value: ControlNetSpec | None) -> ControlNetSpec | None:
        if value is not None and value.image != TILE_IMAGE:
            raise ValueError(f"image = {value.image!r} is for canvases; a build conditions "
                             'each tile on itself (image = "tile")')
        return value


def resolve_diffusion_paths(table: Any, base: Path) -> None:
    """The LoRA and ControlNet paths of a raw ``[diffusion]`` table made relative to the
    config file's folder ``base``, in place."""
    resolve_lora_paths(table, base)
    resolve_controlnet_paths(table, base)
