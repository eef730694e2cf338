"""`hypermosaic canvas CONFIG...`: parse flags, plan every canvas, render them, report."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hypermosaic.canvas import plan_jobs, run_canvases
from hypermosaic.canvas_config import load_canvas_config

__all__ = ["canvas_command"]


@click.command("canvas")
@click.argument("configs", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="Stable Diffusion model (directory, .safetensors or cached id).")
@click.option("--seed", "seeds", type=click.IntRange(0, 2**63 - 1), multiple=True,
              help="Canvas seed; repeat for several canvases (overrides the config's).")
@click.option("--steps", type=click.IntRange(1, 1000), help="Denoising steps.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: the config's out, else ./out).")
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes.")
@click.option("--scheduler-address", metavar="tcp://HOST:PORT",
              help="Run on an existing Dask cluster instead of a local one.")
def canvas_command(configs: tuple[Path, ...], model: str | None, seeds: tuple[int, ...],
                   steps: int | None, out: Path | None, workers: int | None,
                   scheduler_address: str | None) -> None:
    """Generate the seamless canvases described by CONFIG files (TOML, or Mixture of
    Diffusers JSON), one per seed, side by side on the worker pool."""
    overrides = {"model": model, "steps": steps, "out": out, "seed": list(seeds) or None}
    jobs = plan_jobs([load_canvas_config(path, overrides) for path in configs])
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]steps"), BarColumn(), MofNCompleteColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
    )
    done = [0] * len(jobs)
    totals = [job.plan.steps for job in jobs]  # until a worker reports its timestep count
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("steps", total=sum(totals))

        def on_step(index: int, step: int, steps: int) -> None:
            done[index], totals[index] = max(done[index], step), steps
            progress.update(task, completed=sum(done), total=sum(totals))

        results = run_canvases(jobs, workers=workers, scheduler_address=scheduler_address,
                               on_step=on_step)
        progress.update(task, completed=sum(totals))
    for result in results:
        for name, path in result.outputs.items():
            console.print(f"{result.job.stem} {name}: {path}")
