"""Option checks shared by the commands, so an option means the same everywhere."""

from __future__ import annotations

import click

from hypermosaic.identity import check_device

__all__ = ["device_option"]


def device_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--device`` checked as every command and config checks a device (`check_device`)."""
    if value is None:
        return None
    try:
        return check_device(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
