"""Reading a canvas config file: TOML, or a Mixture of Diffusers JSON (`mod_json`)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from hypermosaic.canvas.config import CanvasConfig, CanvasWarning, canvas_config_from_dict
from hypermosaic.canvas.mod_json import read_tiling_json
from hypermosaic.settings import read_config_file

__all__ = ["load_canvas_config"]


def load_canvas_config(path: Path | str, overrides: dict[str, Any] | None = None) -> CanvasConfig:
    """Read a canvas config (``.toml``, or a Mixture of Diffusers ``.json``) and validate it.

    ``overrides`` maps dotted canonical keys (``steps``, ``grid.tile_height``) to values laid
    over the file; ``None`` values are skipped. Relative paths in the file are resolved against
    its folder; ``name`` defaults to the file's stem. Raises `InputError` naming the file and
    the key. A JSON setting that runs otherwise than written (`mod_json`) is reported as a
    `CanvasWarning` naming the file and the JSON key.
    """
    path = Path(path)
    raw = read_config_file(path, json_kind="canvas")
    notes: list[str] = []
    if path.suffix == ".json":
        tiling = read_tiling_json(raw, str(path))
        raw, notes = tiling.canonical(), tiling.notes()
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "canvas")
    config = canvas_config_from_dict(raw, base=path.parent, source=str(path), overrides=overrides)
    for note in notes:
        warnings.warn(f"{path}: {note}", CanvasWarning, stacklevel=2)
    return config
