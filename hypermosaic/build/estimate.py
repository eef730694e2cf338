"""What a build will take, estimated from its config before any work: nodes, disk, memory.

A config can ask for more than any machine holds (``size = 8192``, ``grid = 256``,
``depth = 16`` is 2^128 nodes); such a build is refused with its estimate before anything is
written, unless the caller says the room will be there (``--yes``, for a cluster with its own
disk). The estimate is printed in the build's first lines either way.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hypermosaic.build.config import BuildConfig
from hypermosaic.build.plan import batch_size
from hypermosaic.errors import InputError

__all__ = ["Estimate", "check_room", "estimate"]

# Bytes per pixel of a node file, on photographic content (measured on the demo's nodes:
# PNG 1.45 with our unfiltered libdeflate rows; JPEG and WebP at quality 92 about 0.3).
_BYTES_PER_PIXEL = {"png": 1.5, "jpeg": 0.35, "webp": 0.3}
# Working copies of one tile on a worker (uint8 init and output, float32 colour-space or
# latent arrays, the engine's own buffers): a generous multiple of its float32 size.
_WORKING_COPIES = 8


@dataclass(frozen=True)
class Estimate:
    """Nodes, bytes on disk and peak worker memory of a build."""

    nodes: int
    disk: int
    memory: int

    def __str__(self) -> str:
        nodes = f"{self.nodes:,}" if self.nodes < 10**12 else f"{self.nodes:.2e}"
        return (f"{nodes} nodes, about {_size(self.disk)} on disk and "
                f"{_size(self.memory)} of memory per worker")


def estimate(config: BuildConfig) -> Estimate:
    """The `Estimate` of ``config``: node files, the DeepZoom levels above the leaves (a third
    of the leaves' size; the leaves themselves are hard links), the preview and the BigTIFF."""
    plan = config.plan()
    nodes = plan.count()
    pixels = config.size * config.size
    node_bytes = pixels * _BYTES_PER_PIXEL[config.format]
    disk = nodes * node_bytes
    if config.publish.deepzoom:
        disk += nodes * node_bytes / 3
    if config.publish.tiff:
        disk += plan.canvas_size ** 2 * _BYTES_PER_PIXEL["jpeg"]
    memory = batch_size(config) * pixels * 3 * 4 * _WORKING_COPIES
    return Estimate(nodes=nodes, disk=math.ceil(disk), memory=memory)


def check_room(config: BuildConfig, needed: Estimate, *, yes: bool = False) -> None:
    """`InputError` with the estimate when the output's disk, or this machine's memory, cannot
    hold the build (files already in the output folder count as room); ``yes`` skips it."""
    if yes:
        return
    folder = _existing(Path(config.out))
    free = shutil.disk_usage(folder).free + _stored_bytes(Path(config.out))
    if needed.disk > free:
        raise InputError(
            f"{config.out}: this build needs {needed}, but the disk has {_size(free)} free; "
            "lower size, grid or depth, choose another --out, or pass --yes if the room "
            "will be there"
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed.memory > memory:
        raise InputError(
            f"size: {config.size} px tiles need {needed}, more than this machine's "
            f"{_size(memory)}; lower size or diffusion.batch_size, or pass --yes to run on "
            "workers that have it"
        )


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where its disk is)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path.cwd()


def _stored_bytes(out: Path) -> int:
    """Bytes of the node files a resumed build already has."""
    nodes = out / "nodes"
    if not nodes.is_dir():
        return 0
    return sum(entry.stat().st_size for entry in nodes.rglob("*") if entry.is_file())


def _size(count: float) -> str:
    if count >= 2**50:
        return f"{count / 2**40:.2e} TiB"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count / 2**10:,.0f} KiB"
