"""Running an upscale's detail pass: ESRGAN, then the refine band by band, resumable.

For each output, a hidden work folder beside it (``.<name>.refine/``, `work_folder`) holds
what a killed run must not do again:

1. ``enlarged.tif``: the Real-ESRGAN enlargement (`upscale_file`, streamed, a tiled BigTIFF
   so that a band's rows are read without the rest);
2. per finished band ``k``, written atomically, ``band-k.pixels.npy`` (its decoded rows) and
   ``band-k.latents.npy`` (its final latents over the rows the next band holds);
3. ``work.json``: the settings and input these were made from; a folder made from others is
   cleared first.

The output is written in one pyvips pass whose rows are pulled band by band (`bands`): a band
on disk is read back, any other is refined (through `hypermosaic.registry.refine_band`) and
saved before its rows are handed on. Memory holds one band (window height x image width),
whatever the image height. The same settings give the same bytes whether or not the run was
interrupted: a band depends only on the enlarged image, the plan and the previous band's
saved latents. When the output and its record are in place the work folder is removed.

Memory stays flat only if freed blocks are reused: glibc's malloc raises its mmap threshold
(up to 32 MiB) each time a large block is freed, after which the bands' and the models'
large transient buffers (allocated and freed in libvips' threads, which pull the rows) come
from heap arenas that fragment and are not given back, so the peak grew with the height
(693 to 807 MiB from a 256 to a 1536 px high input, 256 wide, x2, tiny model).
`_pin_mmap_threshold` fixes the threshold at glibc's default for the pass (567 to 570 MiB).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from hypermosaic import registry
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.store import atomic_path
from hypermosaic.upscale.plan import UpscaleJob
from hypermosaic.upscale.record import Settings, input_identity, write_record
from hypermosaic.upscale.refine import RefineConfig
from hypermosaic.upscale.stream import upscale_file, write_streamed
from hypermosaic.upscale.strips import Band, RefinePlan, plan_refine

__all__ = ["WORK_VERSION", "band_rows", "refine_jobs", "work_folder"]

WORK_VERSION = 1
ENLARGED = "enlarged.tif"
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD = 128 * 1024  # glibc's default


def work_folder(dst: Path) -> Path:
    """The hidden work folder of an output's detail pass: ``.<name>.refine``."""
    return dst.with_name(f".{dst.name}.refine")


def _prepare(work: Path, identity: dict[str, Any]) -> None:
    """Keep ``work`` only if it was made from ``identity``; sweep a killed run's temporaries."""
    stamp = work / "work.json"
    try:
        kept = json.loads(stamp.read_text(encoding="utf-8")) == identity
    except (OSError, ValueError):
        kept = False
    if not kept:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        stamp.write_text(json.dumps(identity), encoding="utf-8")
    for leftover in work.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def _read_rows(image: pyvips.Image, top: int, bottom: int, width: int) -> np.ndarray:
    """Pixel rows ``top..bottom`` of ``image``, its last row and column repeated to reach
    ``bottom`` and ``width`` (the padding to a multiple of the VAE's factor). Read through a
    region, which leaves nothing in libvips' operation cache."""
    rows = min(bottom, image.height) - top
    data = pyvips.Region.new(image).fetch(0, top, image.width, rows)
    pixels = np.frombuffer(data, np.uint8).reshape(rows, image.width, 3)
    return np.pad(pixels, ((0, bottom - top - rows), (0, width - image.width), (0, 0)),
                  mode="edge")


def _pin_mmap_threshold() -> None:
    """Fix glibc's mmap threshold at its default, so that blocks of 128 KiB and more are
    mapped and unmapped rather than left to fragment the heap (see the module); setting it
    turns glibc's raising of it off, for this process. Nothing is done on other platforms."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        except (OSError, AttributeError):  # not glibc
            pass


def band_rows(plan: RefinePlan, work: Path, refined: Callable[[Band, np.ndarray | None],
              tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
    """The output's rows, band by band: each band read from ``work`` when it is there, else
    made by ``refined(band, previous latents)`` (final latents, pixels) and saved first."""
    f, width = plan.f, plan.width
    previous: np.ndarray | None = None  # the previous band's pixels
    for band in plan.bands:
        pixels_file = work / f"band-{band.index:05d}.pixels.npy"
        if not pixels_file.exists():
            held = (np.load(work / f"band-{band.index - 1:05d}.latents.npy")
                    if band.index else None)
            latents, pixels = refined(band, held)
            following = plan.bands[band.index + 1].top if band.index + 1 < len(
                plan.bands) else band.bottom
            _save(work / f"band-{band.index:05d}.latents.npy",
                  np.ascontiguousarray(latents[:, following - band.top :]))
            _save(pixels_file, np.ascontiguousarray(pixels[:, :width]))
        pixels = np.load(pixels_file)
        start, end = band.emit
        out = pixels[start - band.top * f : end - band.top * f].copy()
        if previous is not None and band.fade:
            a = (np.arange(1, band.fade + 1, dtype=np.float32) / (band.fade + 1))[:, None, None]
            before = previous[start - plan.bands[band.index - 1].top * f :][: band.fade]
            mixed = a * out[: band.fade] + (1 - a) * before
            out[: band.fade] = np.floor(mixed + 0.5).astype(np.uint8)
        previous = pixels
        yield out


def refine_jobs(pending: list[UpscaleJob], model: str, settings: Settings,
                refine: RefineConfig, *, device: str,
                progress: ProgressCallback | None) -> list[Path]:
    """Upscale and refine each job in this process, one after another; record each output
    (``settings`` hold the pass's fingerprint) and remove its work folder; return the outputs
    written."""
    _pin_mmap_threshold()
    upscaler = registry.load_upscaler(model, tile=settings.tile, dtype=settings.dtype,
                                      device=device)
    pipe = registry.load_canvas_pipeline(refine.model, device, settings.dtype)
    controlnet = None if refine.controlnet is None else registry.load_controlnet(
        refine.controlnet.model, pipe.device, pipe.dtype, "refine.controlnet.model")
    f, native = registry.refine_geometry(pipe)
    written = []
    for job in pending:
        # 1. The work folder, kept from a killed run of the same settings and input.
        source = input_identity(job.src)
        work = work_folder(job.dst)
        _prepare(work, {"version": WORK_VERSION, "settings": asdict(settings),
                        "input": source["sha256"]})
        # 2. The ESRGAN enlargement, once.
        enlarged = work / ENLARGED
        if not enlarged.exists():
            step = replace(job, dst=enlarged)
            done = 0

            def on_tile(n: int) -> None:
                nonlocal done
                done += n
                report(progress, "tiles", done, None)

            upscale_file(step, upscaler, settings.tile, settings.overlap, on_tile)
        # 3. The detail pass, band by band, streamed into the output.
        image = pyvips.Image.new_from_file(str(enlarged))
        plan = plan_refine(image.height, image.width, f, native, refine)
        _refine_one(job, image, plan, work, pipe, controlnet, refine, progress)
        # 4. The record; the work folder is no longer needed.
        write_record(job.dst, replace(settings, scale=float(job.scale)), source)
        shutil.rmtree(work, ignore_errors=True)
        written.append(job.dst)
    return written


def _refine_one(job: UpscaleJob, image: pyvips.Image, plan: RefinePlan, work: Path, pipe: Any,
                controlnet: Any, refine: RefineConfig, progress: ProgressCallback | None
                ) -> None:
    """Write ``job.dst`` from the refined bands of ``image`` (with ``refine.controlnet``'s
    model, loaded: ``controlnet``); Ctrl-C stops within a step."""
    stop = threading.Event()
    total = plan.windows * _steps(refine)
    done = 0

    def on_step(n: int) -> None:
        nonlocal done
        if stop.is_set():
            raise KeyboardInterrupt
        done += n
        report(progress, "windows", done, total)

    def refined(band: Band, held: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        f = plan.f
        pixels = _read_rows(image, band.top * f, band.bottom * f, plan.latent_size[1] * f)
        return registry.refine_band(pipe, pixels, band, plan, refine, held, on_step,
                                    controlnet)

    report(progress, "windows", 0, total)
    write_streamed(band_rows(plan, work, refined), plan.width, plan.height, job.dst, stop)


def _steps(refine: RefineConfig) -> int:
    """Denoising steps a window runs (the img2img share of ``steps``; PNDM-type schedulers
    run more timesteps, which the bar then overshoots)."""
    return max(1, min(int(refine.steps * refine.strength), refine.steps))
