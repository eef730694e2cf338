"""`hypermosaic explore`: bad input is one line and exit status 2, before any pool starts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from hypermosaic.cli import cli
from hypermosaic.store import folder_lock

IMAGE = Path(__file__).resolve().parents[2] / "examples/images/chelsea.png"


def write_config(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'size = 64\ngrid = 2\ndepth = 1\nout = "out"\n[primary]\n'
                    f'image = "{IMAGE}"\n{body}')
    return path


def explore(*args: str):
    return CliRunner().invoke(cli, ["explore", *args, "--port", "0"])


def test_a_bad_config_is_one_line_naming_the_key(tmp_path):
    result = explore(str(write_config(tmp_path, "[tiles]\nstrength = 2\n")))
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "tiles.strength" in result.output
    assert result.output.count("\n") == 1
    missing = explore(str(tmp_path / "none.toml"))
    assert missing.exit_code == 2 and missing.output.count("\n") == 1


def test_a_store_of_other_settings_is_refused_before_any_work(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "out"
    (out / "nodes").mkdir(parents=True)
    (out / "manifest.json").write_text('{"version": 1, "fingerprints": {"0": "0000"}}')
    result = explore(str(config))
    assert result.exit_code == 2
    assert result.output == (f"Error: {out}: was built with different settings (the primary "
                             "image or the global settings changed); rebuild it with "
                             "hypermosaic build --force, or use another folder\n")
    assert sorted(p.name for p in out.iterdir()) == [".hypermosaic.lock", "manifest.json",
                                                      "nodes"]


def test_a_folder_another_run_holds_is_refused(tmp_path):
    config = write_config(tmp_path)
    with folder_lock(tmp_path / "out"):
        result = explore(str(config))
    assert result.exit_code == 2
    assert "in use by another hypermosaic run" in result.output
    assert result.output.count("\n") == 1
