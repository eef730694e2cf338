"""LoRAs in configs: the ``lora = [{ path, scale, fuse }]`` schema, torch-free.

A LoRA is a small ``.safetensors`` file of low-rank weight changes for a model's UNet and text
encoders (LCM-LoRA, styles, subjects). The build (``[diffusion]``) and canvas configs take a
list of them; each is checked against the model on the client before any work
(`hypermosaic.registry.check_loras`) and loaded once per worker with the pipeline
(`hypermosaic.pipelines.lora`). What decides the pixels (file content, scale, fusing) is what
`lora_settings` and `lora_identity` give the model cache and the fingerprints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from hypermosaic.identity import model_file_digest
from hypermosaic.settings import Strict

__all__ = [
    "LoraSetting",
    "LoraSpec",
    "lora_identity",
    "lora_settings",
    "resolve_lora_paths",
]

LORA_SUFFIX = ".safetensors"

LoraSetting = tuple[str, float, bool]
"""``(path, scale, fuse)`` of one LoRA: hashable, for a worker's model cache key."""


class LoraSpec(Strict):
    """One LoRA: its ``.safetensors`` file, the ``scale`` its changes are applied at (0: none,
    1: as trained) and whether they are ``fuse``d into the weights at load (faster steps, the
    same image up to float rounding)."""

    path: str
    scale: Annotated[float, Field(ge=-8, le=8)] = 1.0
    fuse: bool = False

    @field_validator("path")
    @classmethod
    def _safetensors(cls, value: str) -> str:
        path = Path(value)
        if path.suffix.lower() != LORA_SUFFIX:
            raise ValueError(f"{value}: a LoRA must be a .safetensors file (pickled .pt, .pth "
                             "and .ckpt files are not loaded; convert it to safetensors)")
        if not path.is_file():
            raise ValueError(f"{value}: no such file")
        return value


def resolve_lora_paths(table: Any, base: Path) -> None:
    """Make the relative ``path`` of each entry of ``table["lora"]`` (a raw config table, as
    read from TOML) relative to the config file's folder ``base``, in place."""
    loras = table.get("lora") if isinstance(table, dict) else None
    for entry in loras if isinstance(loras, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["path"] = str(base / Path(entry["path"]).expanduser())


def lora_settings(loras: Sequence[LoraSpec]) -> tuple[LoraSetting, ...]:
    """What a worker loads, as `LoraSetting`\\ s."""
    return tuple((lora.path, lora.scale, lora.fuse) for lora in loras)


def lora_identity(loras: Sequence[LoraSpec], key: str) -> list[dict[str, Any]]:
    """The LoRAs as fingerprinted: each file by content (`model_file_digest`, not by path),
    its scale and fusing; `InputError` naming ``key.N.path`` if a file cannot be read."""
    return [{"file": model_file_digest(lora.path, f"{key}.{index}.path"),
             "scale": lora.scale, "fuse": lora.fuse} for index, lora in enumerate(loras)]
