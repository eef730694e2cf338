"""The build config: TOML laid over defaults, validated into typed objects.

Every error names the key (``tiles.strength``, ``levels.2.steps``) and the problem in one line, and
unknown keys are errors: a typo is never silently ignored. Paths in a config file are relative to
that file; paths given on the command line are relative to the current directory.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hypermosaic.build.diffusion import DiffusionConfig, resolve_diffusion_paths
from hypermosaic.errors import InputError
from hypermosaic.identity import BICUBIC, WEIGHT_SUFFIXES, UpscalerOrBicubic
from hypermosaic.image_prompts import TILE, ImagePromptConfig, merge_image_prompts
from hypermosaic.publish import PublishConfig
from hypermosaic.settings import Strict, read_config_file, set_dotted, validation_message
from hypermosaic.tree import Plan

__all__ = [
    "BuildConfig",
    "DiffusionConfig",
    "FocusConfig",
    "LevelConfig",
    "LevelSettings",
    "PrimaryConfig",
    "RecolorConfig",
    "build_config_from_dict",
    "load_build_config",
    "resolve_build_config",
]

TEMPLATE_FIELDS = {"depth", "row", "col"}


class PrimaryConfig(Strict):
    """The root image: generated from ``prompt`` or read from ``image``."""

    prompt: str | None = None
    negative_prompt: str = ""
    image: Path | None = None
    steps: Annotated[int, Field(ge=1, le=1000)] = 30
    guidance: Annotated[float, Field(ge=0, le=50)] = 7.5

    @model_validator(mode="after")
    def _one_source(self) -> PrimaryConfig:
        if (self.prompt is None) == (self.image is None):
            raise ValueError("give exactly one of primary.prompt or primary.image")
        return self


PromptSpec = str | list[str]


class LevelConfig(Strict):
    """Tile settings; ``[tiles]`` holds the defaults, ``[levels.N]`` overrides depth N."""

    prompt: PromptSpec | None = None
    negative_prompt: PromptSpec | None = None
    strength: Annotated[float, Field(ge=0, le=1)] | None = None
    steps: Annotated[int, Field(ge=1, le=1000)] | None = None
    guidance: Annotated[float, Field(ge=0, le=50)] | None = None
    init_upscale: UpscalerOrBicubic | None = None
    image_prompt: ImagePromptConfig | None = None  # [levels.N.image_prompt], over [image_prompt]

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _templates(cls, value: PromptSpec | None) -> PromptSpec | None:
        for text in [value] if isinstance(value, str) else value or []:
            for _, name, _, _ in string.Formatter().parse(text):
                if name is not None and name not in TEMPLATE_FIELDS:
                    raise ValueError(
                        f"unknown template field {{{name}}} (allowed: {{depth}}, {{row}}, {{col}})"
                    )
        if isinstance(value, list) and not value:
            raise ValueError("an empty list; give at least one prompt")
        return value


class LevelSettings(BaseModel):
    """The resolved settings of one depth (defaults and overrides merged)."""

    model_config = ConfigDict(frozen=True)

    prompt: PromptSpec
    negative_prompt: PromptSpec
    strength: float
    steps: int
    guidance: float
    init_upscale: str

    def prompts_for(self, depth: int, row: int, col: int) -> tuple[str, str]:
        """Prompt and negative prompt of the tile at ``(row, col)`` of a depth-``depth`` node."""
        return (
            _pick(self.prompt, depth).format(depth=depth, row=row, col=col),
            _pick(self.negative_prompt, depth).format(depth=depth, row=row, col=col),
        )


def _pick(spec: PromptSpec, depth: int) -> str:
    """A list of prompts is indexed by depth (first entry for depth 1; the last one repeats)."""
    if isinstance(spec, str):
        return spec
    return spec[min(depth, len(spec)) - 1]


class RecolorConfig(Strict):
    """The model-free engine: a source image recoloured to each tile's colours.

    ``blend`` is left out of `model_dump` while it is the default ``transfer``, so the
    fingerprints of configs written before it existed are unchanged (stores resume).
    """

    source: str = "primary"
    colour_space: Literal["lab", "rgb"] = "lab"
    min_contrast: Annotated[float, Field(ge=0, le=1)] = 0.35
    blend: Literal["transfer", "detail"] = "transfer"

    @model_serializer(mode="wrap")
    def _without_default_blend(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.blend == "transfer":
            data.pop("blend", None)
        return data


class FocusConfig(Strict):
    """Expand only along a path of tiles (plus ``neighbours`` tiles around each step).

    A path shorter than ``depth`` continues through the central tile of each deeper level;
    see `hypermosaic.tree.Plan`.
    """

    path: list[tuple[int, int]]
    neighbours: Annotated[int, Field(ge=0)] | None = None


DEFAULT_TILES = LevelConfig(
    prompt="", negative_prompt="", strength=0.5, steps=30, guidance=7.5, init_upscale=BICUBIC
)


class BuildConfig(Strict):
    """A whole `hypermosaic build` config, validated."""

    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    size: Annotated[int, Field(ge=8, le=8192)] = 512
    grid: Annotated[int, Field(ge=1, le=256)] | list[Annotated[int, Field(ge=1, le=256)]] = 8
    depth: Annotated[int, Field(ge=0, le=16)] = 1
    engine: Literal["recolor", "diffusion"] = "recolor"
    out: Path = Path("out")
    format: Literal["png", "webp", "jpeg"] = "png"
    quality: Annotated[int, Field(ge=1, le=100)] = 92
    primary: PrimaryConfig
    tiles: LevelConfig = LevelConfig()
    levels: dict[int, LevelConfig] = {}
    recolor: RecolorConfig = RecolorConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    focus: FocusConfig | None = None
    publish: PublishConfig = PublishConfig()
    image_prompt: ImagePromptConfig | None = None

    @field_validator("levels")
    @classmethod
    def _level_keys(cls, value: dict[int, LevelConfig]) -> dict[int, LevelConfig]:
        for depth in value:
            if depth < 1:
                raise ValueError(f"level {depth}: levels are numbered from 1 (depth 0 is primary)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BuildConfig:
        grids = self.grid if isinstance(self.grid, list) else [self.grid]  # deeper ones too
        if isinstance(self.grid, list) and len(self.grid) < self.depth:
            raise ValueError(
                f"grid: {len(self.grid)} entries but depth is {self.depth} (one per level)"
            )
        size = self.size
        for level, grid in enumerate(grids):
            if size % grid:
                raise ValueError(f"grid: {grid} does not divide size {size} (level {level})")
            if size // grid < 1:
                raise ValueError(f"grid: {grid} leaves no pixels per tile of size {size}")
        if self.engine == "recolor" and self.primary.image is None:
            raise ValueError(
                "primary.image: the recolor engine cannot generate an image from a prompt; "
                "give primary.image or use engine = \"diffusion\""
            )
        if self.engine == "diffusion" and self.diffusion.model is None:
            raise ValueError("diffusion.model: the diffusion engine needs a model")
        if self.engine == "diffusion" and self.size % 8:
            raise ValueError(f"size: {self.size} is not a multiple of 8 (the diffusion VAE "
                             "works on 8-pixel blocks)")
        self._check_image_prompts()
        if self.focus is not None:
            if len(self.focus.path) > self.depth:
                raise ValueError(
                    f"focus.path: {len(self.focus.path)} steps but depth is {self.depth}"
                )
            try:
                self.plan().validate_address(self.focus.path)
            except ValueError as exc:
                raise ValueError(f"focus.path: {exc}") from None
        return self

    def _check_image_prompts(self) -> None:
        """Image prompts need the diffusion engine, and every table that applies an image."""
        if self.tiles.image_prompt is not None:
            raise ValueError("tiles.image_prompt: image prompts go in [image_prompt] (and "
                             "[levels.N.image_prompt])")
        for depth in sorted({*range(1, self.depth + 1), *self.levels}):
            prompt, key = self.image_prompt_at(depth), self.image_prompt_key(depth)
            if prompt is not None and self.engine != "diffusion":
                raise ValueError(f"{key}: image prompts need engine = \"diffusion\"")
            if prompt is not None and prompt.image is None:
                raise ValueError(f"{key}.image: missing (\"{TILE}\" or an image file)")

    def image_prompt_at(self, depth: int) -> ImagePromptConfig | None:
        """Depth ``depth``'s image prompt: ``[levels.N.image_prompt]`` over ``[image_prompt]``."""
        level = self.levels.get(depth)
        return merge_image_prompts(self.image_prompt, None if level is None else level.image_prompt)

    def image_prompt_key(self, depth: int) -> str:
        """The table that sets depth ``depth``'s image prompt, for error messages."""
        level = self.levels.get(depth)
        if level is not None and level.image_prompt is not None:
            return f"levels.{depth}.image_prompt"
        return "image_prompt"

    @property
    def grids(self) -> tuple[int, ...]:
        """The grid of each level that is cut, ``depth`` entries."""
        return tuple(self.grid_at(depth) for depth in range(self.depth))

    def grid_at(self, depth: int) -> int:
        """The grid that cuts a depth-``depth`` node, at any depth (nodes made live go below
        ``depth``): a list's last entry repeats."""
        if isinstance(self.grid, int):
            return self.grid
        return self.grid[min(depth, len(self.grid) - 1)]

    def init_upscale_key(self, depth: int) -> str:
        """The key that sets depth ``depth``'s ``init_upscale``, for error messages."""
        level = self.levels.get(depth)
        if level is not None and level.init_upscale is not None:
            return f"levels.{depth}.init_upscale"
        return "tiles.init_upscale"

    @property
    def init_upscalers(self) -> tuple[str, ...]:
        """The ESRGAN models that enlarge tiles into inits at some built depth, sorted."""
        names = {self.level(depth).init_upscale for depth in range(1, self.depth + 1)}
        return tuple(sorted(names - {BICUBIC}))

    @property
    def uses_torch(self) -> bool:
        """Whether workers run torch: the diffusion engine or an ESRGAN init upscaler."""
        return self.engine == "diffusion" or bool(self.init_upscalers)

    def plan(self) -> Plan:
        """The pure expansion plan of this config."""
        focus = None if self.focus is None else tuple((r, c) for r, c in self.focus.path)
        neighbours = None if self.focus is None else self.focus.neighbours
        return Plan(size=self.size, grids=self.grids, focus=focus, neighbours=neighbours)

    def level(self, depth: int) -> LevelSettings:
        """Settings for the tiles that become depth-``depth`` nodes (depth >= 1)."""
        merged: dict[str, Any] = DEFAULT_TILES.model_dump(exclude={"image_prompt"})
        for layer in (self.tiles, self.levels.get(depth)):
            if layer is not None:
                merged.update(layer.model_dump(exclude_none=True, exclude={"image_prompt"}))
        return LevelSettings(**merged)


def load_build_config(path: Path | str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read a TOML build config, apply command-line overrides, validate.

    Relative paths in the file are resolved against the file's folder; ``out`` defaults to
    ``out/<config name>`` in the current directory. Raises `InputError` naming the key.
    """
    path = Path(path)
    raw = read_config_file(path)
    return build_config_from_dict(raw, base=path.parent, source=str(path), name=path.stem,
                                  overrides=overrides)


def resolve_build_config(config: BuildConfig | Path | str, caller: str,
                         **options: Any) -> BuildConfig:
    """A command's config: ``config`` itself, or the TOML file it names with the command-line
    ``options`` laid over it (``depth``, ``out``, ``seed``, ``engine``, and ``model``,
    ``device``, ``dtype`` of ``[diffusion]``; None leaves a key alone). Options with a
    validated config are a `TypeError`: change it with ``model_copy`` instead."""
    overrides = {f"diffusion.{key}" if key in ("model", "device", "dtype") else key: value
                 for key, value in options.items()}
    if not isinstance(config, BuildConfig):
        return load_build_config(config, overrides)
    if any(value is not None for value in overrides.values()):
        raise TypeError(f"{caller}: options that override a config file are for a path; "
                        "change a validated config with model_copy instead")
    return config


def build_config_from_dict(
    raw: dict[str, Any],
    *,
    base: Path,
    source: str,
    name: str = "build",
    overrides: dict[str, Any] | None = None,
) -> BuildConfig:
    """Validate a config mapping (as read from TOML); see `load_build_config`."""
    raw = dict(raw)
    raw.setdefault("out", None)
    _resolve(raw, ("out",), base)
    _resolve(raw, ("primary", "image"), base)
    recolor = raw.get("recolor")
    if isinstance(recolor, dict) and recolor.get("source") not in (None, "primary", "parent"):
        recolor["source"] = str(base / str(recolor["source"]))
    levels = raw.get("levels")
    for layer in [raw.get("tiles"), *(levels.values() if isinstance(levels, dict) else [])]:
        if isinstance(layer, dict) and isinstance(layer.get("init_upscale"), str):
            local = base / layer["init_upscale"]
            if local.suffix.lower() in WEIGHT_SUFFIXES:
                layer["init_upscale"] = str(local)
    layers = levels.values() if isinstance(levels, dict) else []
    prompts = [raw.get("image_prompt"), *(layer.get("image_prompt") for layer in layers
                                          if isinstance(layer, dict))]
    for table in [raw.get("diffusion"), *prompts]:
        for key in ("model", "config", "vision_model", "vision_config"):
            if isinstance(table, dict) and isinstance(table.get(key), str):
                local = base / table[key]
                if local.exists():
                    table[key] = str(local)
    resolve_diffusion_paths(raw.get("diffusion"), base)
    for table in prompts:  # "tile", or an image file
        image = table.get("image") if isinstance(table, dict) else None
        if isinstance(table, dict) and isinstance(image, str) and image != TILE:
            table["image"] = str(base / image)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(raw, key, value)
    if raw["out"] is None:
        raw["out"] = Path("out") / name
    try:
        return BuildConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(validation_message(exc, source, docs="docs/build.md")) from None


def _resolve(raw: dict[str, Any], keys: tuple[str, ...], base: Path) -> None:
    *parents, last = keys
    node: Any = raw
    for key in parents:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    if isinstance(node.get(last), str):
        node[last] = base / node[last]
