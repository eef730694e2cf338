"""Errors the command line turns into one line and an exit status.

`InputError` is anything the user can fix (a config key, an image file, a model that is not
there, a full disk, an output folder in use): exit status 2, and by contract nothing already
written was touched. `BuildError` is work that ran and failed: exit status 1.
`hypermosaic.build.build_mosaic` lists tiles that kept failing in its result rather than
raising (everything else is kept and published), and ``hypermosaic build`` raises `BuildError`
from that result after its summary. `Interrupted` is Ctrl-C: exit status 130, its message says
what was kept and how to resume.
"""

from __future__ import annotations

__all__ = ["BuildError", "HypermosaicError", "InputError", "Interrupted"]


class HypermosaicError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1
    prefix = "Error: "


class InputError(HypermosaicError):
    """Bad input: a config key, a file, a model. The message names it."""

    exit_code = 2


class BuildError(HypermosaicError):
    """Work that ran and failed (the message names the failed nodes); whatever finished is kept."""

    exit_code = 1


class Interrupted(HypermosaicError):
    """Ctrl-C: the work in flight was dropped; the message says what is kept."""

    exit_code = 130
    prefix = "interrupted: "
