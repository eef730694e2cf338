"""Mixture of Diffusers' JSON grid configs, accepted as they are.

The JSON format of Mixture of Diffusers' ``generate_grid_from_json.py`` (``prompt``, ``tile_*``,
``gc``, ``gc_tiles``, ``seed``, ``steps``, ``scheduler``, ``cpu_vae``, ``seed_tiles``,
``seed_tiles_mode``, ``seed_reroll_regions``, and the ``git_commit`` that its ``generate_grid.py``
logs, which is ignored) is validated key for key (`TilingJson`) and translated to the canonical
(TOML-shaped) mapping with ``compat = "mixture-of-diffusers"``, so that it runs as Mixture of
Diffusers runs it (`hypermosaic.canvas.plan`). Errors name JSON keys
(``seed_reroll_regions[0]``).

What Mixture of Diffusers accepts is accepted: tile sides and overlaps that are not multiples
of 8 (tile edges are floored to multiples of 8, as its latent indices are), any finite ``gc``,
reroll boxes at any position (floored to the latent grid). Where hypermosaic does something
else, or what was written is not quite what runs, `TilingJson.notes` says so (the loader
turns them into warnings): a reroll box clipped to the canvas, one that holds no latent
position, a ``gc`` of 1 or less (it stops with an error there), a scheduler it does not know.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from hypermosaic.canvas.config import check_grid, config_error, floor8
from hypermosaic.canvas.regions import MOD, PIXEL_MULTIPLE, Prompt, Seed
from hypermosaic.identity import SchedulerName
from hypermosaic.settings import Strict

__all__ = ["MOD_SCHEDULERS", "TilingJson", "read_tiling_json"]

MOD_SCHEDULERS = ("ddim", "lms")
"""The schedulers ``generate_grid_from_json.py`` knows (it refuses any other)."""

Box = tuple[int, int, int, int]


class TilingJson(Strict):
    """Mixture of Diffusers' JSON grid config, key for key (``generate_grid_from_json.py``)."""

    prompt: list[list[Prompt]]
    tile_height: int = 512
    tile_width: int = 512
    tile_row_overlap: int = 256
    tile_col_overlap: int = 256
    gc: float = 7.5
    gc_tiles: list[list[float | None]] | None = None
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
                   self.tile_col_overlap, mod=True)
        grids = {"gc_tiles": self.gc_tiles, "seed_tiles": self.seed_tiles,
                 "seed_tiles_mode": self.seed_tiles_mode}
        for key, grid in grids.items():
            if isinstance(grid, list) and [len(r) for r in grid] != [len(r) for r in self.prompt]:
                raise ValueError(
                    f"{key}: its rows do not match the prompt grid "
                    f"({len(self.prompt)} rows of {len(self.prompt[0])})"
                )
        for index, (top, bottom, left, right, _) in enumerate(self.seed_reroll_regions):
            key = f"seed_reroll_regions[{index}]"
            for name, edge in (("top", top), ("bottom", bottom), ("left", left),
                               ("right", right)):
                if edge < 0:
                    raise ValueError(f"{key}: {name} {edge} is outside the canvas (negative)")
            for start, end, what in ((top, bottom, "rows"), (left, right, "columns")):
                if floor8(end) < floor8(start):
                    raise ValueError(f"{key}: {what} {start}-{end} end before they start")
        return self

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the canvas in pixels: the grid's span floored to 8."""
        rows, cols = len(self.prompt), len(self.prompt[0])
        return (floor8(self.tile_height + (rows - 1) * (self.tile_height - self.tile_row_overlap)),
                floor8(self.tile_width + (cols - 1) * (self.tile_width - self.tile_col_overlap)))

    def reroll_boxes(self) -> list[tuple[Box, Box, int]]:
        """Each reroll region as ``(floored box, box clipped to the canvas, seed)``, in pixels:
        floored to the latent grid as Mixture of Diffusers does."""
        height, width = self.size
        boxes = []
        for top, bottom, left, right, seed in self.seed_reroll_regions:
            box = (floor8(top), floor8(bottom), floor8(left), floor8(right))
            clipped = (min(box[0], height), min(box[1], height), min(box[2], width),
                       min(box[3], width))
            boxes.append((box, clipped, seed))
        return boxes

    def notes(self) -> list[str]:
        """What to warn about: settings accepted as Mixture of Diffusers does that are not
        quite what was written, and where hypermosaic does otherwise; each names its key."""
        notes = []
        height, width = self.size
        rows, cols = len(self.prompt), len(self.prompt[0])
        for key, count in (("tile_height", 0), ("tile_width", 0),
                           ("tile_row_overlap", rows), ("tile_col_overlap", cols)):
            value = getattr(self, key)
            if value % PIXEL_MULTIPLE and count != 1:
                notes.append(f"{key}: {value} is not a multiple of {PIXEL_MULTIPLE}: as in "
                             f"Mixture of Diffusers, tile edges are floored to multiples of "
                             f"{PIXEL_MULTIPLE}, and the canvas is {width}x{height} px")
        if self.gc <= 1:
            notes.append(f"gc: {self.gc:g} is 1 or less, where Mixture of Diffusers stops with "
                         "an error; here every tile is still guided, at its gc_tiles or gc")
        if "scheduler" not in self.model_fields_set:
            notes.append("scheduler: missing, which Mixture of Diffusers refuses (it takes "
                         f"{' or '.join(MOD_SCHEDULERS)}); the model's own scheduler is used")
        elif self.scheduler not in MOD_SCHEDULERS:
            notes.append(f"scheduler: {self.scheduler!r} is not one Mixture of Diffusers knows "
                         f"({', '.join(MOD_SCHEDULERS)}); hypermosaic's, from the model's "
                         "scheduler config, is used")
        for index, (box, clipped, _) in enumerate(self.reroll_boxes()):
            key = f"seed_reroll_regions[{index}]"
            if clipped[0] >= clipped[1] or clipped[2] >= clipped[3]:
                notes.append(f"{key}: holds no latent position of the {width}x{height} px "
                             f"canvas once floored to multiples of {PIXEL_MULTIPLE}; it "
                             "changes nothing")
            elif clipped != box:
                notes.append(f"{key}: reaches past the {width}x{height} px canvas and is "
                             "clipped to it (Mixture of Diffusers stops with an error there)")
        return notes

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
            for _, (top, bottom, left, right), seed in self.reroll_boxes()
            if top < bottom and left < right
        ]
        return {"seed": self.seed, "steps": self.steps, "scheduler": self.scheduler,
                "cpu_vae": self.cpu_vae, "compat": MOD, "grid": grid, "regions": regions}


def read_tiling_json(raw: dict[str, Any], source: str) -> TilingJson:
    """A Mixture of Diffusers JSON config (as read), validated; `InputError` naming the JSON
    key (``seed_reroll_regions[0]``) and ``source``."""
    try:
        return TilingJson.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source, brackets=True) from None
