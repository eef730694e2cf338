"""The files of a finished canvas: the image (PNG, or tiled BigTIFF when large), its ESRGAN
enlargement, and a DeepZoom pyramid; every file written atomically, so a failed run leaves
earlier outputs intact. libvips reports a full disk in its own error; it is raised here as the
`OSError` (``ENOSPC``) it is, so callers can tell it from other failures."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pyvips

from hypermosaic.canvas.jobs import CanvasJob
from hypermosaic.publish import staged_deepzoom
from hypermosaic.store import atomic_path, disk_full

__all__ = ["PNG_MAX_PIXELS", "write_deepzoom", "write_image", "write_outputs"]

PNG_MAX_PIXELS = 2**28  # 16384 x 16384; beyond, a tiled BigTIFF that viewers read lazily


def write_outputs(job: CanvasJob, image: np.ndarray, upscaled: np.ndarray | None
                  ) -> dict[str, Path]:
    """Write a canvas (and its enlargement) as its config asks; returns the files by kind.

    A full disk raises `OSError` with ``errno.ENOSPC`` (or ``EDQUOT``), whichever library
    wrote."""
    try:
        return _write_outputs(job, image, upscaled)
    except pyvips.Error as exc:  # libvips says "No space left on device" in its words only
        if disk_full(exc, job.config.out) is None:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc


def _write_outputs(job: CanvasJob, image: np.ndarray, upscaled: np.ndarray | None
                   ) -> dict[str, Path]:
    config = job.config
    outputs = {"image": write_image(image, config.out / job.stem, config.format)}
    final = image
    if upscaled is not None:
        outputs["upscaled"] = write_image(
            upscaled, config.out / f"{job.stem}-x{config.upscale}", config.format
        )
        final = upscaled
    if config.deepzoom:
        outputs["deepzoom"] = write_deepzoom(final, config.out, job.stem)
    return outputs


def write_image(image: np.ndarray, stem: Path, fmt: str = "auto") -> Path:
    """Write ``(H, W, 3)`` uint8 as ``stem.png``, or as a tiled BigTIFF ``stem.tif`` when
    ``fmt`` is ``tiff`` or (``auto``) the image has more than `PNG_MAX_PIXELS`."""
    height, width = image.shape[:2]
    tiff = fmt == "tiff" or (fmt == "auto" and height * width > PNG_MAX_PIXELS)
    path = stem.with_name(stem.name + (".tif" if tiff else ".png"))
    vips = pyvips.Image.new_from_array(np.ascontiguousarray(image))
    with atomic_path(path) as tmp:
        if tiff:
            vips.tiffsave(str(tmp), tile=True, tile_width=256, tile_height=256, bigtiff=True,
                          compression="deflate")
        else:
            vips.pngsave(str(tmp))
    return path


def write_deepzoom(image: np.ndarray, folder: Path, stem: str) -> Path:
    """Write ``stem.dzi`` and ``stem_files/`` (JPEG tiles) in ``folder``, replacing old ones."""
    dzi = folder / f"{stem}.dzi"
    with staged_deepzoom(dzi) as staging:
        pyvips.Image.new_from_array(np.ascontiguousarray(image)).dzsave(
            str(staging / stem), tile_size=256, overlap=0, suffix=".jpg[Q=90]", layout="dz"
        )
    return dzi
