"""Option checks shared by the commands, so an option means the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from hypermosaic.identity import check_device

__all__ = ["build_config_options", "device_option"]

F = TypeVar("F", bound=Callable[..., object])


def device_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--device`` checked as every command and config checks a device (`check_device`)."""
    if value is None:
        return None
    try:
        return check_device(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def build_config_options(command: F) -> F:
    """The options a build config takes from the command line (``build`` and ``explore``):
    ``--out``, ``--seed``, ``--engine``, ``--model``, ``--device``, ``--dtype`` (checked with
    the config, so an error names its key), ``--workers`` and ``--scheduler-address``."""
    options = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Output directory (the build's store)."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), help="Root seed."),
        click.option("--engine", type=click.Choice(["recolor", "diffusion"]),
                     help="Tile engine."),
        click.option("--model", help="Stable Diffusion model (directory, .safetensors or "
                     "cached id); sets diffusion.model."),
        click.option("--device", metavar="auto|cpu|cuda|cuda:N|mps",
                     help="Device of the diffusion engine and ESRGAN inits; sets "
                     "diffusion.device."),
        click.option("--dtype", type=click.Choice(["auto", "float16", "bfloat16", "float32"]),
                     help="Compute dtype of the diffusion engine; sets diffusion.dtype."),
        click.option("--workers", type=click.IntRange(min=1), help="Local worker processes."),
        click.option("--scheduler-address", metavar="tcp://HOST:PORT",
                     help="Run on an existing Dask cluster instead of a local one."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
