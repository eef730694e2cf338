"""Which nodes draw a frame: the depth a view needs, the next one fading in, and the nodes a
region for it pastes. Pure functions of the view (no store), shared by the renderer
(`hypermosaic.video.frames.FrameRenderer`) and by what a deeper video makes before rendering
(`hypermosaic.video.deeper.needed_nodes`), so the two never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from hypermosaic.tree import Address, Plan
from hypermosaic.video.camera import View, canvas_rect, level_for

__all__ = [
    "BLEND",
    "MARGIN",
    "CanvasPart",
    "Cells",
    "address_at",
    "canvas_part",
    "deeper_weight",
    "frame_cells",
    "region_cells",
]

MARGIN = 0.02
"""Extra canvas around a view (fraction of its size) assembled so the next frames reuse it."""
BLEND = 0.2
"""Fraction of a level (in zoom) over which the next depth fades in before it takes over."""


@dataclass(frozen=True)
class CanvasPart:
    """Where a frame shows the canvas and what draws it: the even-aligned pixel ``rect``
    ``(x0, y0, x1, y1)``, the canvas ``area`` under it (past the edge by under a pixel or two:
    the regions' padding shows background there) and that area clamped to the canvas
    (``inside``: which nodes), ``pixel`` canvas pixels per frame pixel, the ``depth`` whose
    nodes draw it and the ``weight`` of ``depth + 1`` fading in."""

    rect: tuple[int, int, int, int]
    area: View
    inside: View
    pixel: float
    depth: int
    weight: float


def canvas_part(
    plan: Plan, width: int, height: int, view: View, blend: float = BLEND
) -> CanvasPart | None:
    """The canvas part of a width x height frame showing ``view`` (None: no canvas in it)."""
    rect = canvas_rect(view, plan.canvas_size, width, height)
    if rect is None:
        return None
    x0, y0, x1, y1 = rect
    pixel = (view.right - view.left) / width
    pixel_y = (view.bottom - view.top) / height
    area = View(view.left + x0 * pixel, view.top + y0 * pixel_y,
                view.left + x1 * pixel, view.top + y1 * pixel_y)
    inside = View(*(min(max(edge, 0.0), float(plan.canvas_size)) for edge in area))
    depth = level_for(plan, pixel)
    return CanvasPart(rect, area, inside, pixel, depth, deeper_weight(plan, depth, pixel, blend))


def deeper_weight(plan: Plan, depth: int, pixel: float, blend: float = BLEND) -> float:
    """How much of depth + 1 is mixed into a frame of ``depth`` at ``pixel`` canvas pixels per
    frame pixel: 0 until the last ``blend`` of the level, rising to 1 where it takes over."""
    if depth >= plan.depth or blend <= 0:
        return 0.0
    switch = plan.span(depth) / plan.size
    # w = 1 - log(pixel / switch) / log(grid ** blend), clamped to [0, 1]
    reach = blend * math.log(plan.grids[depth])
    return min(1.0, max(0.0, 1 - math.log(pixel / switch) / reach))


class Cells(NamedTuple):
    """The nodes of ``depth`` in global grid rows ``row0 <= row < row1`` and columns
    ``col0 <= col < col1``."""

    depth: int
    row0: int
    row1: int
    col0: int
    col1: int

    def spots(self) -> list[tuple[int, int]]:
        """Their global grid cells ``(row, col)``, in raster order."""
        return [(row, col) for row in range(self.row0, self.row1)
                for col in range(self.col0, self.col1)]


def region_cells(plan: Plan, area: View, depth: int) -> Cells:
    """The nodes of ``depth`` a region for the canvas ``area`` pastes: those under it and a
    `MARGIN` around it, so that the following frames can reuse the region."""
    span = plan.span(depth)
    cells = plan.canvas_size // span
    mx = MARGIN * (area.right - area.left)
    my = MARGIN * (area.bottom - area.top)
    col0 = max(0, math.floor((area.left - mx) / span))
    col1 = min(cells, max(col0 + 1, math.ceil((area.right + mx) / span)))
    row0 = max(0, math.floor((area.top - my) / span))
    row1 = min(cells, max(row0 + 1, math.ceil((area.bottom + my) / span)))
    return Cells(depth, row0, row1, col0, col1)


def frame_cells(
    plan: Plan, width: int, height: int, view: View, blend: float = BLEND
) -> list[Cells]:
    """The nodes a `FrameRenderer` may paste for the frame showing ``view``, at its depth and
    the one fading in: with them all stored, the frame shows no node enlarged."""
    part = canvas_part(plan, width, height, view, blend)
    if part is None:
        return []
    depths = (part.depth, part.depth + 1) if part.weight > 0 else (part.depth,)
    return [region_cells(plan, part.inside, depth) for depth in depths]


def address_at(plan: Plan, depth: int, row: int, col: int) -> Address:
    """The address of the depth-``depth`` node in global grid cell ``(row, col)``."""
    steps = []
    for level in range(depth):
        below = math.prod(plan.grids[level + 1 : depth])
        grid = plan.grids[level]
        steps.append(((row // below) % grid, (col // below) % grid))
    return tuple(steps)
