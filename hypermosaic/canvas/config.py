"""The canvas config: TOML (or a Mixture of Diffusers JSON) validated into typed objects.

A canvas is described by a prompt grid (``[grid]``, as Mixture of Diffusers' tiling pipeline),
free regions (``[[regions]]`` of kind ``text``, ``image``, ``reroll`` or ``brush``) and an optional
``[background]`` prompt for what no brush covers, over an optional photo (``image``) that
the regions repaint parts of. Sizes are pixels and multiples of 8; boxes are
``top``, ``bottom``, ``left``, ``right`` with the bottom and right edges excluded. Regions are
numbered from 0 in messages (``regions.2``). Unknown keys are errors; every error found here is
one line naming the file and the key (what only planning can check, such as mask files and
coverage, is named by region in `hypermosaic.canvas.plan`). Paths in a file are relative to
that file.

A Mixture of Diffusers JSON grid config is translated to the same mapping first
(`hypermosaic.canvas.mod_json`), with ``compat = "mixture-of-diffusers"``: validated in that
context, a grid may have tile sides and overlaps that are not multiples of 8 (tile edges are
floored to multiples of 8, as Mixture of Diffusers' latent indices are) and any finite
guidance. Files are read by `hypermosaic.canvas.load`. What is accepted but works differently
from what a user may expect is reported as a `CanvasWarning`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hypermosaic.canvas.regions import (
    HYPERMOSAIC,
    PIXEL_MULTIPLE,
    REGION_TAGS,
    BoxRegion,
    BrushRegion,
    Compat,
    Guidance,
    MaskType,
    Prompt,
    Region,
    Seed,
    SeedMode,
    is_mod,
    multiple_of_8,
)
from hypermosaic.canvas.wrap import Wrap, check_wrap
from hypermosaic.controlnet import ControlNetSpec, resolve_controlnet_paths
from hypermosaic.errors import InputError
from hypermosaic.identity import Device, Dtype, SchedulerName, Upscaler
from hypermosaic.image_prompts import TILE
from hypermosaic.lora import LoraSpec, resolve_lora_paths
from hypermosaic.settings import Strict, set_dotted, validation_message

__all__ = [
    "BackgroundConfig",
    "CanvasConfig",
    "CanvasWarning",
    "GridConfig",
    "TileOverride",
    "canvas_config_from_dict",
    "check_grid",
    "config_error",
    "floor8",
]


class CanvasWarning(UserWarning):
    """A canvas config that runs, but not quite as written (a Mixture of Diffusers setting
    floored or clipped as there, a seed that changes nothing); one line naming the file."""


def floor8(value: int) -> int:
    """``value`` floored to a multiple of 8 pixels (one latent position of Stable Diffusion),
    as Mixture of Diffusers turns pixels into latent indices (``px // 8``)."""
    return value // PIXEL_MULTIPLE * PIXEL_MULTIPLE


def _seed_list(value: Any) -> Any:
    return (value,) if isinstance(value, int) and not isinstance(value, bool) else value


class TileOverride(Strict):
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
    *,
    mod: bool = False,
) -> None:
    """Reject an empty or ragged prompt grid and tile sizes that cannot tile; ValueError.

    With ``mod`` (Mixture of Diffusers' rules) sides and overlaps need not be multiples of 8,
    and an overlap only needs to be smaller than the tile where there is more than one tile
    along that side (a single row ignores its row overlap).
    """
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
    sides = (("tile_height", tile_height, "tile_row_overlap", tile_row_overlap, len(prompt)),
             ("tile_width", tile_width, "tile_col_overlap", tile_col_overlap, len(prompt[0])))
    for side_key, side, overlap_key, overlap, count in sides:
        if side < PIXEL_MULTIPLE:
            raise ValueError(f"{side_key}: {side} is too small (at least {PIXEL_MULTIPLE})")
        if not mod:
            multiple_of_8(side, side_key)
        if overlap < 0:
            raise ValueError(f"{overlap_key}: {overlap} is negative")
        if not mod:
            multiple_of_8(overlap, overlap_key)
        if overlap >= side and (count > 1 or not mod):
            raise ValueError(
                f"{overlap_key}: {overlap} is as large as the tile ({side_key} = {side}); "
                "the overlap must be smaller"
            )


class GridConfig(Strict):
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
    def _geometry(self, info: ValidationInfo) -> GridConfig:
        check_grid(self.prompt, self.tile_height, self.tile_width, self.tile_row_overlap,
                   self.tile_col_overlap, mod=is_mod(info))
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
        """Canvas height the grid spans, in pixels (floored to a multiple of 8)."""
        return floor8(self.tile_height + (self.rows - 1) * (self.tile_height
                                                             - self.tile_row_overlap))

    @property
    def width(self) -> int:
        """Canvas width the grid spans, in pixels (floored to a multiple of 8)."""
        return floor8(self.tile_width + (self.cols - 1) * (self.tile_width
                                                            - self.tile_col_overlap))

    def override(self, row: int, col: int) -> TileOverride | None:
        """The settings given for tile ``(row, col)``, if any."""
        return next((t for t in self.tiles if (t.row, t.col) == (row, col)), None)


class BackgroundConfig(Strict):
    """The prompt for the canvas area that no brush covers; with an ``image`` (a photo of the
    canvas's size) the regions repaint only their areas of it, edges feathered ``feather`` px
    inwards."""

    prompt: Prompt
    negative_prompt: str | None = None
    guidance: Guidance | None = None
    image: Path | None = None
    feather: Annotated[int, Field(ge=0, le=256)] = 8


class CanvasConfig(Strict):
    """A whole `hypermosaic canvas` config, validated."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = "canvas"
    seed: Annotated[tuple[Seed, ...], BeforeValidator(_seed_list), Field(min_length=1)] = (0,)
    steps: Annotated[int, Field(ge=1, le=1000)] = 30
    scheduler: SchedulerName = "default"
    compat: Compat = HYPERMOSAIC
    model: str | None = None
    device: Device = "auto"
    dtype: Dtype = "auto"
    lora: list[LoraSpec] = []
    controlnet: ControlNetSpec | None = None
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
    upscale_model: Upscaler = "x4plus"
    wrap: Wrap = "none"
    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The file this config was read from (its ``name`` when built in code): what every
        message about it starts with."""
        return self._source or self.name

    @field_validator("width", "height", "vae_tile", "window_size", "window_stride")
    @classmethod
    def _eights(cls, value: int | None) -> int | None:
        if value is not None:
            multiple_of_8(value)
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
            for edge, side, name in (("bottom", height, "height"), ("right", width, "width")):
                value = getattr(region, edge) if isinstance(region, BoxRegion) else 0
                if value > side:
                    raise ValueError(f"regions.{index}.{edge}: {value} is outside the canvas "
                                     f"({name} {side})")
        if self.bootstrap_steps > self.steps:
            raise ValueError(
                f"bootstrap_steps: {self.bootstrap_steps} is more than steps ({self.steps})"
            )
        if self.window_size and self.window_stride and self.window_stride > self.window_size:
            raise ValueError(
                f"window_stride: {self.window_stride} is larger than window_size "
                f"({self.window_size}), which would leave gaps"
            )
        if self.background is not None and self.background.image is not None:
            if self.grid is not None:
                raise ValueError("background.image: a photo cannot be painted with a [grid]; "
                                 "use regions to repaint parts of it")
            if not self.regions:
                raise ValueError("background.image: no regions to repaint the photo with")
        elif self.background is not None and self.grid is not None and not any(
            isinstance(region, BrushRegion) for region in self.regions
        ):
            raise ValueError("background: a background prompt over a [grid] needs brush "
                             "regions (the grid's tiles cover the whole canvas)")
        check_wrap(self.wrap, height, width, self.window_size, self.grid is not None)
        if self.controlnet is not None and self.wrap != "none":
            raise ValueError("controlnet: not supported with wrap yet (its windows would need "
                             "the control image's wrapped crops)")
        return self

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the canvas in pixels."""
        if self.grid is not None:
            return self.grid.height, self.grid.width
        assert self.height is not None and self.width is not None
        return self.height, self.width


def canvas_config_from_dict(
    raw: dict[str, Any],
    *,
    base: Path,
    source: str,
    overrides: dict[str, Any] | None = None,
) -> CanvasConfig:
    """Validate a canonical config mapping (as read from TOML); see `load_canvas_config`.

    ``source`` names the file in every message (`InputError`, one line naming the key) and
    becomes the config's `CanvasConfig.source`. A mapping with ``compat =
    "mixture-of-diffusers"`` is validated with Mixture of Diffusers' rules.
    """
    raw = dict(raw)
    regions = raw.get("regions")
    if isinstance(regions, list):
        raw["regions"] = [_resolve_region(region, base) for region in regions]
    if isinstance(raw.get("out"), str):
        raw["out"] = base / raw["out"]
    background = raw.get("background")
    if isinstance(background, dict) and isinstance(background.get("image"), str):
        raw["background"] = {**background, "image": base / background["image"]}
    for key in ("model", "upscale_model"):
        if isinstance(raw.get(key), str) and (base / raw[key]).exists():
            raw[key] = str(base / raw[key])
    resolve_lora_paths(raw, base)
    resolve_controlnet_paths(raw, base)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(raw, key, value)
    try:
        config = CanvasConfig.model_validate(raw, context={"compat": raw.get("compat")})
    except ValidationError as exc:
        raise config_error(exc, source) from None
    config._source = source
    return config


_NESTED_KEY = re.compile(r"([\w.\[\]]+): ([A-Za-z_][\w.\[\]]*): ")


def config_error(exc: ValidationError, source: str, *, brackets: bool = False) -> InputError:
    """The one-line `InputError` of a canvas config's first validation error: the file, the
    full key, what is wrong. A check made on a table (a region, the grid) that names a key
    inside it is reported under the full key (``regions.0: left: 4 ...`` becomes
    ``regions.0.left: 4 ...``); ``brackets`` writes list indices as JSON paths."""
    line = validation_message(exc, source, docs="docs/canvas.md", skip=REGION_TAGS,
                              brackets=brackets)
    rest = line.removeprefix(f"{source}: ")
    match = _NESTED_KEY.match(rest)
    if match is not None:
        outer, inner = match.groups()
        key = outer if outer == inner or outer.endswith(f".{inner}") else f"{outer}.{inner}"
        rest = f"{key}: {rest[match.end():]}"
    return InputError(f"{source}: {rest}")


def _resolve_region(region: Any, base: Path) -> Any:
    if not isinstance(region, dict):
        return region
    region = dict(region)
    for key in ("image", "mask"):
        if isinstance(region.get(key), str):
            region[key] = base / region[key]
    prompt = region.get("image_prompt")
    if isinstance(prompt, str):  # the image's path alone
        prompt = {"image": prompt}
    if isinstance(prompt, dict):
        prompt = dict(prompt)
        if isinstance(prompt.get("image"), str) and prompt["image"] != TILE:
            prompt["image"] = str(base / prompt["image"])
        for key in ("vision_model", "vision_config"):  # a local folder or file, else an id
            if isinstance(prompt.get(key), str) and (base / prompt[key]).exists():
                prompt[key] = str(base / prompt[key])
        region["image_prompt"] = prompt
    return region
