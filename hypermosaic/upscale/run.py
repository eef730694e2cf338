"""`hypermosaic upscale`: Real-ESRGAN on image files larger than memory, one or many.

Inputs are planned first (`hypermosaic.upscale.plan`). Then, holding the output folder's lock
(`hypermosaic.store.folder_lock`: one run per folder, and a folder that cannot be written is
refused before any work), the outputs already made with the same settings are skipped
(`hypermosaic.upscale.record`), registry weights used for the first time are converted, and
each remaining output is streamed (`hypermosaic.upscale.stream`): one image in this process,
several as tasks on the Dask pool, the model loaded once per worker into the worker's model
cache. Workers report tiles as events for the progress bar. Outputs appear only when complete,
each followed by its record, so a re-run resumes where a run stopped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from dask.base import tokenize
from distributed import Client

from hypermosaic import registry
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.executor import WorkerState, open_client, release_states, worker_state
from hypermosaic.identity import ESRGAN_MODELS, check_device, check_dtype
from hypermosaic.progress import EventChannel, ProgressCallback, emitter, report
from hypermosaic.store import disk_full, folder_lock
from hypermosaic.tiling import DEFAULT_OVERLAP
from hypermosaic.upscale.detail import refine_jobs
from hypermosaic.upscale.plan import UpscaleJob, count_tiles, plan_jobs
from hypermosaic.upscale.record import (
    Settings,
    input_identity,
    pending_jobs,
    remove_temporaries,
    write_record,
)
from hypermosaic.upscale.refine import RefineConfig, refine_fingerprint
from hypermosaic.upscale.stream import upscale_file

__all__ = ["UpscaleResult", "upscale_files", "upscale_images"]



@dataclass
class UpscaleResult:
    """The jobs of an upscale, the outputs written, how many were done already (made with
    the same settings), the tiles computed and the seconds the whole run took."""

    jobs: list[UpscaleJob]
    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    tiles: int = 0
    seconds: float = 0.0


def upscale_images(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    model: str = "x4plus",
    scale: float | None = None,
    tile: int | None = None,
    fmt: str = "tif",
    dtype: str = "auto",
    device: str = "auto",
    force: bool = False,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    progress: ProgressCallback | None = None,
    refine: RefineConfig | None = None,
) -> UpscaleResult:
    """Upscale image files (or folders of them) into ``out``: one output file for one input
    file whose ``out`` ends in an output suffix, else a folder of ``<stem>.<fmt>``.

    Everything is checked before any work (`InputError`): options, inputs, outputs, and the
    output folder (writable, and not in use by another run). Outputs recorded as made with the
    same settings are skipped; one made with other settings, or of unknown settings, is
    refused unless ``force``, which upscales it again. ``progress`` counts ``weights`` (a
    registry model converted on first use) and ``tiles``. ``dtype`` is the compute dtype
    (``auto``: float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32),
    ``device`` where the model runs (``auto``: CUDA, else MPS, else CPU). A full disk raises
    `InputError`; Ctrl-C raises `hypermosaic.errors.Interrupted`. Finished outputs are kept
    either way, and no partial file is left.

    ``refine`` adds the detail pass (`hypermosaic.upscale.detail`), in this process, one
    image after another (a pool is refused); its model is located (and its ControlNet checked
    against it) before any work, and a killed run resumes at the band where it stopped.
    """
    started = time.perf_counter()
    _check_options(dtype, device)
    if refine is not None:
        if workers is not None or scheduler_address is not None or client is not None:
            raise InputError("--refine: runs in this process, one image after another; "
                             "leave out --workers and --scheduler-address")
        source = registry.locate_model(refine.model, key="refine.model")
        if refine.controlnet is not None:
            registry.check_controlnet(source, refine.controlnet.model, "refine.controlnet.model")
    jobs = plan_jobs(inputs, out, model, scale, fmt)
    return _upscale(jobs, model, tile=tile, overlap=None, dtype=dtype, device=device,
                    force=force, workers=workers, scheduler_address=scheduler_address,
                    client=client, progress=progress, started=started, refine=refine)


def upscale_files(
    jobs: Sequence[UpscaleJob],
    model: str,
    tile: int | None = None,
    overlap: int | None = None,
    workers: int | None = None,
    scheduler_address: str | None = None,
    progress: ProgressCallback | None = None,
    dtype: str = "auto",
    client: Client | None = None,
    *,
    device: str = "auto",
    force: bool = False,
) -> list[Path]:
    """Upscale every planned job not done yet (as `upscale_images` decides, ``force``
    included); return the outputs written.

    One pending image with no pool asked for runs in this process; otherwise each image is a
    task on the Dask pool (``client``'s, else `hypermosaic.executor.open_client`'s).
    """
    _check_options(dtype, device)
    if not jobs:
        return []
    return _upscale(list(jobs), model, tile=tile, overlap=overlap, dtype=dtype, device=device,
                    force=force, workers=workers, scheduler_address=scheduler_address,
                    client=client, progress=progress, started=time.perf_counter()).written


def _check_options(dtype: str, device: str) -> None:
    """The spelling of ``--dtype`` and ``--device`` (whether the device is there is
    `registry.describe_upscaler`'s to say)."""
    for option, check, value in (("--dtype", check_dtype, dtype),
                                 ("--device", check_device, device)):
        try:
            check(value)
        except ValueError as exc:
            raise InputError(f"{option}: {exc}") from None


def _upscale(jobs: list[UpscaleJob], model: str, *, tile: int | None, overlap: int | None,
             dtype: str, device: str, force: bool, workers: int | None,
             scheduler_address: str | None, client: Client | None,
             progress: ProgressCallback | None, started: float,
             refine: RefineConfig | None = None) -> UpscaleResult:
    """Lock the output folders, then upscale what is not done (numbered steps continue in
    `_locked`). Ctrl-C and a full disk become one-line errors."""
    # 1. Settle the tile for the device (checked to be there) and what decides the pixels.
    default_tile = registry.describe_upscaler(model, device=device)[1]
    tile = tile or default_tile
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    settings = Settings.of(model, jobs[0].scale, tile, overlap, dtype)
    if refine is not None:
        settings = replace(settings, refine=refine_fingerprint(refine))
    folders = sorted({job.dst.parent for job in jobs})
    try:
        with ExitStack() as locks:
            for folder in folders:
                locks.enter_context(folder_lock(folder, "--out"))
            return _locked(jobs, model, settings, device=device, force=force,
                           workers=workers, scheduler_address=scheduler_address,
                           client=client, progress=progress, started=started, refine=refine)
    except KeyboardInterrupt:
        where = " and ".join(str(folder) for folder in folders)
        raise Interrupted(f"finished outputs are kept in {where}; run the same command "
                          "again to resume") from None
    except OSError as exc:
        full = disk_full(exc, folders[0])
        if full is None:
            raise
        raise full from None


def _locked(jobs: list[UpscaleJob], model: str, settings: Settings, *, device: str,
            force: bool, workers: int | None, scheduler_address: str | None,
            client: Client | None, progress: ProgressCallback | None,
            started: float, refine: RefineConfig | None = None) -> UpscaleResult:
    """The upscale proper, in its locked output folders."""
    # 2. Skip outputs made with these settings; refuse (or, with force, redo) the others.
    pending = pending_jobs(jobs, settings, force)
    result = UpscaleResult(jobs, skipped=len(jobs) - len(pending))
    try:
        remove_temporaries(jobs)  # a killed run's: this run holds the folders
        if pending:
            # 3. Registry weights used for the first time: converted now, with a bar.
            if model in ESRGAN_MODELS:
                registry.describe_upscaler(model, device=device,
                                           on_weights=_weights_reporter(model, progress))
            # 4. Upscale, one image here or several on the pool, tiles reported.
            result.tiles = sum(count_tiles(job, settings.tile, settings.overlap)
                               for job in pending)
            if refine is not None:  # 4b. Or upscale and refine, in this process.
                result.written = refine_jobs(pending, model, settings, refine, device=device,
                                             progress=progress)
            else:
                result.written = _run(pending, model, settings, device=device,
                                      workers=workers, scheduler_address=scheduler_address,
                                      client=client, progress=progress, total=result.tiles)
    finally:
        remove_temporaries(pending)  # those of pool workers that were stopped
    result.seconds = time.perf_counter() - started
    return result


def _weights_reporter(model: str,
                      progress: ProgressCallback | None) -> Callable[[int, int], None]:
    """``(done, total)`` weight arrays converted, as ``weights`` progress; the first event
    says what is happening."""
    note: str | None = (f"converting {ESRGAN_MODELS[model].ncnn_stem} weights from ncnn, "
                        "once (they are cached for later runs)")

    def on_weights(done: int, total: int) -> None:
        nonlocal note
        report(progress, "weights", done, total, note=note)
        note = None

    return on_weights


def _run(pending: list[UpscaleJob], model: str, settings: Settings, *, device: str,
         workers: int | None, scheduler_address: str | None, client: Client | None,
         progress: ProgressCallback | None, total: int) -> list[Path]:
    """Upscale ``pending`` and record each output; return the outputs written."""
    done = 0

    def on_tile(n: int) -> None:
        nonlocal done
        done += n
        report(progress, "tiles", done, total)

    # A single image runs here, with no cluster to start.
    if len(pending) == 1 and workers is None and scheduler_address is None and client is None:
        upscaler = registry.load_upscaler(model, tile=settings.tile, dtype=settings.dtype,
                                          device=device)
        on_tile(0)
        return [_upscale_one(pending[0], upscaler, settings, on_tile)]
    on_tile(0)
    # Several: one task per image on the pool, tiles reported as worker events. Workers
    # pinned one per GPU cannot reach a given cuda:N; then they share it (one unless asked).
    pinned = not device.startswith("cuda:")
    pool = nullcontext(client) if client is not None else open_client(
        workers if pinned else workers or 1, scheduler_address, gpu=pinned
    )
    state = f"hypermosaic-upscale-{uuid.uuid4().hex[:12]}"
    with pool as active, EventChannel(active, on_tile) as channel:
        active.register_plugin(WorkerState(state, data={"model": (model, settings, device)},
                                           preload=_load_upscaler))
        futures = [
            active.submit(
                _upscale_task, state, job, settings, channel.topic,
                key=f"upscale-{job.dst.name}-{tokenize(job, model, settings, device)}",
            )
            for job in pending
        ]
        try:
            written = active.gather(futures)
        except BaseException:  # an error or Ctrl-C: nothing more starts
            active.cancel(futures)
            raise
        finally:
            release_states(active, state)  # frees the workers' models
        channel.settle(lambda: done >= total)  # events may trail the results
    if done < total:  # lost events (or results known already)
        report(progress, "tiles", total, total)
    return [Path(p) for p in written]


def _upscale_one(job: UpscaleJob, upscaler: registry.Upscaler, settings: Settings,
                 on_tile: Callable[[int], None] | None) -> Path:
    """Upscale one job, then record what made it (the input identified before reading it)."""
    source = input_identity(job.src)
    upscale_file(job, upscaler, settings.tile, settings.overlap, on_tile)
    write_record(job.dst, replace(settings, scale=float(job.scale)), source)
    return job.dst


def _load_upscaler(state: WorkerState) -> registry.Upscaler:
    """The upscaler of an upscale run's worker state, loaded into its cache the first time
    (when the state is registered: a model that cannot load fails there, once)."""
    model, settings, device = state.data["model"]
    upscaler: registry.Upscaler = state.models.get("upscaler", lambda: registry.load_upscaler(
        model, tile=settings.tile, dtype=settings.dtype, device=device))
    return upscaler


def _upscale_task(state_name: str, job: UpscaleJob, settings: Settings, topic: str) -> str:
    """Dask task: upscale one file with this worker's model; tiles are emitted as events."""
    upscaler = _load_upscaler(worker_state(state_name))
    return str(_upscale_one(job, upscaler, settings, emitter(topic)))
