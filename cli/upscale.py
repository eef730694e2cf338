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
@click.option("--refine", "refine_prompt", metavar="PROMPT",
              help="Detail pass: redraw the enlarged image with this prompt, img2img in "
              "overlapping windows.")
@click.option("--refine-config", type=click.Path(path_type=Path), metavar="FILE.toml",
              help="A TOML file whose [refine] table sets the detail pass (options win).")
@click.option("--refine-strength", type=float, help="img2img strength, in (0, 1] [0.3].")
@click.option("--refine-model", metavar="PATH_OR_ID", help="Stable Diffusion model.")
@click.option("--refine-steps", type=int, help="Denoising steps at strength 1 [20].")
@click.option("--refine-batch", type=int, help="Windows per UNet call [8].")
@click.option("--noise-inversion", is_flag=True, default=None,
              help="Start from the image's DDIM-inverted noise (keeps structure; ~1.5x time).")
@click.option("--refine-controlnet", metavar="PATH_OR_ID",
              help="ControlNet Tile: condition each window on its own pixels (keeps structure).")
@click.option("--refine-controlnet-scale", type=float,
              help="The ControlNet's residual scale, in [0, 4] [1.0].")
def upscale_command(inputs: tuple[Path, ...], out: Path, model: str, scale: float | None,
                    tile: int | None, fmt: str, device: str, dtype: str, workers: int | None,
                    scheduler_address: str | None, force: bool, refine_prompt: str | None,
                    refine_config: Path | None, refine_strength: float | None,
                    refine_model: str | None, refine_steps: int | None,
                    refine_batch: int | None, noise_inversion: bool | None,
                    refine_controlnet: str | None, refine_controlnet_scale: float | None
                    ) -> None:
    """Upscale image files (or folders of them) seamlessly with Real-ESRGAN, then optionally
    redraw them with a diffusion model for real detail (--refine).

    Outputs already made with the same settings are skipped, so an interrupted run resumes
    where it stopped; outputs made with other settings are refused unless --force.
    """
    from hypermosaic.upscale import refine_config as make_refine
    from hypermosaic.upscale import upscale_images

    overrides = {"prompt": refine_prompt, "strength": refine_strength, "model": refine_model,
                 "steps": refine_steps, "batch_size": refine_batch,
                 "noise_inversion": noise_inversion, "controlnet.model": refine_controlnet,
                 "controlnet.scale": refine_controlnet_scale}
    refine = make_refine(overrides, config=refine_config)
    out_console = console()
    with progress_bars(out_console) as on_progress:
        result = upscale_images(inputs, out, model=model, scale=scale, tile=tile, fmt=fmt,
                                device=device, dtype=dtype, force=force, workers=workers,
                                scheduler_address=scheduler_address, progress=on_progress,
                                refine=refine)
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
