"""`hypermosaic canvas`: mixture-of-diffusers canvases, side by side on the Dask pool.

Each (config, seed) pair is one canvas: planned here (pure, every input checked before work
starts, `hypermosaic.canvas.jobs`), rendered by one task on a worker that holds the model
(`hypermosaic.canvas.tasks`), and written here (`hypermosaic.canvas.outputs`). Workers report
each denoising step as an event, which drives the progress callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client, as_completed

from hypermosaic.canvas.config import CanvasConfig
from hypermosaic.canvas.jobs import CanvasJob, plan_jobs
from hypermosaic.canvas.load import load_canvas_config
from hypermosaic.canvas.outputs import write_outputs
from hypermosaic.canvas.tasks import ModelKey, canvas_state, render_task
from hypermosaic.executor import cpu_count, open_client
from hypermosaic.progress import EventChannel, ProgressCallback, report

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
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    progress: ProgressCallback | None = None,
) -> list[CanvasResult]:
    """Paint every seed of every config (validated configs, or TOML / Mixture of Diffusers
    JSON files that ``model``, ``seeds``, ``steps`` and ``out`` override).

    Every config is read and every canvas planned before any work starts (`InputError`
    otherwise); ``progress`` counts denoising ``steps`` over all canvases. Results are in the
    order of the configs and their seeds.
    """
    overrides = {"model": model, "steps": steps, "out": out, "seed": list(seeds) or None}
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

    A worker's error (a model that cannot load) is raised here.
    """
    results = [CanvasResult(job) for job in jobs]
    if not jobs:
        return results
    done = [0] * len(jobs)
    totals = [job.plan.steps for job in jobs]  # until a worker reports its timestep count

    def on_step(event: list[int]) -> None:
        index, step, steps = event
        done[index], totals[index] = max(done[index], step), steps
        report(progress, "steps", sum(done), sum(totals))

    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=True
    )
    with pool as active, EventChannel(active, on_step) as channel:
        # 1. One worker state; each distinct (model, device, dtype) loads once per worker.
        active.register_plugin(canvas_state(max(1, cpu_count() // max(1, len(active.nthreads())))))
        report(progress, "steps", 0, sum(totals))
        # 2. One task per canvas; progress arrives as events.
        futures = {
            active.submit(
                render_task, _model_key(job.config), job.plan,
                job.config.upscale_model if job.config.upscale > 1 else None, channel.topic,
                index, key=job.key,
            ): index
            for index, job in enumerate(jobs)
        }
        # 3. Write each canvas as it comes back.
        for future in as_completed(futures):
            index = futures[future]
            image, upscaled = future.result()
            results[index].outputs = write_outputs(jobs[index], image, upscaled)
    report(progress, "steps", sum(totals), sum(totals))
    return results


def _model_key(config: CanvasConfig) -> ModelKey:
    return str(config.model), config.device, config.dtype
