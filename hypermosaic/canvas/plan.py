"""The canvas plan: a validated config resolved into everything that decides the pixels.

Pure and model-free: boxes in pixels as ``(top, bottom, left, right)``, brush masks at the
resolution of 8-pixel cells (one Stable Diffusion latent position each), reference images
already rescaled to their boxes, text regions' image prompts with their images (cropped and
resized, `hypermosaic.canvas.image_prompts`), and the ordered edits of the initial noise with
their seeds. A plan is what a worker needs, so workers read no files. Building it checks what
the config alone could not: mask sizes, readable images, and that every cell of the canvas is
covered by some prompt (`InputError` naming the region or the uncovered area). A background
photo is planned by `hypermosaic.canvas.background`.

Initial noise is drawn from ``seed`` for the whole canvas, then edited in this order: the seeded
grid tiles in raster order (``full`` rewrites the tile's box; ``exclusive`` draws the same tile
noise but writes only the part no other tile covers), reroll regions in config order (``reset``
replaces, ``epsilon`` adds ``noise_eps`` times new noise), then ``noise_eps`` of text and image
regions in config order. A region without a seed gets one derived from the canvas seed and its
name, so every canvas is reproducible.

With ``compat = "mixture-of-diffusers"`` (Mixture of Diffusers' JSON configs) the plan does what
Mixture of Diffusers does: an ``exclusive`` tile draws noise of the shape of its exclusive part
(`mod_exclusive_box`, which only clips a tile by tiles in another row and another column);
``reset`` reroll regions come before the ``noise_eps`` of text and image regions, and
``epsilon`` reroll regions after them (its canvas pipeline's order); grid tiles with a
``gaussian`` mask take its tiling pipeline's profile, whose rows peak half a latent lower
(`TILING_GAUSSIAN`); and the plan's ``compat`` tells the torch side to guide every window and
to build its ``ddim`` and ``lms`` schedulers as it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from hypermosaic.canvas.background import (
    CELL,
    BackgroundPlan,
    RegionMask,
    background_cells,
    digest,
    load_mask,
    plan_background,
    plan_region_mask,
)
from hypermosaic.canvas.config import CanvasConfig
from hypermosaic.canvas.control import ControlPlan, plan_control
from hypermosaic.canvas.grid import grid_box
from hypermosaic.canvas.image_prompts import ImagePromptPlan, plan_image_prompt
from hypermosaic.canvas.noise import NoiseEdit, noise_edits
from hypermosaic.canvas.regions import (
    HYPERMOSAIC,
    MOD,
    BrushRegion,
    Ensemble,
    ImageRegion,
    TextRegion,
)
from hypermosaic.errors import InputError
from hypermosaic.images import load_image, resize
from hypermosaic.tiling import Box

__all__ = [
    "CELL",
    "TILING_GAUSSIAN",
    "BackgroundPlan",
    "BrushPlan",
    "CanvasPlan",
    "ImagePlan",
    "NoiseEdit",
    "PromptPlan",
    "RegionMask",
    "check_window_stride",
    "coverage",
    "load_mask",
    "plan_canvas",
]

TILING_GAUSSIAN = "tiling_gaussian"
"""The mask type of Mixture of Diffusers' tiling pipeline: ``gaussian``, but its rows peak at
``h / 2`` latent rows rather than at the middle ``(h - 1) / 2``."""
T = TypeVar("T")


def check_window_stride(stride: int | None, window: int, window_size: int | None) -> None:
    """`InputError` naming ``window_stride`` when it is larger than the brushes' ``window``
    (px: the config's ``window_size`` when given, else the model's native side), which would
    leave gaps between the sliding windows."""
    if stride is not None and stride > window:
        source = "window_size" if window_size else "the model's native window"
        raise InputError(
            f"window_stride: {stride} is larger than {source} ({window} px), which would "
            "leave gaps; give a smaller stride or a window_size"
        )


@dataclass(frozen=True)
class PromptPlan:
    """A prompt diffusing in a box (a grid tile or a text region), weighted by a profile (and
    by a text region's ``mask``); a text region's prompt may be guided by an image
    (``image_prompt``)."""

    name: str
    box: Box
    prompt: Ensemble
    negative_prompt: str
    guidance: float
    mask_type: str
    mask_weight: float
    image_prompt: ImagePromptPlan | None = None
    mask: RegionMask | None = None


@dataclass(frozen=True)
class BrushPlan:
    """A prompt over a mask: ``cells`` is the mask's mean over each 8x8 cell, in [0, 1].

    Its weight is ``strength`` times ``cells`` blurred by ``blur`` pixels (standard deviation).
    ``bootstrap``: whether the bootstrap steps isolate it (brushes yes, the background no).
    """

    name: str
    prompt: Ensemble
    negative_prompt: str
    guidance: float
    strength: float
    blur: float
    bootstrap: bool
    digest: str
    cells: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class ImagePlan:
    """A reference image (uint8, already the box's size) held with img2img ``strength``, only
    where its ``mask`` has weight when it has one."""

    name: str
    box: Box
    strength: float
    digest: str
    pixels: np.ndarray = field(compare=False, repr=False)
    mask: RegionMask | None = None


@dataclass(frozen=True)
class CanvasPlan:
    """Everything that decides one canvas's pixels, model aside; ``wrap`` says which edges
    join (`hypermosaic.canvas.wrap`), ``control`` what a ControlNet sees."""

    height: int
    width: int
    seed: int
    steps: int
    scheduler: str
    cpu_vae: bool
    batch_size: int
    vae_tile: int
    window_size: int | None
    window_stride: int | None
    bootstrap_steps: int
    prompts: tuple[PromptPlan, ...]
    brushes: tuple[BrushPlan, ...]
    images: tuple[ImagePlan, ...]
    noise_edits: tuple[NoiseEdit, ...]
    compat: str = HYPERMOSAIC
    background: BackgroundPlan | None = None
    wrap: str = "none"
    control: ControlPlan | None = None

    @property
    def cells(self) -> tuple[int, int]:
        """``(rows, cols)`` of 8-pixel cells."""
        return self.height // CELL, self.width // CELL


def plan_canvas(config: CanvasConfig, seed: int | None = None) -> CanvasPlan:
    """Resolve ``config`` for one canvas seed (default: its first) into a `CanvasPlan`.

    Reads masks and reference images; raises `InputError` naming the config's file and the
    region for a bad file or a mask of the wrong size, or the area when part of the canvas has
    no prompt.
    """
    try:
        return _plan(config, config.seed[0] if seed is None else seed)
    except InputError as exc:
        raise InputError(f"{config.source}: {exc}") from None


def _plan(config: CanvasConfig, seed: int) -> CanvasPlan:
    height, width = config.size
    prompts = _grid_prompts(config) + _text_prompts(config, height, width)
    brushes = _brushes(config, height, width)
    background = plan_background(config, height, width)
    images = tuple(
        ImagePlan(f"regions.{i}", region.box, region.strength, digest(pixels), pixels,
                  plan_region_mask(region, i, height, width))
        for i, region in enumerate(config.regions) if isinstance(region, ImageRegion)
        for pixels in [_reference(region, i)]
    )
    plan = CanvasPlan(
        height=height,
        width=width,
        seed=seed,
        steps=config.steps,
        scheduler=config.scheduler,
        cpu_vae=config.cpu_vae,
        batch_size=config.batch_size,
        vae_tile=config.vae_tile,
        window_size=config.window_size,
        window_stride=config.window_stride,
        bootstrap_steps=config.bootstrap_steps,
        prompts=prompts,
        brushes=brushes,
        images=images,
        noise_edits=noise_edits(config, seed),
        compat=config.compat,
        background=background,
        wrap=config.wrap,
        control=plan_control(config, height, width, background),
    )
    _check_coverage(plan)
    return plan


def _grid_prompts(config: CanvasConfig) -> tuple[PromptPlan, ...]:
    grid = config.grid
    if grid is None:
        return ()
    plans = []
    for row, cells in enumerate(grid.prompt):
        for col, prompt in enumerate(cells):
            override = grid.override(row, col)
            guidance = next(g for g in (
                override.guidance if override else None, grid.guidance, config.guidance,
            ) if g is not None)
            plans.append(PromptPlan(
                name=f"grid.{row}_{col}",
                box=grid_box(grid, row, col),
                prompt=prompt,
                negative_prompt=_or(grid.negative_prompt, config.negative_prompt),
                guidance=guidance,
                mask_type=TILING_GAUSSIAN if config.compat == MOD and grid.mask_type == "gaussian"
                else grid.mask_type,
                mask_weight=1.0,
            ))
    return tuple(plans)


def _text_prompts(config: CanvasConfig, height: int, width: int) -> tuple[PromptPlan, ...]:
    return tuple(
        PromptPlan(
            name=f"regions.{index}",
            box=region.box,
            prompt=region.prompt,
            negative_prompt=_or(region.negative_prompt, config.negative_prompt),
            guidance=_or(region.guidance, config.guidance),
            mask_type=region.mask_type,
            mask_weight=region.mask_weight,
            image_prompt=None if region.image_prompt is None
            else plan_image_prompt(region.image_prompt, f"regions.{index}.image_prompt"),
            mask=plan_region_mask(region, index, height, width),
        )
        for index, region in enumerate(config.regions) if isinstance(region, TextRegion)
    )


def _brushes(config: CanvasConfig, height: int, width: int) -> tuple[BrushPlan, ...]:
    plans = []
    for index, region in enumerate(config.regions):
        if isinstance(region, BrushRegion):
            cells = load_mask(region.mask, height, width, f"regions.{index}.mask")
            plans.append(BrushPlan(
                name=f"regions.{index}",
                prompt=region.prompt,
                negative_prompt=_or(region.negative_prompt, config.negative_prompt),
                guidance=_or(region.guidance, config.guidance),
                strength=region.strength,
                blur=region.blur,
                bootstrap=True,
                digest=digest(cells),
                cells=cells,
            ))
    background = config.background
    if background is not None:
        cells = background_cells(config, [plan.cells for plan in plans], (height // CELL,
                                                                          width // CELL))
        plans.append(BrushPlan(
            name="background",
            prompt=background.prompt,
            negative_prompt=_or(background.negative_prompt, config.negative_prompt),
            guidance=_or(background.guidance, config.guidance),
            strength=1.0,
            blur=0.0,
            bootstrap=False,
            digest=digest(cells),
            cells=cells,
        ))
    return tuple(plans)


def _reference(region: ImageRegion, index: int) -> np.ndarray:
    try:
        image = load_image(region.image)
    except InputError as exc:
        raise InputError(f"regions.{index}.image: {exc}") from None
    top, bottom, left, right = region.box
    return np.ascontiguousarray(resize(image, right - left, bottom - top))


def coverage(plan: CanvasPlan) -> np.ndarray:
    """Boolean ``(rows, cols)`` map of the cells where some prompt has positive weight."""
    covered = np.zeros(plan.cells, bool)
    for prompt in plan.prompts:
        if prompt.mask_weight > 0:
            top, bottom, left, right = (edge // CELL for edge in prompt.box)
            inside = True if prompt.mask is None else prompt.mask.cells[top:bottom, left:right] > 0
            covered[top:bottom, left:right] |= inside
    for brush in plan.brushes:
        if brush.strength > 0:
            covered |= brush.cells > 0
    return covered


def _check_coverage(plan: CanvasPlan) -> None:
    uncovered = ~coverage(plan)
    if not uncovered.any():
        return
    rows = np.flatnonzero(uncovered.any(axis=1))
    cols = np.flatnonzero(uncovered.any(axis=0))
    raise InputError(
        f"canvas: {int(uncovered.sum()) * CELL * CELL:,} px are covered by no prompt, within "
        f"rows {rows[0] * CELL}-{(rows[-1] + 1) * CELL} and columns {cols[0] * CELL}-"
        f"{(cols[-1] + 1) * CELL}; cover them with the grid, a text region, a brush or a "
        "[background]"
    )


def _or(value: T | None, default: T) -> T:
    return default if value is None else value
