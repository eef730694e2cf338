"""Publishing a build: preview, DeepZoom pyramid with its viewer page, optional BigTIFF.

Everything is read from the node images in the store and written once, each output atomically
(a viewer or reader sees the old file or the whole new one). The DeepZoom pyramid is written
from the node files when its tiles are the node size (`hypermosaic.publish.deepzoom`, on the
Dask pool when there is one), otherwise by pyvips' ``dzsave`` of the lazy canvas.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from distributed import Client

from hypermosaic.progress import ProgressCallback, report
from hypermosaic.publish.assemble import canvas_image, preview_depth
from hypermosaic.publish.config import PublishConfig
from hypermosaic.publish.deepzoom import Pyramid, staged_deepzoom, write_pyramid
from hypermosaic.publish.descriptor import dzi_xml
from hypermosaic.publish.viewer import write_viewer
from hypermosaic.store import Store, atomic_path, atomic_write
from hypermosaic.tree import Plan

__all__ = ["DZI_NAME", "publication_source", "publish_build", "write_deepzoom"]

DZI_NAME = "mosaic"


def publish_build(store: Store, plan: Plan, publish: PublishConfig,
                  client: Client | None = None, quality: int = 92,
                  progress: ProgressCallback | None = None) -> dict[str, Path]:
    """Write the preview, the DeepZoom pyramid with its viewer, and optionally a BigTIFF.

    ``quality`` (the config's) applies to JPEG and WebP DeepZoom tiles and the BigTIFF.
    ``progress`` counts the outputs written (unit ``outputs``).
    """
    steps = 1 + 2 * publish.deepzoom + publish.tiff
    report(progress, "outputs", 0, steps)
    outputs: dict[str, Path] = {}
    preview_path = store.root / "preview.png"
    small = canvas_image(store, plan, preview_depth(plan, publish.preview))
    scale = min(1.0, publish.preview / small.width)
    atomic_write(preview_path, small.resize(scale, kernel="lanczos3").pngsave_buffer())
    outputs["preview"] = preview_path
    report(progress, "outputs", len(outputs), steps)
    if publish.deepzoom:
        outputs["deepzoom"] = write_deepzoom(store, plan, publish, client, quality, progress)
        report(progress, "outputs", len(outputs), steps)
        outputs["viewer"] = write_viewer(store.root, f"{DZI_NAME}.dzi")
        report(progress, "outputs", len(outputs), steps)
    if publish.tiff:
        tiff = store.root / f"{DZI_NAME}.tif"
        with atomic_path(tiff) as partial:
            canvas_image(store, plan).tiffsave(
                str(partial), tile=True, pyramid=True, bigtiff=True, compression="jpeg",
                Q=quality, tile_width=256, tile_height=256,
            )
        outputs["tiff"] = tiff
        report(progress, "outputs", len(outputs), steps)
    return outputs


def write_deepzoom(store: Store, plan: Plan, publish: PublishConfig,
                   client: Client | None = None, quality: int = 92,
                   progress: ProgressCallback | None = None) -> Path:
    """Write ``mosaic.dzi`` and ``mosaic_files/``, replacing a previous pyramid only at the end.

    With tiles the size of a node (the default) the pyramid is written from the node files
    (`hypermosaic.publish.deepzoom`), and where it stops early the descriptor's DisplayRects
    say which tiles exist; any other tile size goes through pyvips' ``dzsave`` of the lazy
    canvas (every tile written). ``quality`` is that of JPEG and WebP tiles.
    """
    tile_size = publish.tile_size or plan.size
    tile_format = publish.tile_format or store.node_format
    dzi = store.root / f"{DZI_NAME}.dzi"
    with staged_deepzoom(dzi, store.root / f".{DZI_NAME}-staging") as staging:
        if tile_size == plan.size:
            pyramid = Pyramid(store.root, store.node_format, plan, staging / f"{DZI_NAME}_files",
                              tile_format, quality, _build_id(store))
            rects = write_pyramid(pyramid, client, progress=progress)
            (staging / dzi.name).write_text(
                dzi_xml(plan.canvas_size, plan.canvas_size, tile_size, tile_format, rects)
            )
        else:
            suffix = {"jpeg": f".jpg[Q={quality}]", "png": ".png",
                      "webp": f".webp[Q={quality}]"}[tile_format]
            canvas_image(store, plan).dzsave(str(staging / DZI_NAME), tile_size=tile_size,
                                             overlap=0, suffix=suffix, layout="dz")
    return dzi


def publication_source(store: Store, plan: Plan, publish: PublishConfig,
                       quality: int = 92) -> str:
    """A digest of everything `publish_build` reads: the plan, the publish settings, and the
    name, size, modification time and inode of every stored node it may show (depth at most the
    plan's, planned or made live).

    A build records it when publishing ends; a re-run that finds the same digest has nothing
    to republish. Nodes are only ever written whole under a new inode (`atomic_write`), so a
    node made, removed or replaced since changes it.
    """
    digest = hashlib.sha256(json.dumps(
        [dataclasses.asdict(plan), publish.model_dump(), quality, store.node_format],
        sort_keys=True, default=str,
    ).encode())
    for line in _node_stats(store.nodes_dir, plan.depth):
        digest.update(line.encode())
    return digest.hexdigest()[:32]


def _node_stats(folder: Path, depth: int, prefix: str = "") -> Iterator[str]:
    """``name size mtime_ns inode`` of each node file in ``folder`` (the nodes folder: the root and
    depth 1) and in the folders below it down to ``depth`` (a node's children sit in the
    folder named after it), in name order; hidden files (a write in progress) are left out."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            if depth > 1:
                yield from _node_stats(Path(entry.path), depth - 1, f"{prefix}{entry.name}/")
        else:
            stat = entry.stat()
            yield f"{prefix}{entry.name} {stat.st_size} {stat.st_mtime_ns} {stat.st_ino}\n"


def _build_id(store: Store) -> str:
    """Changes with every build run: the manifest is rewritten at its start and end.

    Keys the workers' canvas cache (`hypermosaic.publish.deepzoom`), so that a rebuild into the
    same folder never renders from the nodes of the one before.
    """
    try:
        stat = store.manifest_path.stat()
    except FileNotFoundError:
        return ""
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"
