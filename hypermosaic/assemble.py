"""Assembly with pyvips: the giant canvas as a lazy image, written once as DeepZoom.

The canvas (``size`` x product of the grids, per side) is never held in memory. It is a tree of
``arrayjoin`` operations mirroring the tile tree, over node files opened with sequential access,
so pixels stream through in strips and each file is decoded once, top to bottom, while the strip
passes it. Where a node was not expanded (a focus build, or a tile that failed) its own image
is scaled up to fill its area.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pyvips
from distributed import Client

from hypermosaic.config import PublishConfig
from hypermosaic.deepzoom import Pyramid, dzi_xml, write_pyramid
from hypermosaic.store import Store, atomic_write
from hypermosaic.tree import ROOT, Address, Plan

__all__ = ["DZI_NAME", "canvas_image", "preview_depth", "publish_build", "write_deepzoom"]

DZI_NAME = "mosaic"


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


def publish_build(store: Store, plan: Plan, publish: PublishConfig,
                  client: Client | None = None, quality: int = 92) -> dict[str, Path]:
    """Write the preview, the DeepZoom pyramid with its viewer, and optionally a BigTIFF.

    ``quality`` (the config's) applies to JPEG and WebP DeepZoom tiles and the BigTIFF.
    """
    outputs: dict[str, Path] = {}
    preview_path = store.root / "preview.png"
    small = canvas_image(store, plan, preview_depth(plan, publish.preview))
    scale = min(1.0, publish.preview / small.width)
    atomic_write(preview_path, small.resize(scale, kernel="lanczos3").pngsave_buffer())
    outputs["preview"] = preview_path
    if publish.deepzoom:
        outputs["deepzoom"] = write_deepzoom(store, plan, publish, client, quality)
        from hypermosaic.viewer import write_viewer

        outputs["viewer"] = write_viewer(store.root, f"{DZI_NAME}.dzi")
    if publish.tiff:
        tiff = store.root / f"{DZI_NAME}.tif"
        partial = tiff.with_name(f".{tiff.name}.tmp")
        canvas_image(store, plan).tiffsave(
            str(partial), tile=True, pyramid=True, bigtiff=True, compression="jpeg", Q=quality,
            tile_width=256, tile_height=256,
        )
        os.replace(partial, tiff)
        outputs["tiff"] = tiff
    return outputs


def write_deepzoom(store: Store, plan: Plan, publish: PublishConfig,
                   client: Client | None = None, quality: int = 92) -> Path:
    """Write ``mosaic.dzi`` and ``mosaic_files/``, replacing a previous pyramid only at the end.

    With tiles the size of a node (the default) the pyramid is written from the node files
    (`hypermosaic.deepzoom`); any other tile size goes through pyvips' ``dzsave`` of the lazy
    canvas. ``quality`` is that of JPEG and WebP tiles.
    """
    tile_size = publish.tile_size or plan.size
    tile_format = publish.tile_format or store.node_format
    staging = store.root / f".{DZI_NAME}-staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    if tile_size == plan.size:
        pyramid = Pyramid(store.root, store.node_format, plan, staging / f"{DZI_NAME}_files",
                          tile_format, quality, _build_id(store))
        write_pyramid(pyramid, client)
        (staging / f"{DZI_NAME}.dzi").write_text(
            dzi_xml(plan.canvas_size, plan.canvas_size, tile_size, tile_format)
        )
    else:
        suffix = {"jpeg": f".jpg[Q={quality}]", "png": ".png",
                  "webp": f".webp[Q={quality}]"}[tile_format]
        canvas_image(store, plan).dzsave(str(staging / DZI_NAME), tile_size=tile_size,
                                         overlap=0, suffix=suffix, layout="dz")
    files = store.root / f"{DZI_NAME}_files"
    if files.exists():
        shutil.rmtree(files)
    os.replace(staging / f"{DZI_NAME}_files", files)
    os.replace(staging / f"{DZI_NAME}.dzi", store.root / f"{DZI_NAME}.dzi")
    staging.rmdir()
    return store.root / f"{DZI_NAME}.dzi"


def _build_id(store: Store) -> str:
    """Changes with every build run: the manifest is rewritten at its start and end.

    Keys the workers' canvas cache (`hypermosaic.deepzoom`), so that a rebuild into the same
    folder never renders from the nodes of the one before.
    """
    try:
        stat = store.manifest_path.stat()
    except FileNotFoundError:
        return ""
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"
