"""Errors the command line turns into one line and an exit status.

`InputError` is anything the user can fix (a config key, an image file, a model that is not
there): exit status 2, and by contract nothing already written was touched. `BuildError` is
work that ran and failed (tiles that kept failing): exit status 1.
"""

from __future__ import annotations

__all__ = ["HypermosaicError", "InputError", "BuildError"]


class HypermosaicError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


class InputError(HypermosaicError):
    """Bad input: a config key, a file, a model. The message names it."""

    exit_code = 2


class BuildError(HypermosaicError):
    """Work that ran and failed; whatever finished is kept."""

    exit_code = 1
