"""`hypermosaic upscale INPUT...`: Real-ESRGAN upscale of images larger than memory."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hypermosaic.upscale import plan_jobs, upscale_files

__all__ = ["upscale_command"]


@click.command("upscale")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output file (.tif, .png, .jpg, .dzi) for one input, else a folder.")
@click.option("--model", default="x4plus", show_default=True, metavar="x4plus|anime|fast|PATH",
              help="Registry model, or a Real-ESRGAN .pth/.safetensors file.")
@click.option("--scale", type=float, help="Output scale, at most the model's own (default).")
@click.option("--tile", type=click.IntRange(min=32), help="Tile side in input pixels.")
@click.option("--format", "fmt", type=click.Choice(["tif", "png", "jpg", "dzi"]), default="tif",
              show_default=True, help="Output format when --out is a folder.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              default="auto", show_default=True,
              help="Compute dtype. auto: float16 on CUDA, bfloat16 on a CPU with native "
              "bfloat16 (2x faster, 53-55 dB PSNR from float32), else float32.")
@click.option("--workers", type=click.IntRange(min=1), help="Dask workers for several images.")
@click.option("--scheduler-address", metavar="tcp://HOST:PORT",
              help="Run on an existing Dask cluster instead of a local one.")
def upscale_command(inputs: tuple[Path, ...], out: Path, model: str, scale: float | None,
                    tile: int | None, fmt: str, dtype: str, workers: int | None,
                    scheduler_address: str | None) -> None:
    """Upscale image files (or folders of them) seamlessly with Real-ESRGAN.

    Existing outputs are skipped, so an interrupted run resumes where it stopped.
    """
    jobs = plan_jobs(inputs, out, model, scale, fmt)
    console = Console(stderr=True)
    skipped = sum(job.done for job in jobs)
    if skipped:
        console.print(f"{skipped} of {len(jobs)} outputs exist already, skipped")
    if skipped == len(jobs):
        return
    columns = (TextColumn("[bold]tiles"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("tiles", total=None)
        written = upscale_files(
            jobs, model, tile=tile, workers=workers, scheduler_address=scheduler_address,
            dtype=dtype,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for path in written:
        click.echo(str(path))
