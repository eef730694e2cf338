"""Assembly with pyvips: the giant canvas as a lazy image, written once as DeepZoom.

The canvas (``size`` x product of the grids, per side) is never held in memory. It is a tree of
``arrayjoin`` operations mirroring the tile tree, over node files opened with sequential access,
so pixels stream through in strips and each file is decoded once, top to bottom, while the strip
passes it. Where a node was not expanded (a focus build, or a tile that failed) its own image
is scaled up to fill its area.
"""

from __future__ import annotations

import math

import pyvips

from hypermosaic.store import Store
from hypermosaic.tree import ROOT, Address, Plan

__all__ = ["canvas_image", "preview_depth"]


def canvas_image(store: Store, plan: Plan, depth: int | None = None,
                 access: str = "sequential") -> pyvips.Image:
    """The hypermosaic as one lazy pyvips image, using nodes down to ``depth`` (default: all).

    At depth ``k`` the canvas is ``size * prod(grids[:k])`` pixels per side. ``sequential``
    access streams a single top-to-bottom pass; use ``random`` to read regions in any order.
    """
    limited = plan if depth is None else Plan(plan.size, plan.grids[:depth], plan.focus,
                                             plan.neighbours)
    return _node_image(store, limited, ROOT, access)


def _open(store: Store, address: Address, access: str) -> pyvips.Image:
    # revalidate: libvips caches loads by file name, and a rebuild replaces the node files
    image = pyvips.Image.new_from_file(str(store.node_path(address)), access=access,
                                       revalidate=True)
    return image.extract_band(0, n=3) if image.bands > 3 else image


def _node_image(store: Store, plan: Plan, address: Address, access: str) -> pyvips.Image:
    """The area of one node at canvas resolution: its children joined, or itself scaled up."""
    depth = len(address)
    span = plan.span(depth)
    children = [c for c in _cells(plan, address) if store.has(c)] if depth < plan.depth else []
    if not children:
        image = _open(store, address, access)
        return image if span == plan.size else image.resize(span / plan.size, kernel="cubic")
    grid = plan.grids[depth]
    tile = plan.tile_size(depth)
    child_span = plan.span(depth + 1)
    stored = set(children)
    own = None
    cells = []
    for cell in _cells(plan, address):
        if cell in stored:
            cells.append(_node_image(store, plan, cell, access))
            continue
        if own is None:
            own = _open(store, address, "random")
        row, col = cell[-1]
        crop = own.crop(col * tile, row * tile, tile, tile)
        cells.append(crop.resize(child_span / tile, kernel="cubic"))
    return pyvips.Image.arrayjoin(cells, across=grid)


def _cells(plan: Plan, address: Address) -> list[Address]:
    grid = plan.grids[len(address)]
    return [address + ((r, c),) for r in range(grid) for c in range(grid)]


def preview_depth(plan: Plan, preview: int) -> int:
    """The shallowest depth whose canvas is at least ``preview`` pixels (or the full depth)."""
    for depth in range(plan.depth + 1):
        if plan.size * math.prod(plan.grids[:depth]) >= preview:
            return depth
    return plan.depth
