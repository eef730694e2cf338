"""`hypermosaic paint`: paint regions with prompts in a browser; the canvas streams beside."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["paint_command"]


@click.command("paint")
@click.option("--model", help="An LCM model (diffusers directory, checkpoint or Hugging Face id);"
              " overrides the config's.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="Start from this canvas config (brushes and a background), e.g. an export.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Folder that exports are written to.")
@click.option("--width", type=click.IntRange(min=8), default=512, show_default=True)
@click.option("--height", type=click.IntRange(min=8), default=512, show_default=True)
@click.option("--steps", type=click.IntRange(1, 50), default=4, show_default=True,
              help="LCM steps: latents in the stream at once.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes.")
@click.option("--scheduler-address", help="Run on an existing Dask cluster (tcp://HOST:PORT).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than 127.0.0.1 exposes it to the network.")
@click.option("--verbose", is_flag=True, help="Log every request to stderr.")
def paint_command(model: str | None, config: Path | None, out: Path, width: int, height: int,
                  steps: int, seed: int, device: str, dtype: str, workers: int | None,
                  scheduler_address: str | None, port: int, host: str, verbose: bool) -> None:
    """Paint with prompts (semantic brushes) in a browser and watch the canvas follow;
    export the painting as a canvas config that `hypermosaic canvas` renders."""
    from hypermosaic.paint import paint  # imported when serving: --help stays quick

    paint(model, config=config, out=out, width=width, height=height, steps=steps, seed=seed,
          device=device, dtype=dtype, workers=workers, scheduler_address=scheduler_address,
          host=host, port=port, verbose=verbose,
          on_ready=lambda url: click.echo(f"Painting at {url} (Ctrl-C to stop)"))
    click.echo("stopped", err=True)
