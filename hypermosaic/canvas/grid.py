"""Grid geometry of a canvas: tile boxes, their exclusive parts, and the noise boxes of seeded
tiles, in pixels as ``(top, bottom, left, right)``.

Tiles step by their side minus the overlap. A seeded tile redraws its noise over its whole
box (``full``) or only over the part no other tile covers (``exclusive``); Mixture of
Diffusers' own rule for that part (`mod_exclusive_box`) only clips a tile by tiles in another
row and another column, and its JSON configs follow it.
"""

from __future__ import annotations

from hypermosaic.canvas.config import CanvasConfig, GridConfig, floor8
from hypermosaic.canvas.regions import MOD
from hypermosaic.tiling import Box

__all__ = ["exclusive_box", "grid_box", "mod_exclusive_box", "seed_box", "seed_notes"]


def grid_box(grid: GridConfig, row: int, col: int) -> Box:
    """Pixel box of tile ``(row, col)``: tiles step by their side minus the overlap. Each edge
    is floored to a multiple of 8, as Mixture of Diffusers does (a no-op unless a Mixture of
    Diffusers config has sides or overlaps that are not multiples of 8)."""
    top = row * (grid.tile_height - grid.tile_row_overlap)
    left = col * (grid.tile_width - grid.tile_col_overlap)
    return (floor8(top), floor8(top + grid.tile_height), floor8(left),
            floor8(left + grid.tile_width))


def exclusive_box(grid: GridConfig, row: int, col: int) -> Box | None:
    """The part of tile ``(row, col)`` that no other tile covers, or None if there is none.

    Tiles of a row all share its rows of pixels, so the exclusive part is the rectangle of
    the tile's own rows (after the previous row of tiles ends, before the next one starts)
    and its own columns.
    """
    top, bottom, left, right = grid_box(grid, row, col)
    if row > 0:
        top = grid_box(grid, row - 1, col)[1]
    if row < grid.rows - 1:
        bottom = grid_box(grid, row + 1, col)[0]
    if col > 0:
        left = grid_box(grid, row, col - 1)[3]
    if col < grid.cols - 1:
        right = grid_box(grid, row, col + 1)[2]
    if top >= bottom or left >= right:
        return None
    return top, bottom, left, right


def _subtract(span: tuple[int, int], others: list[tuple[int, int]]) -> tuple[int, int] | None:
    """``span`` less each of ``others`` in turn, as a single interval (the arithmetic of the
    ``ligo.segments`` package Mixture of Diffusers uses): an interval that does not meet it
    changes nothing, one that covers it, or would cut it in two, leaves None (there: an
    error)."""
    start, end = span
    for other_start, other_end in others:
        if end <= other_start or start >= other_end:
            continue
        if (other_start <= start and other_end >= end) or (start < other_start
                                                            and end > other_end):
            return None
        start, end = (start, other_start) if start < other_start else (other_end, end)
    return start, end


def mod_exclusive_box(grid: GridConfig, row: int, col: int) -> Box | None:
    """Mixture of Diffusers' "exclusive" part of tile ``(row, col)``, or None where it has
    none (Mixture of Diffusers stops with an error there).

    Its rows are the tile's less the rows of every tile in another row *and* another column,
    and likewise its columns; so on a grid of one row or one column nothing clips a tile, and
    ``exclusive`` redraws it whole. Elsewhere this is `exclusive_box`.
    """
    top, bottom, left, right = grid_box(grid, row, col)
    rows = [grid_box(grid, r, 0)[:2] for r in range(grid.rows) if r != row]
    cols = [grid_box(grid, 0, c)[2:] for c in range(grid.cols) if c != col]
    own_rows = _subtract((top, bottom), rows if grid.cols > 1 else [])
    own_cols = _subtract((left, right), cols if grid.rows > 1 else [])
    if own_rows is None or own_cols is None:
        return None
    return (*own_rows, *own_cols)


def seed_box(config: CanvasConfig, row: int, col: int, mode: str) -> Box | None:
    """Where a seeded grid tile's noise is written: its box (``full``), or its exclusive part
    (`exclusive_box`, or `mod_exclusive_box` for a Mixture of Diffusers config); None when
    that part is empty and the seed changes nothing."""
    assert config.grid is not None
    if mode == "full":
        return grid_box(config.grid, row, col)
    if config.compat == MOD:
        return mod_exclusive_box(config.grid, row, col)
    return exclusive_box(config.grid, row, col)


def seed_notes(config: CanvasConfig) -> list[str]:
    """What to warn about the seeded grid tiles of ``config``: an ``exclusive`` seed that
    changes nothing, and (Mixture of Diffusers) ``exclusive`` working as ``full`` on a grid
    of one row or one column."""
    grid = config.grid
    if grid is None:
        return []
    notes: list[str] = []
    mod = config.compat == MOD
    for row in range(grid.rows):
        for col in range(grid.cols):
            override = grid.override(row, col)
            if override is None or override.seed is None:
                continue
            if (override.seed_mode or grid.seed_tiles_mode) != "exclusive":
                continue
            if mod and 1 in (grid.rows, grid.cols):
                notes.append(
                    f'grid tile ({row}, {col}): seed mode "exclusive" redraws the whole tile on '
                    "a grid of one row or one column, as in Mixture of Diffusers (only tiles "
                    "in another row and another column clip a tile there)"
                )
            elif seed_box(config, row, col, "exclusive") is None:
                notes.append(
                    f"grid tile ({row}, {col}): its seed {override.seed} changes nothing: seed "
                    'mode "exclusive" redraws only the part of a tile that no other tile '
                    "covers, and the overlaps leave this one none"
                    + (" (Mixture of Diffusers stops with an error here)" if mod else "")
                )
    return notes
