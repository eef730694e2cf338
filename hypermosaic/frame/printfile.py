"""The print file: an RGB image written with its resolution, an sRGB profile and bleed.

A print shop reads three things besides the pixels: the resolution (TIFF XResolution,
YResolution and ResolutionUnit = inch; PNG pHYs in pixels per metre), the colour space (an
embedded ICC profile: libvips' built-in sRGB, never a download) and the bleed, the margin
beyond the trim line that the cutter may eat. The image is one lazy pyvips pipeline written
once, under a temporary name renamed when complete (`hypermosaic.store.atomic_path`), so a
print larger than memory streams through in rows of tiles and a killed write leaves no file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyvips

from hypermosaic.errors import InputError
from hypermosaic.store import atomic_path, disk_full
from hypermosaic.upscale.plan import vips_reason

__all__ = ["PRINT_FORMATS", "add_bleed", "bleed_pixels", "write_print"]

PRINT_FORMATS = {".tif": "tif", ".tiff": "tif", ".png": "png"}
MM_PER_INCH = 25.4
# Past this many uncompressed bytes (LZW can grow noise by half) a classic TIFF's 32-bit
# offsets may overflow: write BigTIFF then, and classic TIFF (every print shop's) below it.
_BIGTIFF_BYTES = 2 * 2**30
_TILE = 256


def bleed_pixels(bleed_mm: float, dpi: float) -> int:
    """The bleed in whole pixels per side: ``round(bleed_mm / 25.4 * dpi)``."""
    return round(bleed_mm / MM_PER_INCH * dpi)


def add_bleed(image: pyvips.Image, pixels: int) -> pyvips.Image:
    """``image`` with ``pixels`` more on each side, mirrored from its edges (lazily).

    Mirrored rather than a copied edge pixel or a flat colour: a print shop expects the
    picture to continue past the trim, and a cut a little off the line then shows texture
    that belongs to the picture instead of streaks or a border. The trim line itself stays
    exactly where the image's edge was. The mirror reads rows near the edges twice, so the
    source must allow that (an array, a lazy pipeline, a random-access file): a source
    opened with ``access="sequential"`` fails with an out-of-order read.
    """
    if pixels == 0:
        return image
    return image.embed(pixels, pixels, image.width + 2 * pixels, image.height + 2 * pixels,
                       extend="mirror")


def _as_vips(image: pyvips.Image | np.ndarray) -> pyvips.Image:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"print image: need an HxWx3 uint8 array, got "
                             f"{image.dtype} of shape {image.shape}")
        return pyvips.Image.new_from_array(np.ascontiguousarray(image))
    if image.bands != 3 or image.format != "uchar":
        raise InputError(f"print image: need 3 bands of uchar, got {image.bands} of "
                         f"{image.format}")
    return image


def _check(path: Path, dpi: float, bleed_mm: float) -> str:
    fmt = PRINT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: a print file is .tif, .tiff or .png, not "
                         f"{path.suffix or 'no suffix'!r}")
    if not (math.isfinite(dpi) and dpi > 0):
        raise InputError(f"dpi: must be a positive number, got {dpi}")
    if not (math.isfinite(bleed_mm) and bleed_mm >= 0):
        raise InputError(f"bleed: must be zero or more millimetres, got {bleed_mm}")
    return fmt


def _save(image: pyvips.Image, tmp: Path, fmt: str) -> None:
    if fmt == "png":
        image.pngsave(str(tmp))
        return
    # LZW with a horizontal predictor: lossless, and read by every RIP and editor.
    image.tiffsave(str(tmp), tile=True, tile_width=_TILE, tile_height=_TILE,
                   bigtiff=image.width * image.height * 3 > _BIGTIFF_BYTES,
                   compression="lzw", predictor="horizontal", resunit="inch")


def write_print(image: pyvips.Image | np.ndarray, path: Path, dpi: float,
                bleed_mm: float = 0.0) -> Path:
    """Write ``image`` (8-bit sRGB) to ``path`` (.tif or .png) as a print file; returns it.

    The file carries ``dpi`` and an embedded sRGB ICC profile; ``bleed_mm`` adds
    `bleed_pixels` mirrored pixels per side (`add_bleed`). A TIFF is tiled (256 x 256,
    LZW), BigTIFF when it may pass 4 GiB; a pyvips image is written without being loaded, so
    memory stays flat whatever its size. Raises `InputError` for a bad suffix, ``dpi``,
    ``bleed_mm`` or image, a full disk or a failed write; nothing is left at ``path`` then.
    """
    # 1. Check the arguments before any work.
    fmt = _check(path, dpi, bleed_mm)
    source = _as_vips(image)
    # 2. The lazy pipeline: bleed, then resolution (libvips counts pixels per mm) and profile.
    ppmm = dpi / MM_PER_INCH
    out = add_bleed(source, bleed_pixels(bleed_mm, dpi))
    out = out.copy(interpretation="srgb", xres=ppmm, yres=ppmm)
    out.set_type(pyvips.GValue.blob_type, "icc-profile-data", pyvips.Image.profile_load("srgb"))
    # 3. One write, under a temporary name renamed into place when complete.
    try:
        with atomic_path(path) as tmp:
            _save(out, tmp, fmt)
    except pyvips.Error as exc:
        full = disk_full(exc, path.parent)
        if full is not None:
            raise full from None
        raise InputError(f"{path}: cannot write the print ({vips_reason(exc)})") from None
    return path
