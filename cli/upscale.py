"""`hypermosaic upscale INPUT...`: Real-ESRGAN upscale of images larger than memory."""

from __future__ import annotations

from pathlib import Path

import click

from hypermosaic.cli.progress import console, progress_bars
from hypermosaic.upscale import upscale_images

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
    out_console = console()
    with progress_bars(out_console) as on_progress:
        result = upscale_images(inputs, out, model=model, scale=scale, tile=tile, fmt=fmt,
                                dtype=dtype, workers=workers,
                                scheduler_address=scheduler_address, progress=on_progress)
    if result.skipped:
        out_console.print(f"{result.skipped} of {len(result.jobs)} outputs exist already, "
                          "skipped")
    for path in result.written:
        click.echo(str(path))
