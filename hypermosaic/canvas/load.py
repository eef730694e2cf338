"""Reading a canvas config file: TOML, or a Mixture of Diffusers JSON (`mod_json`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypermosaic.canvas.config import CanvasConfig, canvas_config_from_dict
from hypermosaic.canvas.mod_json import tiling_json_to_canonical
from hypermosaic.settings import read_config_file

__all__ = ["load_canvas_config"]


def load_canvas_config(path: Path | str, overrides: dict[str, Any] | None = None) -> CanvasConfig:
    """Read a canvas config (``.toml``, or a Mixture of Diffusers ``.json``) and validate it.

    ``overrides`` maps dotted canonical keys (``steps``, ``grid.tile_height``) to values laid
    over the file; ``None`` values are skipped. Relative paths in the file are resolved against
    its folder; ``name`` defaults to the file's stem. Raises `InputError` naming the key.
    """
    path = Path(path)
    raw = read_config_file(path, json_kind="canvas")
    if path.suffix == ".json":
        raw = tiling_json_to_canonical(raw, str(path))
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "canvas")
    return canvas_config_from_dict(raw, base=path.parent, source=str(path), overrides=overrides)
