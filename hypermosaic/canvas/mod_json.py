"""Mixture of Diffusers' JSON grid configs, accepted as they are.

The JSON format of Mixture of Diffusers' ``generate_grid_from_json.py`` (``prompt``, ``tile_*``,
``gc``, ``gc_tiles``, ``seed``, ``steps``, ``scheduler``, ``cpu_vae``, ``seed_tiles``,
``seed_tiles_mode``, ``seed_reroll_regions``, and the ``git_commit`` that its ``generate_grid.py``
logs, which is ignored) is validated key for key (`TilingJson`) and translated to the canonical
(TOML-shaped) mapping, so a JSON file and its TOML twin give the same plan. As there, reroll
regions are in pixels at any position and are floored to the 8-pixel latent grid; errors name
JSON keys (``seed_reroll_regions[0]``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from hypermosaic.canvas.config import check_grid
from hypermosaic.canvas.regions import PIXEL_MULTIPLE, Guidance, Prompt, Seed
from hypermosaic.errors import InputError
from hypermosaic.identity import SchedulerName
from hypermosaic.settings import Strict, validation_message

__all__ = ["TilingJson", "tiling_json_to_canonical"]


class TilingJson(Strict):
    """Mixture of Diffusers' JSON grid config, key for key (``generate_grid_from_json.py``)."""

    prompt: list[list[Prompt]]
    tile_height: int = 512
    tile_width: int = 512
    tile_row_overlap: int = 256
    tile_col_overlap: int = 256
    gc: Guidance = 7.5
    gc_tiles: list[list[Guidance | None]] | None = None
    seed: Seed = 0
    steps: Annotated[int, Field(ge=1, le=1000)] = 50
    scheduler: SchedulerName = "default"
    cpu_vae: bool = False
    seed_tiles: list[list[Seed | None]] | None = None
    seed_tiles_mode: Any = "full"
    seed_reroll_regions: list[tuple[int, int, int, int, Seed]] = []
    git_commit: str | None = None  # informational: generate_grid.py logs its commit

    @field_validator("seed_tiles_mode")
    @classmethod
    def _modes(cls, value: Any) -> Any:
        modes = ("full", "exclusive")
        if isinstance(value, list) and not all(isinstance(row, list) for row in value):
            raise ValueError("a mode (full or exclusive) or a grid of modes (list of rows)")
        cells = [m for row in value for m in row] if isinstance(value, list) else [value]
        for mode in cells:
            if mode not in modes:
                raise ValueError(f"{mode!r} is not a seed mode (full or exclusive)")
        return value

    @model_validator(mode="after")
    def _shapes(self) -> TilingJson:
        check_grid(self.prompt, self.tile_height, self.tile_width, self.tile_row_overlap,
                   self.tile_col_overlap)
        grids = {"gc_tiles": self.gc_tiles, "seed_tiles": self.seed_tiles,
                 "seed_tiles_mode": self.seed_tiles_mode}
        for key, grid in grids.items():
            if isinstance(grid, list) and [len(r) for r in grid] != [len(r) for r in self.prompt]:
                raise ValueError(
                    f"{key}: its rows do not match the prompt grid "
                    f"({len(self.prompt)} rows of {len(self.prompt[0])})"
                )
        height = self.tile_height + (len(self.prompt) - 1) * (self.tile_height
                                                              - self.tile_row_overlap)
        width = self.tile_width + (len(self.prompt[0]) - 1) * (self.tile_width
                                                               - self.tile_col_overlap)
        for index, (top, bottom, left, right, _) in enumerate(self.seed_reroll_regions):
            _check_reroll(f"seed_reroll_regions[{index}]", (top, bottom, left, right),
                          height, width)
        return self

    def reroll_boxes(self) -> list[tuple[int, int, int, int, int]]:
        """The reroll regions floored to the latent grid, as Mixture of Diffusers does."""
        m = PIXEL_MULTIPLE
        return [(top // m * m, bottom // m * m, left // m * m, right // m * m, seed)
                for top, bottom, left, right, seed in self.seed_reroll_regions]

    def canonical(self) -> dict[str, Any]:
        """The same canvas as a canonical (TOML-shaped) config mapping."""
        tiles = []
        for r, row in enumerate(self.prompt):
            for c in range(len(row)):
                guidance = self.gc_tiles[r][c] if self.gc_tiles else None
                seed = self.seed_tiles[r][c] if self.seed_tiles else None
                mode = self.seed_tiles_mode[r][c] if isinstance(self.seed_tiles_mode, list) \
                    else None
                if guidance is None and seed is None:
                    continue
                tile: dict[str, Any] = {"row": r, "col": c}
                if guidance is not None:
                    tile["guidance"] = guidance
                if seed is not None:
                    tile["seed"] = seed
                    if mode is not None:
                        tile["seed_mode"] = mode
                tiles.append(tile)
        grid = {
            "prompt": self.prompt,
            "tile_height": self.tile_height,
            "tile_width": self.tile_width,
            "tile_row_overlap": self.tile_row_overlap,
            "tile_col_overlap": self.tile_col_overlap,
            "guidance": self.gc,
            "seed_tiles_mode": self.seed_tiles_mode if isinstance(self.seed_tiles_mode, str)
            else "full",
            "tiles": tiles,
        }
        regions = [
            {"kind": "reroll", "top": top, "bottom": bottom, "left": left, "right": right,
             "seed": seed}
            for top, bottom, left, right, seed in self.reroll_boxes()
        ]
        return {"seed": self.seed, "steps": self.steps, "scheduler": self.scheduler,
                "cpu_vae": self.cpu_vae, "grid": grid, "regions": regions}


def _check_reroll(key: str, box: tuple[int, int, int, int], height: int, width: int) -> None:
    """A JSON reroll box ``(top, bottom, left, right)`` in pixels must keep at least one latent
    position after flooring to multiples of 8 and lie on the canvas; ValueError naming ``key``."""
    top, bottom, left, right = box
    for name, edge, side, limit in (("top", top, "height", height),
                                    ("bottom", bottom, "height", height),
                                    ("left", left, "width", width),
                                    ("right", right, "width", width)):
        if not 0 <= edge <= limit:
            raise ValueError(f"{key}: {name} {edge} is outside the canvas ({side} {limit})")
    for start, end, what in ((top, bottom, "rows"), (left, right, "columns")):
        if end // PIXEL_MULTIPLE <= start // PIXEL_MULTIPLE:
            raise ValueError(
                f"{key}: {what} {start}-{end} hold no whole latent position once floored to "
                f"multiples of {PIXEL_MULTIPLE}"
            )




def tiling_json_to_canonical(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A Mixture of Diffusers JSON config (as read) as the canonical config mapping;
    `InputError` naming the JSON key (``seed_reroll_regions[0]``) and ``source``."""
    try:
        return TilingJson.model_validate(raw).canonical()
    except ValidationError as exc:
        raise InputError(validation_message(exc, source, docs="docs/canvas.md",
                                            brackets=True)) from None
