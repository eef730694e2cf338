"""`hypermosaic build CONFIG`: parse flags, run the build, report."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hypermosaic.build import BuildResult, run_build
from hypermosaic.config import load_build_config
from hypermosaic.errors import BuildError
from hypermosaic.tree import address_key

__all__ = ["build_command"]


class _Rate(TextColumn):
    """Tiles per second over this run (reused nodes excluded)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: ANN001, ANN201 - rich's column interface
        elapsed = task.elapsed or 0.0
        computed = task.completed - task.fields.get("reused", 0)
        rate = computed / elapsed if elapsed > 0 else 0.0
        return f"{rate:,.1f} tiles/s"


@click.command("build")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--depth", type=click.IntRange(min=0), help="Levels below the primary image.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option("--seed", type=click.IntRange(min=0), help="Root seed.")
@click.option("--engine", type=click.Choice(["recolor", "diffusion"]), help="Tile engine.")
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes.")
@click.option("--scheduler-address", metavar="tcp://HOST:PORT",
              help="Run on an existing Dask cluster instead of a local one.")
@click.option("--force", is_flag=True, help="Rebuild if the output was made with other settings.")
@click.option("--no-publish", is_flag=True, help="Skip DeepZoom, preview and BigTIFF.")
def build_command(config: Path, depth: int | None, out: Path | None, seed: int | None,
                  engine: str | None, workers: int | None, scheduler_address: str | None,
                  force: bool, no_publish: bool) -> None:
    """Build the hypermosaic described by CONFIG (TOML) and publish it as DeepZoom."""
    settings = load_build_config(
        config,
        overrides={"depth": depth, "out": out, "seed": seed, "engine": engine},
    )
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]nodes"), BarColumn(), MofNCompleteColumn(), _Rate(),
        TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
    )
    # shown from the start of the tile work: bad input stops the build with one line only
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task("nodes", total=None)

    def on_start(result: BuildResult, reused: int) -> None:
        progress.update(task, total=result.total, reused=reused)
        progress.start()
        progress.console.print(f"dashboard: {result.dashboard}")

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    try:
        result = run_build(settings, force=force, workers=workers,
                           scheduler_address=scheduler_address, on_start=on_start,
                           on_progress=on_progress, publish=not no_publish)
    except KeyboardInterrupt:
        progress.stop()
        console.print(f"interrupted: finished nodes are kept in {settings.out}; "
                      "run the same command again to resume")
        sys.exit(130)
    finally:
        progress.stop()
    _summary(console, result)
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
