"""Planning an upscale: inputs paired with outputs, every size checked, before any work.

An input is opened lazily by pyvips (its header only) so that absurd sizes, unreadable files,
outputs a format cannot hold and an output that would overwrite its input are refused first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyvips

from hypermosaic import registry
from hypermosaic.errors import InputError
from hypermosaic.images import MAX_STREAMED_PIXELS
from hypermosaic.tiling import tile_windows

__all__ = [
    "INPUT_SUFFIXES",
    "NOT_OUTPUT_SUFFIXES",
    "OUTPUT_FORMATS",
    "UpscaleJob",
    "as_rgb",
    "count_tiles",
    "open_lazily",
    "plan_jobs",
    "vips_reason",
]

INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
OUTPUT_FORMATS = {
    ".tif": "tif",
    ".tiff": "tif",
    ".png": "png",
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".dzi": "dzi",
}
# Suffixes of files this command does not write (images in other formats, and a few other
# kinds): an --out ending in one is a file name with an unsupported format, not a folder to
# make. Any other suffix may be part of a folder's name (``scans.2024``, ``out.v2``).
NOT_OUTPUT_SUFFIXES = frozenset((
    ".bmp", ".dib", ".gif", ".webp", ".jxl", ".avif", ".heic", ".heif", ".jp2", ".j2k", ".jpx",
    ".jpf", ".jxr", ".wdp", ".hdp", ".jfif", ".jpe", ".pjpeg", ".apng", ".mng", ".exr", ".hdr",
    ".pfm", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".cur", ".icns", ".svg", ".svgz",
    ".pdf", ".eps", ".ps", ".psd", ".psb", ".xcf", ".kra", ".ora", ".dng", ".raw", ".cr2",
    ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pcx", ".qoi", ".dds", ".ktx", ".ktx2",
    ".fits", ".vips", ".xbm", ".xpm", ".wbmp", ".emf", ".wmf", ".djvu", ".svs", ".ndpi",
    ".mp4", ".mov", ".mkv", ".webm", ".avi", ".zip", ".txt", ".json", ".html",
))
# libvips refuses image sides above VIPS_MAX_COORD (10,000,000 before 8.17); libjpeg stops at
# 65,500. Checked when planning, so that no upscale runs only to fail when written.
_VIPS_MAX_SIDE = 10_000_000
_MAX_SIDE = {"jpg": 65_500, "png": _VIPS_MAX_SIDE, "tif": _VIPS_MAX_SIDE, "dzi": _VIPS_MAX_SIDE}


@dataclass(frozen=True)
class UpscaleJob:
    """One input file, where its upscale goes, the input's size from its header, and the
    output scale (below the model's own, the model output is reduced to it)."""

    src: Path
    dst: Path
    width: int
    height: int
    scale: float

    @property
    def done(self) -> bool:
        """Whether the output exists; outputs appear only once complete."""
        return self.dst.exists()


def vips_reason(exc: pyvips.Error) -> str:
    """The last line of a libvips error: the loader's own words."""
    lines = str(exc).strip().splitlines()
    return lines[-1].strip() if lines else "unknown"


def open_lazily(path: Path) -> pyvips.Image:
    """Open lazily for one top-to-bottom pass; decoding errors fail instead of greying out."""
    try:
        return pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
    except pyvips.Error as exc:
        raise InputError(f"{path}: not a readable image ({vips_reason(exc)})") from None


def as_rgb(path: Path, image: pyvips.Image) -> pyvips.Image:
    """Any input as 3-band 8-bit sRGB; transparency is flattened onto white (after the
    conversion, which scales alpha with the colour, so white is 255 whatever the depth)."""
    try:
        if image.interpretation != "srgb":
            image = image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
        if image.hasalpha():
            image = image.flatten(background=255)
        return image.extract_band(0, n=3) if image.bands > 3 else image
    except pyvips.Error as exc:
        raise InputError(f"{path}: cannot convert to RGB ({vips_reason(exc)})") from None


def _check_folder(path: Path, option: str) -> None:
    """Refuse a path whose nearest existing ancestor (or itself) is a file: no folder can be
    made there."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(
                    f"{option} {path}: {folder} is an existing file, not a folder "
                    f"(an output file ends in {', '.join(OUTPUT_FORMATS)})"
                )
            return


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                raise InputError(f"{item}: no images ({', '.join(INPUT_SUFFIXES)}) in folder")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    return paths


def plan_jobs(
    inputs: Sequence[str | Path],
    out: str | Path,
    model: str,
    scale: float | None = None,
    fmt: str = "tif",
) -> list[UpscaleJob]:
    """Check the model and every input and pair inputs with outputs, before any work starts.

    `out` is the output file when there is one input file and `out` ends in an output suffix
    (`OUTPUT_FORMATS`: .tif, .tiff, .png, .jpg, .jpeg, .dzi); otherwise a folder receiving
    `<stem>.<fmt>` per input (an existing folder is one whatever its name). `scale` defaults
    to the model's own and may not exceed it. Raises `InputError` for an unknown model,
    unreadable inputs, an `out` that names a file of a format not written
    (`NOT_OUTPUT_SUFFIXES`: .bmp, .webp, ...), absurd sizes, outputs a format cannot hold,
    and an output that is its own input.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in NOT_OUTPUT_SUFFIXES and not out.exists():  # (an existing file: see below)
        raise InputError(f"--out {out}: {suffix} is not an output format; an output file ends "
                         f"in {', '.join(OUTPUT_FORMATS)} (any other name is a folder)")
    native = registry.describe_upscaler(model)[0]
    scale = native if scale is None else scale
    if not 0 < scale <= native:
        raise InputError(f"--scale {scale}: must be above 0 and at most the model's {native}")
    sources = _expand(inputs)
    single = len(sources) == 1 and Path(inputs[0]).is_file()
    if out.is_dir():
        suffix = ""  # an existing folder takes the outputs, whatever its name
    if single and suffix in OUTPUT_FORMATS:
        targets = [out]
        _check_folder(out.parent, "--out")
    elif suffix in OUTPUT_FORMATS:
        raise InputError(f"--out {out}: several inputs need an output folder, not a file")
    else:
        if fmt not in set(OUTPUT_FORMATS.values()):
            raise InputError(f"--format {fmt}: not one of tif, png, jpg, dzi")
        _check_folder(out, "--out")
        targets = [out / f"{src.stem}.{fmt}" for src in sources]
    if len(set(targets)) != len(targets):
        raise InputError(f"--out {out}: two inputs share a name, their outputs would collide")
    jobs = []
    for src, dst in zip(sources, targets, strict=True):
        if dst.resolve() == src.resolve():
            raise InputError(f"{dst}: the output would overwrite its input")
        image = as_rgb(src, open_lazily(src))
        width, height = image.width, image.height
        if width * height > MAX_STREAMED_PIXELS:
            raise InputError(
                f"{src}: header claims {width}x{height} pixels, more than the "
                f"{MAX_STREAMED_PIXELS:,} allowed"
            )
        side = round(max(width, height) * scale)
        fmt_name = OUTPUT_FORMATS[dst.suffix.lower()]
        if max(width, height) * native > _VIPS_MAX_SIDE:
            raise InputError(
                f"{src}: upscaled, {max(width, height) * native:,} px a side is more than "
                f"libvips handles ({_VIPS_MAX_SIDE:,})"
            )
        if side > _MAX_SIDE[fmt_name]:
            hint = "; use .tif" if fmt_name == "jpg" else ""
            raise InputError(
                f"{dst}: {side:,} px a side is more than .{fmt_name} holds "
                f"({_MAX_SIDE[fmt_name]:,}){hint}"
            )
        jobs.append(UpscaleJob(src, dst, width, height, scale))
    return jobs


def count_tiles(job: UpscaleJob, tile: int, overlap: int) -> int:
    """How many windows the upscale of `job` runs, for a progress total."""
    overlap = min(overlap, tile - 1)
    return len(tile_windows(job.height, tile, overlap)) * len(
        tile_windows(job.width, tile, overlap)
    )
