"""`hypermosaic frame PHOTO`: an empty picture frame in a photo, inpainted, to a print file."""

from __future__ import annotations

from pathlib import Path

import click

from hypermosaic.cli.progress import console, progress_bars
from hypermosaic.identity import DTYPES, SCHEDULER_NAMES

__all__ = ["frame_command"]


@click.command("frame")
@click.argument("photo", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file whose [frame] table holds these settings (options win).")
@click.option("--corners", metavar='"X1,Y1 X2,Y2 X3,Y3 X4,Y4"',
              help="The frame's inside in photo pixels: top-left, top-right, bottom-right, "
              "bottom-left.")
@click.option("--mask", type=click.Path(dir_okay=False, path_type=Path),
              help="Instead of --corners: a mask the photo's size, white inside the frame.")
@click.option("--size", metavar="WxH[mm|cm|in]", help="The frame's inside, e.g. 50x70cm.")
@click.option("--dpi", type=float, help="Print resolution (default 300).")
@click.option("--bleed", type=float, help="Bleed in mm added on each side (default 0).")
@click.option("--prompt", help="What to paint into the frame (inpainting).")
@click.option("--print-prompt", help="The img2img prompt for the print (default: --prompt).")
@click.option("--negative-prompt", help="Negative prompt of both steps.")
@click.option("--model", help="Stable Diffusion model (directory, .safetensors or cached id).")
@click.option("--inpaint-model", help="SD inpainting model (9-channel UNet) for step 1; "
              "default: --model by masked latent blending.")
@click.option("--scheduler", type=click.Choice(SCHEDULER_NAMES), help="Diffusion scheduler.")
@click.option("--candidates", type=int, help="Inpainting candidates, one per seed (default 4).")
@click.option("--seed", type=int, help="Seed of the first candidate (default 0).")
@click.option("--choose", type=int, help="The candidate made into the print (default 1).")
@click.option("--inpaint-size", type=int,
              help="Long side of the photo when inpainting (default: the model's side).")
@click.option("--steps", type=int, help="img2img steps (default 30).")
@click.option("--strength", type=float, help="img2img strength in (0, 1] (default 0.5).")
@click.option("--colour-fix", type=float,
              help="Remove the wall's colour cast, 0 (off, default) to 1 (fully).")
@click.option("--refine-strength", type=float,
              help="Detail pass: redraw the enlarged artwork in canvas windows at this img2img "
              "strength, in [0, 1) (default 0: off).")
@click.option("--refine-scale", type=int,
              help="How many times the detail pass enlarges the artwork, 2 to 8 (default 2).")
@click.option("--upscaler", metavar="x4plus|anime|fast|bicubic|PATH",
              help="ESRGAN model enlarging the artwork to the print (default x4plus).")
@click.option("--format", "fmt", type=click.Choice(["tif", "png"]),
              help="Print file format (default tif).")
@click.option("--device", metavar="auto|cpu|cuda|cuda:N|mps", help="Where the models run.")
@click.option("--dtype", type=click.Choice(DTYPES), help="Compute dtype (default auto).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default ./out).")
def frame_command(photo: Path | None, config_file: Path | None, corners: str | None,
                  mask: Path | None, size: str | None, dpi: float | None, bleed: float | None,
                  prompt: str | None, print_prompt: str | None, negative_prompt: str | None,
                  model: str | None, inpaint_model: str | None, scheduler: str | None,
                  candidates: int | None, seed: int | None, choose: int | None,
                  inpaint_size: int | None, steps: int | None, strength: float | None,
                  colour_fix: float | None, refine_strength: float | None,
                  refine_scale: int | None, upscaler: str | None, fmt: str | None,
                  device: str | None, dtype: str | None, out: Path | None) -> None:
    """Paint the empty picture frame in PHOTO and make its print file.

    Inpainting candidates (one per seed), the chosen one rectified to the frame's aspect,
    img2img with the print prompt, an optional colour fix, an optional detail pass (canvas
    windows over the enlarged artwork), ESRGAN to the print size at the DPI, the print file
    (sRGB, DPI, bleed) and the photo with the artwork on the wall.
    """
    from hypermosaic.frame import frame_print  # imported when painting: --help stays quick

    out_console = console()
    with progress_bars(out_console) as on_progress:
        result = frame_print(
            config_file, progress=on_progress, photo=photo, corners=corners, mask=mask,
            size=size, dpi=dpi, bleed=bleed, prompt=prompt, print_prompt=print_prompt,
            negative_prompt=negative_prompt, model=model, inpaint_model=inpaint_model,
            scheduler=scheduler, candidates=candidates, seed=seed, choose=choose,
            inpaint_size=inpaint_size, steps=steps, strength=strength, colour_fix=colour_fix,
            refine_strength=refine_strength, refine_scale=refine_scale, upscaler=upscaler,
            format=fmt, device=device, dtype=dtype, out=out)
    width, height = result.plan.print.pixels
    out_console.print(f"print: {result.print} ({width}x{height} px at "
                      f"{result.plan.print.dpi:g} dpi) in {result.seconds:.1f} s")
    out_console.print(f"on the wall: {result.preview}")
