"""`hypermosaic paint` on the command line: its errors, before any work."""

from __future__ import annotations

from click.testing import CliRunner

from hypermosaic.cli import cli


def test_paint_needs_a_model_and_a_canvas_of_eights(tmp_path):
    runner = CliRunner()
    assert "semantic brushes" in runner.invoke(cli, ["paint", "--help"]).output
    missing = runner.invoke(cli, ["paint", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "--model: give the model" in missing.output
    odd = runner.invoke(cli, ["paint", "--model", "m", "--width", "100", "--out", str(tmp_path)])
    assert odd.exit_code == 2 and "--width: 100 is not a positive multiple of 8" in odd.output
    absent = runner.invoke(cli, ["paint", "--model", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path)])
    assert absent.exit_code == 2 and "--model" in absent.output
