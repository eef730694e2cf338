"""The `hypermosaic` command: one click group, thin subcommands.

Each subcommand parses its options, calls the library and reports. Library errors
(`hypermosaic.errors`) become one line on stderr and their exit status.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hypermosaic import __version__
from hypermosaic.cli.build import build_command
from hypermosaic.cli.canvas import canvas_command
from hypermosaic.cli.serve import serve_command
from hypermosaic.cli.upscale import upscale_command
from hypermosaic.cli.video import video_command
from hypermosaic.errors import HypermosaicError

__all__ = ["main", "cli"]


class _Group(click.Group):
    """Turn library errors into a one-line message and the error's exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HypermosaicError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="hypermosaic")
def cli() -> None:
    """Hypermosaics and ultra-large generated images."""


cli.add_command(build_command)
cli.add_command(serve_command)
cli.add_command(video_command)
cli.add_command(canvas_command)
cli.add_command(upscale_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="hypermosaic")
