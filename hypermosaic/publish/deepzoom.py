"""A DeepZoom pyramid written straight from the node images, subtree by subtree.

When the DeepZoom tile size equals the node size, the deepest level's tiles *are* the leaf node
images: they are hard-linked (or copied) when the formats match, so the largest level costs no
encoding at all. Every higher tile is the 2x2 box average of the four tiles below it, computed
bottom-up in a quadtree walk that holds only a few tiles per level in memory. Subtrees of the
quadtree run as independent tasks on the Dask pool and return their top tile; this process
finishes the few levels above them. Leaves that were never generated (focus builds, failed
tiles) are filled from the deepest stored ancestor, scaled up, and the pyramid stops below the
tiles that already show all the detail there is: `write_pyramid` returns the DisplayRects that
tell a viewer which tiles exist (`hypermosaic.publish.descriptor`).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips
from dask.base import tokenize
from distributed import Client, as_completed
from PIL import Image

from hypermosaic.images import decode, encode
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.publish.assemble import canvas_image
from hypermosaic.publish.descriptor import (
    EXTENSIONS,
    DisplayRect,
    TileIndex,
    display_rects,
    level_count,
)
from hypermosaic.store import Store, atomic_write
from hypermosaic.tree import ROOT, Address, Plan

__all__ = ["Pyramid", "staged_deepzoom", "write_pyramid"]


@contextmanager
def staged_deepzoom(dzi: Path, staging: Path | None = None) -> Iterator[Path]:
    """Yield a staging folder to write ``<stem>.dzi`` and ``<stem>_files/`` in; when the block
    completes they replace the ones beside ``dzi`` (the folder first, the descriptor last), so a
    viewer never sees a half-written pyramid and a failure leaves the old one. The staging
    folder (default: hidden beside ``dzi``, named for this process) is removed either way.
    """
    folder, stem = dzi.parent, dzi.stem
    staging = staging or folder / f".{stem}.{os.getpid()}.dz"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        # dzsave's record of the image's metadata (with a timestamp): no viewer reads it
        (staging / f"{stem}_files" / "vips-properties.xml").unlink(missing_ok=True)
        files = folder / f"{stem}_files"
        shutil.rmtree(files, ignore_errors=True)
        os.replace(staging / f"{stem}_files", files)
        os.replace(staging / f"{stem}.dzi", dzi)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class Pyramid:
    """Geometry of a square DeepZoom pyramid whose deepest tiles are the leaf nodes.

    ``quality`` is that of JPEG and WebP tiles (the build config's). ``build_id`` names the
    state of the store (`hypermosaic.publish.run`): rendered canvases are cached per process
    under it, so a rebuild into the same folder is never drawn from the old nodes.
    """

    store_root: Path
    node_format: str
    plan: Plan
    files_dir: Path
    tile_format: str
    quality: int = 92
    build_id: str = ""

    @property
    def leaves(self) -> int:
        """Leaf tiles per side at the deepest level."""
        return math.prod(self.plan.grids)

    @property
    def top_level(self) -> int:
        return level_count(self.plan.canvas_size, self.plan.canvas_size) - 1

    def tiles_per_side(self, level: int) -> int:
        return math.ceil(self.leaves / 2 ** (self.top_level - level))

    def tile_path(self, level: int, col: int, row: int) -> Path:
        return self.files_dir / str(level) / f"{col}_{row}.{EXTENSIONS[self.tile_format]}"

    def leaf_address(self, row: int, col: int) -> Address:
        """The depth-``D`` node whose image is leaf tile ``(row, col)``."""
        steps = []
        below = self.leaves
        for grid in self.plan.grids:
            below //= grid
            steps.append(((row // below) % grid, (col // below) % grid))
        return tuple(steps)

    def leaf(self, row: int, col: int) -> np.ndarray:
        """Leaf tile pixels (its file written on the way); rendered from ancestors if not built."""
        store = Store(self.store_root, self.node_format)
        address = self.leaf_address(row, col)
        target = self.tile_path(self.top_level, col, row)
        if not store.has(address):
            return self.coarse_tile(self.top_level, row, col)
        source = store.node_path(address)
        if self.tile_format == self.node_format:
            _link_or_copy(source, target)
            return decode(source.read_bytes())
        image = decode(source.read_bytes())
        atomic_write(target, encode(image, self.tile_format, self.quality))
        return image

    def region(self, level: int, row: int, col: int) -> tuple[int, int, int]:
        """Canvas-pixel ``(x, y, side)`` covered by a tile (clipped to the canvas by callers)."""
        side = self.plan.size * 2 ** (self.top_level - level)
        return col * side, row * side, side

    def has_finer_detail(self, level: int, row: int, col: int) -> bool:
        """Whether a stored node inside the tile has more pixels there than ``level`` shows.

        When not, the tile and all tiles below it are mere upscales: the pyramid stops there
        (a sparse pyramid; viewers keep showing the coarser tile) and the tile is rendered
        straight from the stored nodes.
        """
        x, y, side = self.region(level, row, col)
        store = Store(self.store_root, self.node_format)
        stack = [ROOT]
        while stack:
            node = stack.pop()
            depth = len(node)
            if self.plan.span(depth) < side:
                return True
            if depth == self.plan.depth:
                continue
            ox, oy = self.plan.origin(node)
            child = self.plan.span(depth + 1)
            grid = self.plan.grids[depth]
            rows = range(max(0, (y - oy) // child), min(grid, -(-(y + side - oy) // child)))
            cols = range(max(0, (x - ox) // child), min(grid, -(-(x + side - ox) // child)))
            stack.extend(c for c in (node + ((r, q),) for r in rows for q in cols)
                         if store.has(c))
        return False

    def coarse_tile(self, level: int, row: int, col: int) -> np.ndarray:
        """Render, write and return a tile from the shallowest canvas that has its detail."""
        x, y, side = self.region(level, row, col)
        total = self.plan.canvas_size
        width, height = min(side, total - x), min(side, total - y)
        scale = 2 ** (self.top_level - level)
        depth = next(d for d in range(self.plan.depth + 1)
                     if self.plan.span(d) <= self.plan.size * scale or d == self.plan.depth)
        canvas = _canvas(self.store_root, self.node_format, self.plan, depth, self.build_id)
        ratio = canvas.width / total
        crop = canvas.crop(int(x * ratio), int(y * ratio), max(1, round(width * ratio)),
                           max(1, round(height * ratio)))
        out_w, out_h = -(-width // scale), -(-height // scale)
        image = crop.resize(out_w / crop.width, vscale=out_h / crop.height, kernel="cubic")
        pixels = image.gravity("north-west", out_w, out_h, extend="copy").numpy()
        atomic_write(self.tile_path(level, col, row), encode(pixels, self.tile_format,
                                                             self.quality))
        return pixels

    def tile(self, level: int, row: int, col: int, stops: list[TileIndex],
             known: Mapping[TileIndex, np.ndarray] | None = None) -> np.ndarray:
        """Compute, write and return tile ``(row, col)`` of ``level`` and everything below it.

        A tile below the top level rendered straight from the nodes (nothing finer there) is
        appended to ``stops``: no tile below it is written. ``known`` holds tiles (by
        ``(level, row, col)``) already written, e.g. by subtree tasks.
        """
        if known and (level, row, col) in known:
            return known[(level, row, col)]
        if level == self.top_level:
            return self.leaf(row, col)
        if not self.has_finer_detail(level, row, col):
            stops.append((level, row, col))
            return self.coarse_tile(level, row, col)
        below = self.tiles_per_side(level + 1)
        quads = [
            [self.tile(level + 1, r, c, stops, known) for c in (2 * col, 2 * col + 1)
             if c < below]
            for r in (2 * row, 2 * row + 1) if r < below
        ]
        image = _halve(np.concatenate([np.concatenate(q, axis=1) for q in quads], axis=0))
        atomic_write(self.tile_path(level, col, row), encode(image, self.tile_format,
                                                             self.quality))
        return image


@functools.lru_cache(maxsize=4)
def _canvas(root: Path, node_format: str, plan: Plan, depth: int, build_id: str) -> pyvips.Image:
    """The lazy canvas at ``depth``, cached per ``build_id`` (the state of the store)."""
    return canvas_image(Store(root, node_format), plan, depth, access="random")


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 box average (an odd last row or column averages the pixels it has)."""
    return np.asarray(Image.fromarray(image).reduce(2))


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def subtree_task(pyramid: Pyramid, level: int, row: int,
                 col: int) -> tuple[np.ndarray, list[TileIndex]]:
    """Dask task: one quadtree subtree, returning its top tile and its stops."""
    stops: list[TileIndex] = []
    return pyramid.tile(level, row, col, stops), stops


def write_pyramid(pyramid: Pyramid, client: Client | None = None, min_tasks: int = 64,
                  progress: ProgressCallback | None = None) -> list[DisplayRect]:
    """Write every tile of ``pyramid``; returns the DisplayRects saying which tiles exist.

    The rects are empty for a complete pyramid (`hypermosaic.publish.descriptor.display_rects`).
    With a Dask ``client`` the quadtree is split at the shallowest level with at least
    ``min_tasks`` tiles and those subtrees run on the pool; this process finishes the rest.
    ``progress`` counts the subtrees done (unit ``pyramid parts``), the top as the last one.
    """
    pyramid.files_dir.mkdir(parents=True, exist_ok=True)
    split = min(
        next(level for level in range(pyramid.top_level + 1)
             if pyramid.tiles_per_side(level) ** 2 >= min_tasks or level == pyramid.top_level),
        pyramid.top_level - 1,
    )
    known: dict[TileIndex, np.ndarray] = {}
    stops: list[TileIndex] = []
    if client is not None and split > 0:
        side = pyramid.tiles_per_side(split)
        token = tokenize(pyramid)  # two publishes sharing a scheduler never share a key
        futures = {
            client.submit(subtree_task, pyramid, split, r, c,
                          key=f"dz-{token}-{split}-{r}-{c}", pure=False): (split, r, c)
            for r in range(side) for c in range(side)
            if pyramid.has_finer_detail(split, r, c)
        }
        report(progress, "pyramid parts", 0, len(futures) + 1)
        for done, future in enumerate(as_completed(futures), start=1):
            known[futures[future]], found = future.result()
            stops.extend(found)
            future.release()
            report(progress, "pyramid parts", done, len(futures) + 1)
    pyramid.tile(0, 0, 0, stops, known)
    report(progress, "pyramid parts", len(known) + 1, len(known) + 1)
    return display_rects(stops, pyramid.plan.canvas_size, pyramid.plan.size)
