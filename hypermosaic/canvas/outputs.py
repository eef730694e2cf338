"""The files of a finished canvas: the image (PNG, or tiled BigTIFF when large), its ESRGAN
enlargement, and a DeepZoom pyramid; every file written atomically, so a failed run leaves
earlier outputs intact. A 360° panorama (`hypermosaic.canvas.wrap.is_photo_sphere`) carries
the GPano XMP that photo-sphere viewers read, and gets a viewer page ``<stem>.html``. libvips
reports a full disk in its own error; it is raised here as the `OSError` (``ENOSPC``) it is,
so callers can tell it from other failures."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pyvips

from hypermosaic.canvas.jobs import CanvasJob
from hypermosaic.canvas.wrap import gpano_xmp, is_photo_sphere
from hypermosaic.publish import staged_deepzoom, write_panorama_viewer
from hypermosaic.store import atomic_path, disk_full

__all__ = ["PANORAMA_MAX_WIDTH", "PNG_MAX_PIXELS", "write_deepzoom", "write_image",
           "write_outputs"]

PNG_MAX_PIXELS = 2**28  # 16384 x 16384; beyond, a tiled BigTIFF that viewers read lazily
PANORAMA_MAX_WIDTH = 8192  # the widest panorama the viewer page shows (two WebGL textures)


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
    sphere = is_photo_sphere(job.plan.wrap, *image.shape[:2])
    outputs = {"image": write_image(image, config.out / job.stem, config.format, sphere)}
    final = image
    if upscaled is not None:
        outputs["upscaled"] = write_image(
            upscaled, config.out / f"{job.stem}-x{config.upscale}", config.format, sphere
        )
        final = upscaled
    if config.deepzoom:
        outputs["deepzoom"] = write_deepzoom(final, config.out, job.stem)
    # The viewer page shows the largest PNG that fits the viewer (the enlargement, if any).
    shown = [outputs[kind] for kind, pixels in (("upscaled", upscaled), ("image", image))
             if pixels is not None and pixels.shape[1] <= PANORAMA_MAX_WIDTH
             and outputs[kind].suffix == ".png"]
    if sphere and shown:
        outputs["panorama"] = write_panorama_viewer(config.out, shown[0].name,
                                                    f"{job.stem}.html")
    return outputs


def write_image(image: np.ndarray, stem: Path, fmt: str = "auto", sphere: bool = False
                ) -> Path:
    """Write ``(H, W, 3)`` uint8 as ``stem.png``, or as a tiled BigTIFF ``stem.tif`` when
    ``fmt`` is ``tiff`` or (``auto``) the image has more than `PNG_MAX_PIXELS`; a ``sphere``
    (an equirectangular 360° panorama) with its GPano XMP."""
    height, width = image.shape[:2]
    tiff = fmt == "tiff" or (fmt == "auto" and height * width > PNG_MAX_PIXELS)
    path = stem.with_name(stem.name + (".tif" if tiff else ".png"))
    vips = pyvips.Image.new_from_array(np.ascontiguousarray(image))
    if sphere:
        vips = vips.copy()
        vips.set_type(pyvips.GValue.blob_type, "xmp-data", gpano_xmp(width, height))
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
