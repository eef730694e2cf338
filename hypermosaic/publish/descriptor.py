"""The DeepZoom descriptor (``.dzi``), with DisplayRects saying where a sparse pyramid has tiles.

A node-sized pyramid stops below the tiles that already show all the detail there is
(`hypermosaic.publish.deepzoom`: a focus build, or tiles that failed). A viewer that assumed
every tile of every level existed would ask for the missing ones and get 404s. DisplayRects
tell it which exist: OpenSeadragon's ``DziTileSource.tileExists`` says a tile of a level exists
when it overlaps a rect whose ``MinLevel..MaxLevel`` holds that level, so it asks for no other
and keeps drawing the deepest tile it has, scaled up. A level that no rect names is taken as
complete, so once there are rects every level is named by one. A complete pyramid has none and
its descriptor is the plain one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DZI_NS",
    "EXTENSIONS",
    "DisplayRect",
    "TileIndex",
    "display_rects",
    "dzi_xml",
    "level_count",
]

DZI_NS = "http://schemas.microsoft.com/deepzoom/2008"
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}  # tile format -> file suffix

TileIndex = tuple[int, int, int]
"""A DeepZoom tile as ``(level, row, col)``."""


def level_count(width: int, height: int) -> int:
    """DeepZoom levels: level 0 is 1x1, the last is full size."""
    return math.ceil(math.log2(max(width, height))) + 1


@dataclass(frozen=True)
class DisplayRect:
    """Full-resolution pixels ``x, y, width, height`` whose tiles exist on levels ``min_level``
    to ``max_level`` (DeepZoom's ``DisplayRect``)."""

    x: int
    y: int
    width: int
    height: int
    min_level: int
    max_level: int


def display_rects(stops: Iterable[TileIndex], size: int, tile_size: int) -> list[DisplayRect]:
    """The DisplayRects of a square pyramid, ``size`` pixels a side, with nothing below ``stops``.

    A tile exists unless a stop lies strictly above it. Between a level holding stops, ``g``, and
    the next one, ``L``, each tile of ``g`` that exists and is not a stop ("open") holds a whole
    block of existing tiles on every level up to ``L``. So: one rect over the canvas up to the
    first stop level; then, for every further stop level ``L`` and the top level, rects up to
    ``L`` over the open cells of ``g`` that hold a stop of ``L`` (on the top level: all open
    cells), runs of open neighbours merged into rectangles. Every rect starts at level 0: on
    coarser levels it overlaps only ancestors of its tiles, which exist. No ``stops`` (a
    complete pyramid) give no rects; when no top tile exists, an empty rect names the levels
    above the last stop, so that none of their tiles is asked for.

    A focus path without ``neighbours`` gets one rect per level of the tree: 3 for
    ``examples/turtle.toml`` (193 nodes, a 563-byte descriptor). With ``neighbours = 1`` on its
    8x8 grids (1,052 nodes), whose blocks of 3x3 tiles do not fall on the quadtree, it gets 14
    (about 1.8 kB).
    """
    by_level: dict[int, set[tuple[int, int]]] = {}
    for level, row, col in stops:
        by_level.setdefault(level, set()).add((row, col))
    if not by_level:
        return []
    top = level_count(size, size) - 1
    levels = sorted(by_level)
    rects = [DisplayRect(0, 0, size, size, 0, levels[0])]
    g = levels[0]
    open_cells = _open(np.ones((1, 1), bool), 2**g, _tiles_per_side(size, tile_size, top - g),
                       by_level[g])
    for level in [*levels[1:], top]:
        if level == top:
            must = open_cells
        else:
            must = np.zeros_like(open_cells)
            for row, col in by_level[level]:
                must[row >> (level - g), col >> (level - g)] = True
        side = tile_size * 2 ** (top - g)
        for r0, c0, r1, c1 in _cover(must, open_cells):
            x, y = c0 * side, r0 * side
            rects.append(DisplayRect(x, y, min(c1 * side, size) - x, min(r1 * side, size) - y,
                                     0, level))
        if level < top:
            open_cells = _open(open_cells, 2 ** (level - g),
                               _tiles_per_side(size, tile_size, top - level), by_level[level])
            g = level
    if not open_cells.any():
        rects.append(DisplayRect(0, 0, 0, 0, g + 1, top))
    return rects


def _tiles_per_side(size: int, tile_size: int, halvings: int) -> int:
    return math.ceil(size / (tile_size * 2**halvings))


def _open(coarse: np.ndarray, factor: int, n: int, stops: set[tuple[int, int]]) -> np.ndarray:
    """Open cells one stop level down: the descendants of the ``coarse`` open cells (``factor``
    per side, the grid clipped to ``n``), less that level's ``stops``."""
    cells = np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)[:n, :n].copy()
    for row, col in stops:
        cells[row, col] = False
    return cells


def _cover(must: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(r0, c0, r1, c1)`` (ends excluded) of ``allowed`` cells covering every
    ``must`` cell: from the first uncovered one in raster order, as far right and then as far
    down as the cells are allowed."""
    covered = np.zeros_like(must)
    out = []
    for r, c in np.argwhere(must):
        if covered[r, c]:
            continue
        row = allowed[r, c:]
        width = len(row) if row.all() else int(np.argmin(row))
        below = np.asarray(allowed[r:, c : c + width].all(axis=1))
        height = len(below) if below.all() else int(np.argmin(below))
        covered[r : r + height, c : c + width] = True
        out.append((int(r), int(c), int(r + height), int(c + width)))
    return out


def dzi_xml(width: int, height: int, tile_size: int, fmt: str,
            rects: Sequence[DisplayRect] = ()) -> str:
    """The ``.dzi`` descriptor (overlap 0), with ``rects`` as its ``DisplayRects`` if any."""
    listed = "".join(
        f'    <DisplayRect MinLevel="{r.min_level}" MaxLevel="{r.max_level}">'
        f'<Rect X="{r.x}" Y="{r.y}" Width="{r.width}" Height="{r.height}"/></DisplayRect>\n'
        for r in rects
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="{DZI_NS}" '
        f'Format="{EXTENSIONS[fmt]}" Overlap="0" TileSize="{tile_size}">\n'
        f'  <Size Height="{height}" Width="{width}"/>\n'
        + (f"  <DisplayRects>\n{listed}  </DisplayRects>\n" if rects else "")
        + "</Image>\n"
    )
