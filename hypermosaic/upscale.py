"""Upscale image files larger than memory, one or many, with Real-ESRGAN.

An input is opened lazily by pyvips and read top to bottom, a few rows at a time. Its rows go
through the tiled, feathered upscaler (`hypermosaic.pipelines.tiled_upscale`), whose finished
output bands are encoded on the fly as an uncompressed PNG stream; pyvips reads that stream as
its source and writes the final file (tiled BigTIFF, PNG, JPEG or DeepZoom) in one pass. Peak
memory is one band of output rows (tile height x output width) plus one tile's activations,
whatever the image height.

Outputs are written under a temporary name and renamed when complete, so an existing output
is a finished one: a re-run skips it. Several images run as tasks on the Dask pool, the model
loaded once per worker by `UpscalerPlugin`; workers report tiles as events for the progress
bar. torch is imported only when work starts.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyvips
from distributed import WorkerPlugin, get_worker

from hypermosaic.errors import InputError

if TYPE_CHECKING:
    from distributed import Worker

    from hypermosaic.pipelines.esrgan import Upscaler

__all__ = [
    "INPUT_SUFFIXES",
    "OUTPUT_FORMATS",
    "MAX_INPUT_PIXELS",
    "UpscaleJob",
    "plan_jobs",
    "count_tiles",
    "upscale_file",
    "upscale_files",
    "UpscalerPlugin",
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
MAX_INPUT_PIXELS = 1 << 32
# libvips refuses image sides above VIPS_MAX_COORD (10,000,000 before 8.17); libjpeg stops at
# 65,500. Checked when planning, so that no upscale runs only to fail when written.
_VIPS_MAX_SIDE = 10_000_000
_MAX_SIDE = {"jpg": 65_500, "png": _VIPS_MAX_SIDE, "tif": _VIPS_MAX_SIDE, "dzi": _VIPS_MAX_SIDE}
_FETCH_ROWS = 64
_TILE_TOPIC = "hypermosaic-upscale-tiles"
_EVENT_GRACE_S = 5.0


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


def _reason(exc: pyvips.Error) -> str:
    """The last line of a libvips error: the loader's own words."""
    lines = str(exc).strip().splitlines()
    return lines[-1].strip() if lines else "unknown"


def _open(path: Path) -> pyvips.Image:
    """Open lazily for one top-to-bottom pass; decoding errors fail instead of greying out."""
    try:
        return pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
    except pyvips.Error as exc:
        raise InputError(f"{path}: not a readable image ({_reason(exc)})") from None


def _as_rgb(path: Path, image: pyvips.Image) -> pyvips.Image:
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
        raise InputError(f"{path}: cannot convert to RGB ({_reason(exc)})") from None


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

    `out` is the output file when there is one input file and `out` ends in an image suffix
    (.tif, .png, .jpg, .dzi); otherwise a folder receiving `<stem>.<fmt>` per input. `scale`
    defaults to the model's own and may not exceed it. Raises `InputError` for an unknown
    model, unreadable inputs, absurd sizes, outputs a format cannot hold, and an output that
    is its own input.
    """
    from hypermosaic.pipelines.esrgan import model_scale

    native = model_scale(model)
    scale = native if scale is None else scale
    if not 0 < scale <= native:
        raise InputError(f"--scale {scale}: must be above 0 and at most the model's {native}")
    sources = _expand(inputs)
    out = Path(out)
    single = len(sources) == 1 and Path(inputs[0]).is_file()
    if single and out.suffix.lower() in OUTPUT_FORMATS:
        targets = [out]
        _check_folder(out.parent, "--out")
    elif out.suffix.lower() in OUTPUT_FORMATS:
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
        image = _as_rgb(src, _open(src))
        width, height = image.width, image.height
        if width * height > MAX_INPUT_PIXELS:
            raise InputError(
                f"{src}: header claims {width}x{height} pixels, more than the "
                f"{MAX_INPUT_PIXELS:,} allowed"
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
    from hypermosaic.pipelines.tiled_upscale import tile_windows

    overlap = min(overlap, tile - 1)
    return len(tile_windows(job.height, tile, overlap)) * len(
        tile_windows(job.width, tile, overlap)
    )


class _RowReader:
    """`read(top, bottom)` over a sequential pyvips image: fetches only new rows, in small
    requests (pyvips buffers in proportion to a request), and keeps the rows still needed."""

    def __init__(self, path: Path, image: pyvips.Image) -> None:
        self.path = path
        self.region = pyvips.Region.new(image)
        self.width = image.width
        self.top = 0
        self.rows = np.zeros((0, image.width, 3), np.uint8)

    def __call__(self, top: int, bottom: int) -> np.ndarray:
        end = self.top + len(self.rows)
        chunks = [self.rows[top - self.top :]]
        for y in range(end, bottom, _FETCH_ROWS):
            n = min(_FETCH_ROWS, bottom - y)
            try:
                data = self.region.fetch(0, y, self.width, n)
            except pyvips.Error as exc:
                raise InputError(f"{self.path}: truncated or corrupt ({_reason(exc)})") from None
            chunks.append(np.frombuffer(data, np.uint8).reshape(n, self.width, 3))
        self.rows = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        self.top = top
        return self.rows[: bottom - top]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


class _PngStream:
    """Bands of RGB rows as an uncompressed PNG byte stream that pyvips can load from.

    An exception raised while producing bands is kept in `error` (pyvips sees a short file)
    so that the caller can re-raise it.
    """

    def __init__(self, bands: Iterator[np.ndarray], width: int, height: int) -> None:
        self.error: BaseException | None = None
        self._parts = self._encode(bands, width, height)
        self._buffer = memoryview(b"")
        self._pos = 0

    @staticmethod
    def _encode(bands: Iterator[np.ndarray], width: int, height: int) -> Iterator[bytes]:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        yield b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
        deflate = zlib.compressobj(0)
        for band in bands:
            for start in range(0, len(band), _FETCH_ROWS):
                rows = band[start : start + _FETCH_ROWS]
                scanlines = np.zeros((len(rows), width * 3 + 1), np.uint8)
                scanlines[:, 1:] = rows.reshape(len(rows), -1)
                yield _png_chunk(b"IDAT", deflate.compress(scanlines.tobytes()))
        yield _png_chunk(b"IDAT", deflate.flush()) + _png_chunk(b"IEND", b"")

    def _read(self, size: int) -> memoryview | bytes:
        if self.error is not None:
            return b""
        try:
            while self._pos >= len(self._buffer):
                self._buffer, self._pos = memoryview(next(self._parts)), 0
        except StopIteration:
            return b""
        except BaseException as exc:  # handed back to the caller by upscale_file
            self.error = exc
            return b""
        part = self._buffer[self._pos : self._pos + size]
        self._pos += len(part)
        return part

    def image(self) -> pyvips.Image:
        source = pyvips.SourceCustom()
        source.on_read(self._read)
        return pyvips.Image.new_from_source(source, "", access="sequential")


def _save(image: pyvips.Image, path: Path) -> None:
    fmt = OUTPUT_FORMATS[path.suffix.lower()]
    if fmt == "tif":
        image.tiffsave(
            str(path),
            tile=True,
            tile_width=256,
            tile_height=256,
            bigtiff=True,
            compression="deflate",
            predictor="horizontal",
        )
    elif fmt == "png":
        image.pngsave(str(path))
    elif fmt == "jpg":
        image.jpegsave(str(path), Q=95)
    else:
        image.dzsave(str(path.with_suffix("")))


def _outputs(path: Path) -> list[Path]:
    """The paths a save to `path` creates: DeepZoom adds its `_files` folder (listed first,
    so that renaming in order makes the `.dzi` appear last)."""
    if path.suffix.lower() == ".dzi":
        return [path.with_name(path.stem + "_files"), path]
    return [path]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def upscale_file(
    job: UpscaleJob,
    upscaler: Upscaler,
    tile: int | None = None,
    overlap: int | None = None,
    on_tile: Callable[[int], None] | None = None,
) -> Path:
    """Upscale one file to `job.dst`, streaming: memory does not grow with the image height.

    A `job.scale` below the model's own is reached by a Lanczos reduction of the model
    output. `on_tile(1)` follows each window. Raises `InputError` if the input turns out
    truncated or corrupt; nothing is left at `job.dst` then.
    """
    from hypermosaic.pipelines.tiled_upscale import DEFAULT_OVERLAP, upscale_bands

    # 1. Open the input lazily and set up the row reader.
    source = _as_rgb(job.src, _open(job.src))
    reader = _RowReader(job.src, source)
    s = upscaler.scale
    bands = upscale_bands(
        reader,
        job.height,
        job.width,
        upscaler,
        tile,
        DEFAULT_OVERLAP if overlap is None else overlap,
        on_tile=on_tile,
    )
    stream = _PngStream(bands, job.width * s, job.height * s)
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.dst.with_name(f".{job.dst.stem}.tmp-{os.getpid()}{job.dst.suffix}")
    try:
        try:
            # 2. Chain the upscaled stream into pyvips, reduced if a smaller scale was asked
            # for (loading the stream's header already pulls rows, so reading can fail here).
            image = stream.image()
            if job.scale != s:
                image = image.resize(job.scale / s, kernel="lanczos3")
            # 3. Write under a temporary name, then rename into place.
            _save(image, tmp)
        except pyvips.Error as exc:
            if stream.error is not None:
                raise stream.error from None
            raise InputError(f"{job.dst}: cannot write ({_reason(exc)})") from None
        if stream.error is not None:
            raise stream.error
        for done, final in zip(_outputs(tmp), _outputs(job.dst), strict=True):
            _remove(final)
            os.replace(done, final)
    finally:
        for leftover in _outputs(tmp):
            _remove(leftover)
    return job.dst


class UpscalerPlugin(WorkerPlugin):
    """Loads the upscaler once per Dask worker, frees it on teardown; tasks look it up by
    `name`, which is derived from the model so that registering twice is harmless."""

    def __init__(self, model: str, tile: int | None = None, dtype: str = "auto") -> None:
        self.model = model
        self.tile = tile
        self.dtype = dtype
        self.name = f"hypermosaic-upscaler-{model}-{tile}-{dtype}"
        self.upscaler: Upscaler | None = None

    def setup(self, worker: Worker) -> None:
        from hypermosaic.pipelines.esrgan import load_upscaler

        self.upscaler = load_upscaler(self.model, tile=self.tile, dtype=self.dtype)

    def teardown(self, worker: Worker) -> None:
        self.upscaler = None


def _upscale_task(job: UpscaleJob, plugin: str, tile: int, overlap: int | None) -> str:
    """Dask task: upscale one file with this worker's model; tiles are reported as events."""
    worker = get_worker()
    upscaler = worker.plugins[plugin].upscaler

    def on_tile(n: int) -> None:
        worker.log_event(_TILE_TOPIC, n)

    return str(upscale_file(job, upscaler, tile, overlap, on_tile))


def upscale_files(
    jobs: Sequence[UpscaleJob],
    model: str,
    tile: int | None = None,
    overlap: int | None = None,
    workers: int | None = None,
    scheduler_address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    dtype: str = "auto",
) -> list[Path]:
    """Upscale every job whose output is missing; return the outputs written.

    One pending image with no pool asked for runs in this process; otherwise each image is a
    task on the Dask pool (`hypermosaic.executor.open_client`), the model loaded once per
    worker. `progress(done, total)` counts tiles, from the workers' events. ``dtype`` is the
    compute dtype (`hypermosaic.pipelines.esrgan.resolve_dtype`).
    """
    from hypermosaic.pipelines.esrgan import check_dtype, default_tile
    from hypermosaic.pipelines.tiled_upscale import DEFAULT_OVERLAP

    # 1. Settle what is left to do and how many tiles that is.
    check_dtype(dtype)
    pending = [job for job in jobs if not job.done]
    if not pending:
        return []
    tile = tile or default_tile(model)
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    total = sum(count_tiles(job, tile, overlap) for job in pending)
    done = 0

    def on_tile(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    on_tile(0)
    # 2. A single image runs here, with no cluster to start.
    if len(pending) == 1 and workers is None and scheduler_address is None:
        from hypermosaic.pipelines.esrgan import load_upscaler

        upscaler = load_upscaler(model, tile=tile, dtype=dtype)
        return [upscale_file(pending[0], upscaler, tile, overlap, on_tile)]
    # 3. Several: one task per image on the pool, tiles reported as worker events.
    from dask.base import tokenize

    from hypermosaic.executor import open_client

    plugin = UpscalerPlugin(model, tile, dtype)
    with open_client(workers, scheduler_address, gpu=True) as client:
        client.register_plugin(plugin)
        client.subscribe_topic(_TILE_TOPIC, lambda event: on_tile(event[1]))
        futures = [
            client.submit(
                _upscale_task,
                job,
                plugin.name,
                tile,
                overlap,
                key=f"upscale-{job.dst.name}-{tokenize(job, model, tile, overlap, dtype)}",
            )
            for job in pending
        ]
        written = client.gather(futures)
        # Events may trail the results: give them a moment to land before settling.
        deadline = time.monotonic() + _EVENT_GRACE_S
        while done < total and time.monotonic() < deadline:
            time.sleep(0.02)
        client.unsubscribe_topic(_TILE_TOPIC)
    if progress is not None and done < total:  # lost events (or results known already)
        progress(total, total)
    return [Path(p) for p in written]
