"""Every command on a corpus of bad inputs (tests/bad_inputs/cases.toml): exit status 2, one
line naming the key or file, no traceback, and the output folder exactly as it was."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hypermosaic.cli import cli

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())["case"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.usefixtures("hypermosaic_cache")
@pytest.mark.parametrize("case", CASES, ids=[" ".join(c["args"][:2]) + f" #{i}"
                                              for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(case: dict, tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    (out / "keep.txt").write_text("the user's")
    before = _snapshot(out)
    args = [arg.format(corpus=CORPUS, out=out, tmp=scratch) for arg in case["args"]]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert case["message"] in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)
    assert _snapshot(out) == before
