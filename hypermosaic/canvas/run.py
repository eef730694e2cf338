"""`hypermosaic canvas`: mixture-of-diffusers canvases, side by side on the Dask pool.

Each (config, seed) pair is one canvas: planned here (pure, every input checked before work
starts, `hypermosaic.canvas.jobs`), rendered by one task on a worker that holds the model
(`hypermosaic.canvas.tasks`), and written here (`hypermosaic.canvas.outputs`). Workers report
each denoising step as an event, which drives the progress callback.

One run writes an output folder at a time: every folder is locked (`hypermosaic.store.
folder_lock`, which also refuses a folder that cannot be written) before any work starts. A
full disk is one line naming the folder, and Ctrl-C says which folders keep the canvases
already written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client, as_completed

from hypermosaic.canvas.config import CanvasConfig
from hypermosaic.canvas.jobs import CanvasJob, plan_jobs
from hypermosaic.canvas.load import load_canvas_config
from hypermosaic.canvas.outputs import write_outputs
from hypermosaic.canvas.tasks import ModelKey, canvas_state, render_task
from hypermosaic.errors import BuildError, InputError, Interrupted
from hypermosaic.executor import cpu_count, open_client, release_states
from hypermosaic.lora import lora_settings
from hypermosaic.progress import EventChannel, ProgressCallback, report
from hypermosaic.store import disk_full, folder_lock

__all__ = ["CanvasResult", "paint_canvases", "run_canvases"]


@dataclass
class CanvasResult:
    """The files written for one canvas."""

    job: CanvasJob
    outputs: dict[str, Path] = field(default_factory=dict)


def paint_canvases(
    configs: Sequence[CanvasConfig | Path | str],
    *,
    model: str | None = None,
    seeds: Sequence[int] = (),
    steps: int | None = None,
    out: Path | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    progress: ProgressCallback | None = None,
) -> list[CanvasResult]:
    """Paint every seed of every config (validated configs, or TOML / Mixture of Diffusers
    JSON files that ``model``, ``seeds``, ``steps``, ``out``, ``device`` and ``dtype``
    override).

    Every config is read and every canvas planned before any work starts (`InputError`
    otherwise); ``progress`` counts denoising ``steps`` over all canvases. Results are in the
    order of the configs and their seeds. See `run_canvases` for the output folders.
    """
    overrides = {"model": model, "steps": steps, "out": out, "seed": list(seeds) or None,
                 "device": device, "dtype": dtype}
    loaded = [config if isinstance(config, CanvasConfig) else load_canvas_config(config, overrides)
              for config in configs]
    jobs = plan_jobs(loaded)
    return run_canvases(jobs, workers=workers, scheduler_address=scheduler_address,
                        client=client, progress=progress)


def run_canvases(
    jobs: Sequence[CanvasJob],
    *,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    progress: ProgressCallback | None = None,
) -> list[CanvasResult]:
    """Render planned ``jobs`` on the pool and write their files, in the order of ``jobs``.

    Every distinct output folder is locked for the run before any work (`InputError` if
    another run holds it, or it cannot be made or written). A worker's error (a model that
    cannot load) is raised here, naming the config's file. A full disk is an `InputError`
    naming the folder; Ctrl-C raises `Interrupted` naming the folders, where the canvases
    already written are kept.
    """
    results = [CanvasResult(job) for job in jobs]
    if not jobs:
        return results
    folders = sorted({job.config.out for job in jobs})
    with _locked(folders), _interrupted(folders):
        _render(jobs, results, workers, scheduler_address, client, progress)
    return results


@contextmanager
def _locked(folders: list[Path]) -> Iterator[None]:
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(folder_lock(folder, "--out"))
        yield


@contextmanager
def _interrupted(folders: list[Path]) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(
            f"finished canvases are kept in {', '.join(map(str, folders))}; the same command "
            "paints every canvas again (canvases are not resumed)"
        ) from None


def _render(
    jobs: Sequence[CanvasJob],
    results: list[CanvasResult],
    workers: int | None,
    scheduler_address: str | None,
    client: Client | None,
    progress: ProgressCallback | None,
) -> None:
    done = [0] * len(jobs)
    totals = [job.plan.steps for job in jobs]  # until a worker reports its timestep count

    def on_step(event: list[int]) -> None:
        index, step, steps = event
        done[index], totals[index] = max(done[index], step), steps
        report(progress, "steps", sum(done), sum(totals))

    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=True
    )
    state = f"hypermosaic-canvas-{uuid.uuid4().hex[:12]}"
    with pool as active, EventChannel(active, on_step) as channel:
        # 1. One worker state; each distinct (model, device, dtype, LoRAs) loads once per worker.
        threads = max(1, cpu_count() // max(1, len(active.nthreads())))
        keys = list(dict.fromkeys(_model_key(job.config) for job in jobs))
        active.register_plugin(canvas_state(state, threads, keys))
        try:
            report(progress, "steps", 0, sum(totals))
            # 2. One task per canvas; progress arrives as events.
            futures = {
                active.submit(
                    render_task, state, _model_key(job.config), job.plan,
                    job.config.upscale_model if job.config.upscale > 1 else None, channel.topic,
                    index, key=job.key,
                ): index
                for index, job in enumerate(jobs)
            }
            # 3. Write each canvas as it comes back.
            for future in as_completed(futures):
                job = jobs[futures[future]]
                try:
                    image, upscaled = future.result()
                except (InputError, BuildError) as exc:  # raised on the worker
                    raise type(exc)(f"{job.config.source}: {exc}") from None
                try:
                    results[futures[future]].outputs = write_outputs(job, image, upscaled)
                except OSError as exc:
                    full = disk_full(exc, job.config.out)
                    if full is None:
                        raise
                    raise full from None
        finally:
            release_states(active, state)  # frees the workers' models
    report(progress, "steps", sum(totals), sum(totals))


def _model_key(config: CanvasConfig) -> ModelKey:
    return str(config.model), config.device, config.dtype, lora_settings(config.lora)
