"""`hypermosaic build CONFIG`: parse flags, run the build, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from hypermosaic.cli.options import build_config_options
from hypermosaic.cli.progress import console, progress_bars
from hypermosaic.errors import BuildError
from hypermosaic.tree import address_key

if TYPE_CHECKING:
    from hypermosaic.build import BuildResult

__all__ = ["build_command"]


@click.command("build")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--depth", type=click.IntRange(min=0), help="Levels below the primary image.")
@build_config_options
@click.option("--force", is_flag=True, help="Rebuild if the output was made with other settings.")
@click.option("--yes", is_flag=True,
              help="Run even when the estimate exceeds this machine's disk or memory.")
@click.option("--no-publish", is_flag=True, help="Skip DeepZoom, preview and BigTIFF.")
def build_command(config: Path, depth: int | None, out: Path | None, seed: int | None,
                  engine: str | None, model: str | None, device: str | None,
                  dtype: str | None, workers: int | None, scheduler_address: str | None,
                  force: bool, yes: bool, no_publish: bool) -> None:
    """Build the hypermosaic described by CONFIG (TOML) and publish it as DeepZoom."""
    from hypermosaic.build import build_mosaic  # imported when building: --help stays quick

    out_console = console()
    with progress_bars(out_console) as on_progress:
        result = build_mosaic(config, depth=depth, out=out, seed=seed, engine=engine,
                              model=model, device=device, dtype=dtype, force=force, yes=yes,
                              workers=workers, scheduler_address=scheduler_address,
                              publish=not no_publish, progress=on_progress)
    _summary(out_console, result)
    if not result.ok:
        raise BuildError(_failure(result))


def _failure(result: BuildResult) -> str:
    """One line for a build that finished with failed or missing nodes (exit status 1)."""
    if not result.failed:
        return f"{result.missing:,} nodes missing in {result.out}; run again to retry"
    shown = ", ".join(address_key(a) for a in list(result.failed)[:4])
    more = f" and {len(result.failed) - 4:,} more" if len(result.failed) > 4 else ""
    return (f"{len(result.failed):,} nodes failed ({shown}{more}); the rest is kept in "
            f"{result.out}; run again to retry")


def _summary(console: Console, result: BuildResult) -> None:
    rate = result.computed / result.seconds if result.seconds else 0.0
    console.print(
        f"{result.total:,} nodes ({result.computed:,} computed, {result.reused:,} reused) "
        f"in {result.seconds:.1f} s, {rate:,.1f} nodes/s"
    )
    for name, path in result.outputs.items():
        console.print(f"{name}: {path}")
    for address, error in result.failed.items():
        console.print(f"[red]failed[/red] node {address_key(address)}: {error}")
    if result.missing:
        console.print(f"[red]{result.missing:,} nodes missing below failed nodes; "
                      "run again to retry[/red]")
