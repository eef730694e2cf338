"""The detail pass of an upscale (``--refine``, a ``[refine]`` block): its settings, checked.

After Real-ESRGAN, the enlarged image is redrawn at a low img2img ``strength`` in overlapping
windows of the diffusion model's size (`hypermosaic.upscale.strips` plans them), so that real
detail appears where ESRGAN only sharpened. The settings come from a config file's
``[refine]`` table with the command-line options laid over it; each error is one line naming
the key (``refine.strength``, or the option that gave it, ``--refine-strength``) and is raised
before any work. An optional ControlNet Tile (``controlnet = { model, scale }``) conditions
each window on its own enlarged pixels, so that the redrawing keeps their structure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from hypermosaic.controlnet import (
    TileControlNet,
    controlnet_identity,
    resolve_controlnet_paths,
)
from hypermosaic.errors import InputError
from hypermosaic.identity import SchedulerName, model_file_digest
from hypermosaic.settings import Strict, read_config_file, validation_message

__all__ = ["OPTIONS", "RefineConfig", "refine_config", "refine_fingerprint"]

OPTIONS = {
    "prompt": "--refine",
    "strength": "--refine-strength",
    "model": "--refine-model",
    "steps": "--refine-steps",
    "batch_size": "--refine-batch",
    "noise_inversion": "--noise-inversion",
    "controlnet.model": "--refine-controlnet",
    "controlnet.scale": "--refine-controlnet-scale",
}
"""The command-line option of each ``[refine]`` key that has one (errors name the option;
``controlnet.model`` is the ``model`` key of the ``controlnet`` table)."""


class RefineConfig(Strict):
    """A detail pass: the prompt (or a grid of prompts over the image), the model, the img2img
    strength and steps, the windows (pixels; by default the model's native side, overlapping
    by half), and the options that keep the structure (noise inversion, a ControlNet Tile)."""

    prompt: str | None = None
    grid: list[list[str]] | None = None
    negative_prompt: str = ""
    model: str
    strength: Annotated[float, Field(gt=0, le=1)] = 0.3
    steps: Annotated[int, Field(ge=1, le=1000)] = 20
    guidance: Annotated[float, Field(ge=0, le=50)] = 7.5
    scheduler: SchedulerName = "default"
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    batch_size: Annotated[int, Field(ge=1, le=256)] = 8
    window: Annotated[int, Field(ge=16, multiple_of=8)] | None = None
    overlap: Annotated[int, Field(ge=0, multiple_of=8)] | None = None
    noise_inversion: bool = False
    controlnet: TileControlNet | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> RefineConfig:
        if (self.prompt is None) == (self.grid is None):
            raise ValueError("give prompt (one for the whole image) or grid (rows of prompts)")
        if self.grid is not None:
            if not self.grid or not self.grid[0] or len({len(r) for r in self.grid}) != 1:
                raise ValueError("grid: rows of prompts, all of the same length")
        if self.window is not None and self.overlap is not None and self.overlap >= self.window:
            raise ValueError(f"overlap: {self.overlap} must be smaller than window "
                             f"{self.window}")
        return self

    def prompt_at(self, y: float, x: float) -> str:
        """The prompt of a window centred at ``(y, x)``, as fractions of the image's sides:
        the single prompt, or the grid cell it falls in."""
        if self.grid is None:
            return self.prompt or ""
        rows, cols = len(self.grid), len(self.grid[0])
        return self.grid[min(rows - 1, int(y * rows))][min(cols - 1, int(x * cols))]


def refine_config(overrides: dict[str, Any], *, config: Path | None = None
                  ) -> RefineConfig | None:
    """The detail pass asked for: ``config``'s ``[refine]`` table (when a file is given) with
    the command-line ``overrides`` (``[refine]`` keys; None for an option not given) laid
    over it, or None when neither a file nor a prompt is given.

    Raises `InputError`, in one line naming the option or key, before any work: a strength
    outside (0, 1], a missing model or prompt, options of a pass that is not asked for.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    if config is None and "prompt" not in given:
        if given:
            key = next(iter(given))
            raise InputError(f"{OPTIONS.get(key, 'refine.' + key)}: needs --refine PROMPT (or "
                             "--refine-config)")
        return None
    table: dict[str, Any] = read_config_file(config) if config is not None else {}
    section = dict(table.get("refine", {}))
    if config is not None:
        resolve_controlnet_paths(section, config.parent)
    for key, value in given.items():  # a dotted key sets a key of a nested table
        *tables, name = key.split(".")
        inner = section
        for part in tables:
            inner[part] = dict(inner.get(part) or {})
            inner = inner[part]
        inner[name] = value
    table["refine"] = section
    try:
        return _Config.model_validate(table).refine
    except ValidationError as exc:
        loc = [str(part) for part in exc.errors()[0]["loc"]]
        message = validation_message(exc, "x", docs="docs/upscale.md").split(": ", 2)[-1]
        key = ".".join(loc[1:])
        if key in OPTIONS and (config is None or key in given):
            raise InputError(f"{OPTIONS[key]}: {message}") from None
        where = f"{config}: " if config is not None else ""
        raise InputError(f"{where}{'.'.join(loc)}: {message}") from None


class _Config(Strict):
    """An upscale config file: its one ``[refine]`` table."""

    refine: RefineConfig


def refine_fingerprint(refine: RefineConfig) -> str:
    """What of a detail pass decides its pixels, as one JSON line for the output's record
    (a model file is identified by a digest of its content, as ESRGAN weights are; without a
    ControlNet the line is the one of the passes made before there was one)."""
    settings = refine.model_dump()
    digest = model_file_digest(refine.model, "refine.model")
    if digest is not None:
        settings["model"] = f"weights {digest}"
    if refine.controlnet is None:
        del settings["controlnet"]
    else:
        settings["controlnet"] = controlnet_identity(refine.controlnet, "refine.controlnet")
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
