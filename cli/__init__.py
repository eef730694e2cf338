"""The `hypermosaic` command: one click group, thin subcommands.

Each subcommand parses its options, calls the library and reports. Library errors
(`hypermosaic.errors`) and bad options become one line on stderr and their exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from hypermosaic import __version__
from hypermosaic.cli.build import build_command
from hypermosaic.cli.canvas import canvas_command
from hypermosaic.cli.explore import explore_command
from hypermosaic.cli.frame import frame_command
from hypermosaic.cli.paint import paint_command
from hypermosaic.cli.serve import serve_command
from hypermosaic.cli.upscale import upscale_command
from hypermosaic.cli.video import video_command
from hypermosaic.errors import HypermosaicError
from hypermosaic.progress import sigint_recorded

__all__ = ["main", "cli"]


class _Group(click.Group):
    """Turn library errors and bad options into a one-line message and the exit status."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:  # a bad option or argument: status 2
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted: nothing was written", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with sigint_recorded():
                return super().invoke(ctx)
        except HypermosaicError as exc:
            click.echo(f"{exc.prefix}{exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # a command with nothing to keep
            click.echo("interrupted: nothing was written", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="hypermosaic")
def cli() -> None:
    """Hypermosaics and ultra-large generated images."""


cli.add_command(build_command)
cli.add_command(serve_command)
cli.add_command(explore_command)
cli.add_command(video_command)
cli.add_command(canvas_command)
cli.add_command(upscale_command)
cli.add_command(frame_command)
cli.add_command(paint_command)


def main() -> None:
    """Console-script entry point.

    After Ctrl-C (status 130) the process ends at once, its one line printed: everything kept
    was written atomically and the pools were closed while the interrupt unwound, but native
    threads (libvips', torch's) may still be winding down, and letting the interpreter
    finalise under them can abort it ("terminate called without an active exception").
    """
    try:
        cli(prog_name="hypermosaic")
    except SystemExit as exc:
        if exc.code != 130:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
