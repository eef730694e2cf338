"""`hypermosaic upscale INPUT...`: Real-ESRGAN upscale of images larger than memory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from hypermosaic.cli.options import device_option
from hypermosaic.cli.progress import console, progress_bars
from hypermosaic.identity import DTYPES

if TYPE_CHECKING:
    from hypermosaic.upscale import UpscaleResult

__all__ = ["upscale_command"]


@click.command("upscale")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output file (.tif, .tiff, .png, .jpg, .jpeg, .dzi) for one input, else a "
              "folder.")
@click.option("--model", default="x4plus", show_default=True, metavar="x4plus|anime|fast|PATH",
              help="Registry model, or a Real-ESRGAN .pth/.safetensors file.")
@click.option("--scale", type=float, help="Output scale, at most the model's own (default).")
@click.option("--tile", type=click.IntRange(min=32), help="Tile side in input pixels.")
@click.option("--format", "fmt", type=click.Choice(["tif", "png", "jpg", "dzi"]), default="tif",
              show_default=True, help="Output format when --out is a folder.")
@click.option("--device", default="auto", show_default=True, callback=device_option,
              metavar="auto|cpu|cuda|cuda:N|mps",
              help="Where the model runs. auto: CUDA, else MPS, else CPU.")
@click.option("--dtype", type=click.Choice(DTYPES),
              default="auto", show_default=True,
              help="Compute dtype. auto: float16 on CUDA, bfloat16 on a CPU with native "
              "bfloat16 (2x faster, 53-55 dB PSNR from float32), else float32.")
@click.option("--workers", type=click.IntRange(min=1), help="Dask workers for several images.")
@click.option("--scheduler-address", metavar="tcp://HOST:PORT",
              help="Run on an existing Dask cluster instead of a local one.")
@click.option("--force", is_flag=True,
              help="Upscale again the outputs made with other settings (or unknown ones).")
def upscale_command(inputs: tuple[Path, ...], out: Path, model: str, scale: float | None,
                    tile: int | None, fmt: str, device: str, dtype: str, workers: int | None,
                    scheduler_address: str | None, force: bool) -> None:
    """Upscale image files (or folders of them) seamlessly with Real-ESRGAN.

    Outputs already made with the same settings are skipped, so an interrupted run resumes
    where it stopped; outputs made with other settings are refused unless --force.
    """
    from hypermosaic.upscale import upscale_images

    out_console = console()
    with progress_bars(out_console) as on_progress:
        result = upscale_images(inputs, out, model=model, scale=scale, tile=tile, fmt=fmt,
                                device=device, dtype=dtype, force=force, workers=workers,
                                scheduler_address=scheduler_address, progress=on_progress)
    _summary(out_console, result)
    for path in result.written:
        click.echo(str(path))


def _summary(console: Console, result: UpscaleResult) -> None:
    """One line: outputs written and skipped, tiles computed (the bar's unit), time and rate
    (over the whole run, loading included)."""
    line = f"{len(result.written):,} of {len(result.jobs):,} outputs written"
    if result.skipped:
        line += f", {result.skipped:,} skipped (done with these settings)"
    if result.tiles:
        rate = result.tiles / result.seconds if result.seconds else 0.0
        line += f"; {result.tiles:,} tiles in {result.seconds:.1f} s, {rate:,.2f} tiles/s"
    else:
        line += f" in {result.seconds:.1f} s"
    console.print(line, soft_wrap=True)
