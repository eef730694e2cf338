"""`hypermosaic canvas CONFIG...`: parse flags, plan every canvas, render them, report."""

from __future__ import annotations

from pathlib import Path

import click

from hypermosaic.canvas import paint_canvases
from hypermosaic.cli.progress import console, progress_bars

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
    out_console = console()
    with progress_bars(out_console) as on_progress:
        results = paint_canvases(configs, model=model, seeds=seeds, steps=steps, out=out,
                                 workers=workers, scheduler_address=scheduler_address,
                                 progress=on_progress)
    for result in results:
        for name, path in result.outputs.items():
            out_console.print(f"{result.job.stem} {name}: {path}")
