"""`hypermosaic canvas CONFIG...`: parse flags, plan every canvas, render them, report."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import click

from hypermosaic.cli.options import device_option
from hypermosaic.cli.progress import console, progress_bars
from hypermosaic.identity import DTYPES

__all__ = ["canvas_command"]


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each `CanvasWarning` as one ``warning: ...`` line on stderr."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        click.echo(f"warning: {message}", err=True)

    from hypermosaic.canvas import CanvasWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", CanvasWarning)
        warnings.showwarning = show
        yield


@click.command("canvas")
@click.argument("configs", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="Stable Diffusion model (directory, .safetensors or cached id).")
@click.option("--seed", "seeds", type=click.IntRange(0, 2**63 - 1), multiple=True,
              help="Canvas seed; repeat for several canvases (overrides the config's).")
@click.option("--steps", type=click.IntRange(1, 1000), help="Denoising steps.")
@click.option("--device", callback=device_option, metavar="auto|cpu|cuda|cuda:N|mps",
              help="Device of the diffusion models (auto: CUDA, else MPS, else the CPU); "
              "sets device.")
@click.option("--dtype", type=click.Choice(DTYPES),
              help="Compute dtype (auto: float16 on CUDA, else float32); sets dtype.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: the config's out, else ./out).")
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes.")
@click.option("--scheduler-address", metavar="tcp://HOST:PORT",
              help="Run on an existing Dask cluster instead of a local one.")
def canvas_command(configs: tuple[Path, ...], model: str | None, seeds: tuple[int, ...],
                   steps: int | None, device: str | None, dtype: str | None, out: Path | None,
                   workers: int | None, scheduler_address: str | None) -> None:
    """Generate the seamless canvases described by CONFIG files (TOML, or Mixture of
    Diffusers JSON), one per seed, side by side on the worker pool."""
    from hypermosaic.canvas import paint_canvases  # imported when painting: --help stays quick

    out_console = console()
    with _one_line_warnings(), progress_bars(out_console) as on_progress:
        results = paint_canvases(configs, model=model, seeds=seeds, steps=steps, out=out,
                                 device=device, dtype=dtype, workers=workers,
                                 scheduler_address=scheduler_address, progress=on_progress)
    for result in results:
        for name, path in result.outputs.items():
            out_console.print(f"{result.job.stem} {name}: {path}")
