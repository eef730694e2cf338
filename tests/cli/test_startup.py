"""`hypermosaic --help` stays quick: the command line imports the heavy libraries (Dask,
torch, libvips, pydantic's schemas) only in the command that runs."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from click.testing import CliRunner
from hypermosaic.cli import cli
for args in (["--help"], *([name, "--help"] for name in sorted(cli.commands))):
    assert CliRunner().invoke(cli, args).exit_code == 0, args
heavy = ("dask", "distributed", "torch", "diffusers", "pyvips", "av", "numpy")
print(sorted(name for name in heavy if name in sys.modules))
"""


def test_help_imports_no_heavy_library() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
