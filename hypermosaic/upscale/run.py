"""`hypermosaic upscale`: Real-ESRGAN on image files larger than memory, one or many.

Inputs are planned first (`hypermosaic.upscale.plan`), then each missing output is streamed
(`hypermosaic.upscale.stream`): one image in this process, several as tasks on the Dask pool,
the model loaded once per worker into the worker's model cache. Workers report tiles as events
for the progress bar. Outputs appear only when complete, so a re-run skips finished ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from dask.base import tokenize
from distributed import Client

from hypermosaic import registry
from hypermosaic.errors import InputError
from hypermosaic.executor import WorkerState, open_client, worker_state
from hypermosaic.identity import check_dtype
from hypermosaic.progress import EventChannel, ProgressCallback, emitter, report
from hypermosaic.tiling import DEFAULT_OVERLAP
from hypermosaic.upscale.plan import UpscaleJob, count_tiles, plan_jobs
from hypermosaic.upscale.stream import upscale_file

__all__ = ["UpscaleResult", "upscale_files", "upscale_images"]

STATE_NAME = "hypermosaic-upscale"


@dataclass
class UpscaleResult:
    """The jobs of an upscale, the outputs written, and how many existed already."""

    jobs: list[UpscaleJob]
    written: list[Path] = field(default_factory=list)
    skipped: int = 0


def upscale_images(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    model: str = "x4plus",
    scale: float | None = None,
    tile: int | None = None,
    fmt: str = "tif",
    dtype: str = "auto",
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    progress: ProgressCallback | None = None,
) -> UpscaleResult:
    """Upscale image files (or folders of them) into ``out``: one output file for one input
    file whose ``out`` ends in an image suffix, else a folder of ``<stem>.<fmt>``.

    Everything is checked before any work (`InputError`); outputs that exist already are
    skipped; ``progress`` counts ``tiles``. ``dtype`` is the compute dtype (``auto``:
    float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32).
    """
    jobs = plan_jobs(inputs, out, model, scale, fmt)
    result = UpscaleResult(jobs, skipped=sum(job.done for job in jobs))
    result.written = upscale_files(jobs, model, tile=tile, workers=workers,
                                   scheduler_address=scheduler_address, client=client,
                                   progress=progress, dtype=dtype)
    return result


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
) -> list[Path]:
    """Upscale every planned job whose output is missing; return the outputs written.

    One pending image with no pool asked for runs in this process; otherwise each image is a
    task on the Dask pool (``client``'s, else `hypermosaic.executor.open_client`'s).
    """
    # 1. Settle what is left to do and how many tiles that is.
    try:
        check_dtype(dtype)
    except ValueError as exc:
        raise InputError(f"--dtype: {exc}") from None
    pending = [job for job in jobs if not job.done]
    if not pending:
        return []
    tile = tile or registry.describe_upscaler(model)[1]
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    total = sum(count_tiles(job, tile, overlap) for job in pending)
    done = 0

    def on_tile(n: int) -> None:
        nonlocal done
        done += n
        report(progress, "tiles", done, total)

    on_tile(0)
    # 2. A single image runs here, with no cluster to start.
    if len(pending) == 1 and workers is None and scheduler_address is None and client is None:
        upscaler = registry.load_upscaler(model, tile=tile, dtype=dtype)
        return [upscale_file(pending[0], upscaler, tile, overlap, on_tile)]
    # 3. Several: one task per image on the pool, tiles reported as worker events.
    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=True
    )
    with pool as active, EventChannel(active, on_tile) as channel:
        active.register_plugin(WorkerState(STATE_NAME))
        futures = [
            active.submit(
                _upscale_task, job, model, tile, overlap, dtype, channel.topic,
                key=f"upscale-{job.dst.name}-{tokenize(job, model, tile, overlap, dtype)}",
            )
            for job in pending
        ]
        written = active.gather(futures)
        channel.settle(lambda: done >= total)  # events may trail the results
    if done < total:  # lost events (or results known already)
        report(progress, "tiles", total, total)
    return [Path(p) for p in written]


def _upscale_task(job: UpscaleJob, model: str, tile: int, overlap: int, dtype: str,
                  topic: str) -> str:
    """Dask task: upscale one file with this worker's model; tiles are emitted as events."""
    models = worker_state(STATE_NAME).models
    upscaler = models.get(("upscaler", model, tile, dtype), lambda: (
        registry.load_upscaler(model, tile=tile, dtype=dtype)))
    return str(upscale_file(job, upscaler, tile, overlap, emitter(topic)))
