"""The canvas config: TOML (or a Mixture of Diffusers JSON) validated into typed objects.

A canvas is described by a prompt grid (``[grid]``, as Mixture of Diffusers' tiling pipeline),
free regions (``[[regions]]`` of kind ``text``, ``image``, ``reroll`` or ``brush``) and an optional
``[background]`` prompt for what no brush covers. Sizes are pixels and multiples of 8; boxes are
``top``, ``bottom``, ``left``, ``right`` with the bottom and right edges excluded. Regions are
numbered from 0 in messages (``regions.2``). Unknown keys are errors; every error found here is
one line naming the file and the key (what only planning can check, such as mask files and
coverage, is named by region in `hypermosaic.canvas_plan`). Paths in a file are relative to
that file.

The JSON format of Mixture of Diffusers' ``generate_grid_from_json.py`` (``prompt``, ``tile_*``,
``gc``, ``gc_tiles``, ``seed``, ``steps``, ``scheduler``, ``cpu_vae``, ``seed_tiles``,
``seed_tiles_mode``, ``seed_reroll_regions``, and the ``git_commit`` that its ``generate_grid.py``
logs, which is ignored) is accepted as it is and translated to the same objects, so a JSON file
and its TOML twin give the same plan. As there, reroll regions are in pixels at any position
and are floored to the 8-pixel latent grid; errors name JSON keys (``seed_reroll_regions[0]``).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from hypermosaic.errors import InputError

__all__ = [
    "BackgroundConfig",
    "BrushRegion",
    "CanvasConfig",
    "Ensemble",
    "GridConfig",
    "ImageRegion",
    "PIXEL_MULTIPLE",
    "REGION_KINDS",
    "RerollRegion",
    "SCHEDULER_NAMES",
    "TextRegion",
    "TileOverride",
    "TilingJson",
    "canvas_config_from_dict",
    "check_grid",
    "load_canvas_config",
]

PIXEL_MULTIPLE = 8
REGION_KINDS = ("text", "image", "reroll", "brush")
SchedulerName = Literal[
    "default", "ddim", "euler", "euler_ancestral", "dpm++2m", "lms", "pndm", "lcm"
]  # the keys of hypermosaic.pipelines.models.SCHEDULERS
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)
MaskType = Literal["constant", "gaussian", "quartic"]
SeedMode = Literal["full", "exclusive"]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Guidance = Annotated[float, Field(ge=0, le=50)]

# A prompt, or an ensemble of prompts whose conditioned predictions are averaged by weight.
Ensemble = tuple[tuple[str, float], ...]


def _parse_ensemble(value: Any) -> Ensemble:
    """``"a"``, ``["a", "b"]`` or ``[{text = "a", weight = 2}, "b"]`` -> ``(("a", 2.0), ...)``."""
    if isinstance(value, str):
        return ((value, 1.0),)
    if not isinstance(value, list | tuple):
        raise ValueError("a prompt is a string or a list of prompts (strings or {text, weight})")
    if not value:
        raise ValueError("an empty list of prompts; give at least one")
    members = []
    for item in value:
        if isinstance(item, str):
            members.append((item, 1.0))
        elif isinstance(item, dict) and set(item) <= {"text", "weight"} and "text" in item:
            members.append((item["text"], item.get("weight", 1.0)))
        elif isinstance(item, list | tuple) and len(item) == 2:
            members.append((item[0], item[1]))
        else:
            raise ValueError(
                f"{item!r} is not a prompt (a string, or a table with text and weight)"
            )
    for text, weight in members:
        if not isinstance(text, str):
            raise ValueError(f"prompt text {text!r} is not a string")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise ValueError(f"prompt weight {weight!r} must be a positive number")
    return tuple((text, float(weight)) for text, weight in members)


Prompt = Annotated[Ensemble, BeforeValidator(_parse_ensemble)]


def _seed_list(value: Any) -> Any:
    return (value,) if isinstance(value, int) and not isinstance(value, bool) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _multiple(value: int, key: str) -> None:
    if value % PIXEL_MULTIPLE:
        raise ValueError(f"{key}: {value} is not a multiple of {PIXEL_MULTIPLE}")


class _Box(_Strict):
    """A rectangle of the canvas in pixels; bottom and right are excluded."""

    top: Annotated[int, Field(ge=0)]
    bottom: Annotated[int, Field(gt=0)]
    left: Annotated[int, Field(ge=0)]
    right: Annotated[int, Field(gt=0)]

    @model_validator(mode="after")
    def _geometry(self) -> _Box:
        for key in ("top", "bottom", "left", "right"):
            _multiple(getattr(self, key), key)
        if self.bottom <= self.top:
            raise ValueError(f"bottom: {self.bottom} is not below top {self.top}")
        if self.right <= self.left:
            raise ValueError(f"right: {self.right} is not right of left {self.left}")
        return self

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` in pixels."""
        return self.top, self.bottom, self.left, self.right


class TextRegion(_Box):
    """A prompt (or ensemble) diffusing in a box, weighted by a mask profile."""

    kind: Literal["text"] = "text"
    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None
    mask_type: MaskType = "gaussian"
    mask_weight: Annotated[float, Field(ge=0)] = 1.0
    seed: Seed | None = None
    noise_eps: Annotated[float, Field(ge=0)] = 0.0


class ImageRegion(_Box):
    """A reference image rescaled to the box; ``strength`` is img2img's (0 keeps the image)."""

    kind: Literal["image"]
    image: Path
    strength: Annotated[float, Field(ge=0, le=1)] = 0.5
    seed: Seed | None = None
    noise_eps: Annotated[float, Field(ge=0)] = 0.0


class RerollRegion(_Box):
    """New initial noise in a box: ``reset`` replaces it, ``epsilon`` adds ``noise_eps`` of it."""

    kind: Literal["reroll"]
    mode: Literal["reset", "epsilon"] = "reset"
    seed: Seed
    noise_eps: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _eps(self) -> RerollRegion:
        if self.mode == "epsilon" and self.noise_eps <= 0:
            raise ValueError('noise_eps: must be above 0 for mode = "epsilon"')
        return self


class BrushRegion(_Strict):
    """A semantic brush: a prompt over the white (or opaque) area of a canvas-sized PNG mask."""

    kind: Literal["brush"]
    mask: Path
    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None
    strength: Annotated[float, Field(ge=0)] = 1.0
    blur: Annotated[float, Field(ge=0, le=1024)] = 0.0


def _region_kind(value: Any) -> str:
    kind = value.get("kind", "text") if isinstance(value, dict) else getattr(value, "kind", "")
    return kind if kind in REGION_KINDS else "text"


Region = Annotated[
    Annotated[TextRegion, Tag("text")]
    | Annotated[ImageRegion, Tag("image")]
    | Annotated[RerollRegion, Tag("reroll")]
    | Annotated[BrushRegion, Tag("brush")],
    Discriminator(_region_kind),
]


class TileOverride(_Strict):
    """Settings of one grid tile: its guidance, or a seed for its initial noise."""

    row: Annotated[int, Field(ge=0)]
    col: Annotated[int, Field(ge=0)]
    guidance: Guidance | None = None
    seed: Seed | None = None
    seed_mode: SeedMode | None = None


def check_grid(
    prompt: list[list[Any]] | tuple[tuple[Any, ...], ...],
    tile_height: int,
    tile_width: int,
    tile_row_overlap: int,
    tile_col_overlap: int,
) -> None:
    """Reject an empty or ragged prompt grid and tile sizes that cannot tile; ValueError."""
    if not prompt:
        raise ValueError("prompt: an empty prompt grid; give at least one row of prompts")
    for index, row in enumerate(prompt):
        if not row:
            raise ValueError(f"prompt: row {index} of the prompt grid is empty")
        if len(row) != len(prompt[0]):
            raise ValueError(
                f"prompt: row {index} has {len(row)} prompts but row 0 has {len(prompt[0])} "
                "(all rows of the grid need the same length)"
            )
    sides = (("tile_height", tile_height, "tile_row_overlap", tile_row_overlap),
             ("tile_width", tile_width, "tile_col_overlap", tile_col_overlap))
    for side_key, side, overlap_key, overlap in sides:
        if side < PIXEL_MULTIPLE:
            raise ValueError(f"{side_key}: {side} is too small (at least {PIXEL_MULTIPLE})")
        _multiple(side, side_key)
        if overlap < 0:
            raise ValueError(f"{overlap_key}: {overlap} is negative")
        _multiple(overlap, overlap_key)
        if overlap >= side:
            raise ValueError(
                f"{overlap_key}: {overlap} is as large as the tile ({side_key} = {side}); "
                "the overlap must be smaller"
            )


class GridConfig(_Strict):
    """A grid of prompts, one per tile, tiles overlapping (Mixture of Diffusers' tiling)."""

    prompt: list[list[Prompt]]
    tile_height: int = 512
    tile_width: int = 512
    tile_row_overlap: int = 256
    tile_col_overlap: int = 256
    guidance: Guidance | None = None
    negative_prompt: str | None = None
    mask_type: MaskType = "gaussian"
    seed_tiles_mode: SeedMode = "full"
    tiles: list[TileOverride] = []

    @model_validator(mode="after")
    def _geometry(self) -> GridConfig:
        check_grid(self.prompt, self.tile_height, self.tile_width, self.tile_row_overlap,
                   self.tile_col_overlap)
        seen = set()
        for index, tile in enumerate(self.tiles):
            if tile.row >= self.rows or tile.col >= self.cols:
                raise ValueError(
                    f"tiles.{index}: tile ({tile.row}, {tile.col}) is outside the "
                    f"{self.rows}x{self.cols} grid"
                )
            if (tile.row, tile.col) in seen:
                raise ValueError(f"tiles.{index}: tile ({tile.row}, {tile.col}) is listed twice")
            seen.add((tile.row, tile.col))
            if tile.seed_mode is not None and tile.seed is None:
                raise ValueError(f"tiles.{index}: seed_mode without a seed")
        return self

    @property
    def rows(self) -> int:
        return len(self.prompt)

    @property
    def cols(self) -> int:
        return len(self.prompt[0])

    @property
    def height(self) -> int:
        """Canvas height the grid spans, in pixels."""
        return self.tile_height + (self.rows - 1) * (self.tile_height - self.tile_row_overlap)

    @property
    def width(self) -> int:
        """Canvas width the grid spans, in pixels."""
        return self.tile_width + (self.cols - 1) * (self.tile_width - self.tile_col_overlap)

    def override(self, row: int, col: int) -> TileOverride | None:
        """The settings given for tile ``(row, col)``, if any."""
        return next((t for t in self.tiles if (t.row, t.col) == (row, col)), None)


class BackgroundConfig(_Strict):
    """The prompt for the canvas area that no brush covers."""

    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None


class CanvasConfig(_Strict):
    """A whole `hypermosaic canvas` config, validated."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = "canvas"
    seed: Annotated[tuple[Seed, ...], BeforeValidator(_seed_list), Field(min_length=1)] = (0,)
    steps: Annotated[int, Field(ge=1, le=1000)] = 30
    scheduler: SchedulerName = "default"
    model: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    width: Annotated[int, Field(ge=PIXEL_MULTIPLE)] | None = None
    height: Annotated[int, Field(ge=PIXEL_MULTIPLE)] | None = None
    guidance: Guidance = 7.5
    negative_prompt: str = ""
    cpu_vae: bool = False
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    vae_tile: Annotated[int, Field(ge=64, le=8192)] = 512
    window_size: Annotated[int, Field(ge=PIXEL_MULTIPLE)] | None = None
    window_stride: Annotated[int, Field(ge=PIXEL_MULTIPLE)] | None = None
    bootstrap_steps: Annotated[int, Field(ge=0)] = 0
    background: BackgroundConfig | None = None
    grid: GridConfig | None = None
    regions: list[Region] = []
    out: Path = Path("out")
    format: Literal["auto", "png", "tiff"] = "auto"
    deepzoom: bool = False
    upscale: Literal[1, 4] = 1
    upscale_model: str = "x4plus"

    @field_validator("width", "height", "vae_tile", "window_size", "window_stride")
    @classmethod
    def _eights(cls, value: int | None, info: Any) -> int | None:
        if value is not None:
            _multiple(value, info.field_name)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CanvasConfig:
        if self.grid is not None:
            for key, grid_side in (("height", self.grid.height), ("width", self.grid.width)):
                given = getattr(self, key)
                if given is not None and given != grid_side:
                    raise ValueError(
                        f"{key}: {given} differs from the {grid_side} px the grid spans "
                        f"(leave {key} out to use the grid's)"
                    )
        elif self.width is None or self.height is None:
            raise ValueError("width and height: required without a [grid]")
        height, width = self.size
        for index, region in enumerate(self.regions):
            if isinstance(region, _Box):
                if region.bottom > height:
                    raise ValueError(
                        f"regions.{index}: bottom {region.bottom} is outside the canvas "
                        f"(height {height})"
                    )
                if region.right > width:
                    raise ValueError(
                        f"regions.{index}: right {region.right} is outside the canvas "
                        f"(width {width})"
                    )
        if self.bootstrap_steps > self.steps:
            raise ValueError(
                f"bootstrap_steps: {self.bootstrap_steps} is more than steps ({self.steps})"
            )
        if self.window_size and self.window_stride and self.window_stride > self.window_size:
            raise ValueError(
                f"window_stride: {self.window_stride} is larger than window_size "
                f"({self.window_size}), which would leave gaps"
            )
        if self.background is not None and not any(
            isinstance(region, BrushRegion) for region in self.regions
        ):
            raise ValueError("background: a background prompt needs brush regions")
        return self

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the canvas in pixels."""
        if self.grid is not None:
            return self.grid.height, self.grid.width
        assert self.height is not None and self.width is not None
        return self.height, self.width


class TilingJson(_Strict):
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
        return [(*(edge // PIXEL_MULTIPLE * PIXEL_MULTIPLE for edge in box), seed)
                for *box, seed in self.seed_reroll_regions]

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


def _format_error(error: ValidationError, source: str, brackets: bool = False) -> str:
    """One line naming the first bad key (region kinds dropped from the location); with
    ``brackets`` list indices are written as JSON paths (``seed_reroll_regions[0][4]``)."""
    first = error.errors()[0]
    parts: list[str] = []
    for part in first["loc"]:
        if isinstance(part, str) and part in REGION_KINDS and parts and parts[-1].isdigit():
            continue
        parts.append(str(part))
    if brackets:
        key = "".join(f"[{p}]" if p.isdigit() and i else ("." if i else "") + p
                      for i, p in enumerate(parts))
    else:
        key = ".".join(parts)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see docs/canvas.md)"
    elif first["type"] == "missing":
        message = "missing (required)"
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"


def load_canvas_config(path: Path | str, overrides: dict[str, Any] | None = None) -> CanvasConfig:
    """Read a canvas config (``.toml``, or a Mixture of Diffusers ``.json``) and validate it.

    ``overrides`` maps dotted canonical keys (``steps``, ``grid.tile_height``) to values laid
    over the file; ``None`` values are skipped. Relative paths in the file are resolved against
    its folder; ``name`` defaults to the file's stem. Raises `InputError` naming the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if path.suffix == ".json":
        raw = _json_config(text, str(path))
    elif path.suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: malformed TOML: {exc}") from None
    else:
        raise InputError(f"{path}: a canvas config is a .toml or a .json file")
    raw.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "canvas")
    return canvas_config_from_dict(raw, base=path.parent, source=str(path), overrides=overrides)


def _json_config(text: str, source: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{source}: malformed JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{source}: a JSON config is an object of settings")
    try:
        return TilingJson.model_validate(raw).canonical()
    except ValidationError as exc:
        raise InputError(_format_error(exc, source, brackets=True)) from None


def canvas_config_from_dict(
    raw: dict[str, Any],
    *,
    base: Path,
    source: str,
    overrides: dict[str, Any] | None = None,
) -> CanvasConfig:
    """Validate a canonical config mapping (as read from TOML); see `load_canvas_config`."""
    raw = dict(raw)
    regions = raw.get("regions")
    if isinstance(regions, list):
        raw["regions"] = [_resolve_region(region, base) for region in regions]
    if isinstance(raw.get("out"), str):
        raw["out"] = base / raw["out"]
    if isinstance(raw.get("model"), str) and (base / raw["model"]).exists():
        raw["model"] = str(base / raw["model"])
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(raw, key, value)
    try:
        return CanvasConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(_format_error(exc, source)) from None


def _resolve_region(region: Any, base: Path) -> Any:
    if not isinstance(region, dict):
        return region
    region = dict(region)
    for key in ("image", "mask"):
        if isinstance(region.get(key), str):
            region[key] = base / region[key]
    return region


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
