"""`hypermosaic explore CONFIG`: the build in a browser, grown live below its depth."""

from __future__ import annotations

from pathlib import Path

import click

from hypermosaic.cli.options import build_config_options

__all__ = ["explore_command"]


@click.command("explore")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@build_config_options
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than 127.0.0.1 exposes it to the network.")
@click.option("--verbose", is_flag=True, help="Log every request to stderr.")
def explore_command(config: Path, out: Path | None, seed: int | None, engine: str | None,
                    model: str | None, device: str | None, dtype: str | None,
                    workers: int | None, scheduler_address: str | None, port: int, host: str,
                    verbose: bool) -> None:
    """Open the build of CONFIG in a browser and zoom without end: nodes below what was
    built are made on the pool while you look, as `hypermosaic build` would make them."""
    from hypermosaic.explore import explore_build  # imported when serving: --help stays quick

    explore_build(config, out=out, seed=seed, engine=engine, model=model, device=device,
                  dtype=dtype, workers=workers, scheduler_address=scheduler_address,
                  host=host, port=port, verbose=verbose,
                  on_ready=lambda url: click.echo(f"Exploring at {url} (Ctrl-C to stop)"))
    click.echo("stopped", err=True)
