"""Streaming one upscale: rows in, tiled ESRGAN, an uncompressed PNG stream into pyvips.

An input is read top to bottom, a few rows at a time (`_RowReader`). Its rows go through the
tiled, feathered upscaler (`hypermosaic.registry.upscale_bands`), whose finished output bands
are encoded on the fly as an uncompressed PNG stream (`_PngStream`); pyvips reads that stream
as its source and writes the final file (tiled BigTIFF, PNG, JPEG or DeepZoom) in one pass.
Peak memory is one band of output rows (tile height x output width) plus one tile's
activations, whatever the image height. The output is written under a temporary name and
renamed when complete, so an existing output is a finished one.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyvips

from hypermosaic import png, registry
from hypermosaic.errors import InputError
from hypermosaic.publish import staged_deepzoom
from hypermosaic.registry import Upscaler
from hypermosaic.store import atomic_path, disk_full
from hypermosaic.tiling import DEFAULT_OVERLAP
from hypermosaic.upscale.plan import (
    OUTPUT_FORMATS,
    UpscaleJob,
    as_rgb,
    open_lazily,
    vips_reason,
)

__all__ = ["upscale_file", "write_streamed"]

_FETCH_ROWS = 64


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
                reason = vips_reason(exc)
                raise InputError(f"{self.path}: truncated or corrupt ({reason})") from None
            chunks.append(np.frombuffer(data, np.uint8).reshape(n, self.width, 3))
        self.rows = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        self.top = top
        return self.rows[: bottom - top]


class _PngStream:
    """Bands of RGB rows as an uncompressed PNG byte stream that pyvips can load from.

    An exception raised while producing bands is kept in `error` (pyvips sees a short file)
    so that the caller can re-raise it; so is a `KeyboardInterrupt` once ``stop`` is set.
    """

    def __init__(self, bands: Iterator[np.ndarray], width: int, height: int,
                 stop: threading.Event | None = None) -> None:
        self.error: BaseException | None = None
        self.stop = stop or threading.Event()
        self._parts = self._encode(bands, width, height)
        self._buffer = memoryview(b"")
        self._pos = 0

    @staticmethod
    def _encode(bands: Iterator[np.ndarray], width: int, height: int) -> Iterator[bytes]:
        yield png.SIGNATURE + png.chunk(b"IHDR", png.rgb8_header(width, height))
        deflate = zlib.compressobj(0)
        for band in bands:
            for start in range(0, len(band), _FETCH_ROWS):
                rows = band[start : start + _FETCH_ROWS]
                scanlines = np.zeros((len(rows), width * 3 + 1), np.uint8)
                scanlines[:, 1:] = rows.reshape(len(rows), -1)
                yield png.chunk(b"IDAT", deflate.compress(scanlines.tobytes()))
        yield png.chunk(b"IDAT", deflate.flush()) + png.chunk(b"IEND", b"")

    def _read(self, size: int) -> memoryview | bytes:
        if self.error is None and self.stop.is_set():
            self.error = KeyboardInterrupt()
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


def _save(image: pyvips.Image, path: Path, fmt: str) -> None:
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
    else:
        image.jpegsave(str(path), Q=95)


@contextmanager
def _output(dst: Path) -> Iterator[Callable[[pyvips.Image], None]]:
    """A function that writes an image to ``dst``'s format, into a temporary name (or a
    staging folder for DeepZoom) that replaces ``dst`` once the block completes."""
    fmt = OUTPUT_FORMATS[dst.suffix.lower()]
    if fmt == "dzi":
        with staged_deepzoom(dst) as staging:
            yield lambda image: image.dzsave(str(staging / dst.stem))
        return
    with atomic_path(dst) as tmp:
        yield lambda image: _save(image, tmp, fmt)


def _interruptible(work: Callable[[], None], stop: threading.Event) -> None:
    """Run ``work`` (a libvips write pulling tiles through our callbacks) so that Ctrl-C
    stops it cleanly. In the main thread the work runs in a helper thread while this one
    waits in Python: Ctrl-C then lands here, not inside a libvips callback, where cffi would
    print the `KeyboardInterrupt` and ignore it. ``stop`` is set, the work ends at its next
    tile or read, and the interrupt is raised again. Elsewhere (a Dask task) the work runs
    as it is."""
    if threading.current_thread() is not threading.main_thread():
        work()
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    helper = threading.Thread(target=run, name="hypermosaic-upscale", daemon=True)
    helper.start()
    try:
        while helper.is_alive():
            helper.join(0.1)
    except KeyboardInterrupt:
        stop.set()
        helper.join()
        raise
    if failure:
        raise failure[0]


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
    truncated or corrupt, or the disk fills up, and `KeyboardInterrupt` on Ctrl-C (within a
    tile); nothing is left at `job.dst` then, nor a temporary file.
    """
    # 1. Open the input lazily and set up the row reader; Ctrl-C stops at the next tile.
    source = as_rgb(job.src, open_lazily(job.src))
    reader = _RowReader(job.src, source)
    stop = threading.Event()

    def tile_done(n: int) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        if on_tile is not None:
            on_tile(n)

    s = upscaler.scale
    bands = registry.upscale_bands(reader, job.height, job.width, upscaler, tile,
                                   DEFAULT_OVERLAP if overlap is None else overlap,
                                   on_tile=tile_done)
    write_streamed(bands, job.width * s, job.height * s, job.dst, stop,
                   None if job.scale == s else job.scale / s)
    return job.dst


def write_streamed(bands: Iterator[np.ndarray], width: int, height: int, dst: Path,
                   stop: threading.Event, factor: float | None = None) -> None:
    """Write the image whose rows ``bands`` yields, top to bottom, to ``dst`` in one pyvips
    pass (reduced by ``factor`` with Lanczos when given); it appears only when complete.

    An error raised by ``bands`` is raised again here; ``stop`` set (Ctrl-C) ends the write
    with `KeyboardInterrupt`. A full disk or an unwritable file is `InputError`.
    """
    stream = _PngStream(bands, width, height, stop)
    with _output(dst) as write:

        def work() -> None:
            # 1. Chain the stream into pyvips, reduced if asked (loading the stream's header
            # already pulls rows, so producing them can fail here).
            image = stream.image()
            if factor is not None:
                image = image.resize(factor, kernel="lanczos3")
            # 2. Write once; the output appears only when complete.
            write(image)

        try:
            _interruptible(work, stop)
        except pyvips.Error as exc:
            if stream.error is not None:
                raise stream.error from None
            full = disk_full(exc, dst.parent)
            if full is not None:
                raise full from None
            raise InputError(f"{dst}: cannot write ({vips_reason(exc)})") from None
        if stream.error is not None:
            raise stream.error
