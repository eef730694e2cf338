"""The edits of a canvas's initial noise, in the order they apply (`noise_edits`).

Initial noise is drawn from the canvas seed for the whole canvas, then edited: the seeded grid
tiles in raster order, reroll regions in config order, then ``noise_eps`` of text and image
regions in config order (Mixture of Diffusers' order with its compat; `hypermosaic.canvas.plan`
tells the rest). A region with a ``mask`` edits only where its mask has weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hypermosaic.canvas.background import RegionMask, plan_region_mask
from hypermosaic.canvas.config import CanvasConfig
from hypermosaic.canvas.grid import grid_box, seed_box
from hypermosaic.canvas.regions import MOD, ImageRegion, RerollRegion, TextRegion
from hypermosaic.tiling import Box
from hypermosaic.tree import derive_seed

__all__ = ["NoiseEdit", "noise_edits"]


@dataclass(frozen=True)
class NoiseEdit:
    """Noise drawn from ``seed`` over ``draw``, written (replaced or added) inside ``write``,
    weighted there by ``mask`` when given."""

    name: str
    seed: int
    draw: Box
    write: Box
    mode: Literal["reset", "epsilon"]
    eps: float = 0.0
    mask: RegionMask | None = None


def noise_edits(config: CanvasConfig, seed: int) -> tuple[NoiseEdit, ...]:
    """The noise edits of ``config`` for canvas ``seed``, in the order they apply; a region
    without a seed gets one derived from ``seed`` and its name."""
    height, width = config.size
    edits = []
    grid = config.grid
    if grid is not None:
        for row in range(grid.rows):
            for col in range(grid.cols):
                override = grid.override(row, col)
                if override is None or override.seed is None:
                    continue
                write = seed_box(config, row, col, override.seed_mode or grid.seed_tiles_mode)
                if write is None:
                    continue
                # Mixture of Diffusers draws noise of the written part's shape; we draw the
                # tile's and write part of it (so a tile's noise does not depend on the others)
                draw = write if config.compat == MOD else grid_box(grid, row, col)
                edits.append(NoiseEdit(f"grid.{row}_{col}", override.seed, draw, write, "reset"))
    rerolls = [
        NoiseEdit(f"regions.{index}", region.seed, region.box, region.box, region.mode,
                  region.noise_eps, plan_region_mask(region, index, height, width))
        for index, region in enumerate(config.regions) if isinstance(region, RerollRegion)
    ]
    noised = []
    for index, region in enumerate(config.regions):
        if isinstance(region, TextRegion | ImageRegion) and region.noise_eps > 0:
            name = f"regions.{index}"
            region_seed = derive_seed(seed, name) if region.seed is None else region.seed
            noised.append(NoiseEdit(name, region_seed, region.box, region.box, "epsilon",
                                    region.noise_eps, plan_region_mask(region, index, height,
                                                                       width)))
    if config.compat == MOD:  # its canvas pipeline: resets, regions' noise, epsilon rerolls
        resets = [edit for edit in rerolls if edit.mode == "reset"]
        return tuple(edits + resets + noised + [e for e in rerolls if e.mode == "epsilon"])
    return tuple(edits + rerolls + noised)
