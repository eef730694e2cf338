from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hypermosaic.cli import cli
from hypermosaic.images import MAX_INPUT_PIXELS
from hypermosaic.store import Store
from tests.helpers import png_claiming


def _write_config(tmp_path: Path, body: str, image: str | None = None) -> Path:
    image = image or str(Path(__file__).resolve().parents[2] / "examples/images/chelsea.png")
    path = tmp_path / "c.toml"
    path.write_text(f'size = 64\ngrid = 2\ndepth = 1\n[primary]\nimage = "{image}"\n{body}')
    return path


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["build", *args])


@pytest.mark.parametrize(
    ("body", "args", "message"),
    [
        ("[tiles]\nstrength = [", (), "malformed TOML"),
        ("colour = 1\n", (), "colour: unknown key"),
        ("", ("--depth", "-1"), "Invalid value for '--depth'"),
        ("[levels.1]\nsteps = -3\n", (), "levels.1.steps"),
        ("grid_ = 3\n", (), "grid_: unknown key"),
        ('[diffusion]\nmodel = "m"\ndevice = "gpu0"\n', ("--engine", "diffusion"),
         "diffusion.device: unknown device 'gpu0' (use auto, cpu, cuda, cuda:N or mps)"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, body, args, message):
    config = _write_config(tmp_path, body)
    out = tmp_path / "out"
    result = _invoke(str(config), "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_grid_that_does_not_divide_the_size(tmp_path):
    config = _write_config(tmp_path, "").read_text().replace("grid = 2", "grid = 3")
    (tmp_path / "c.toml").write_text(config)
    result = _invoke(str(tmp_path / "c.toml"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "grid: 3 does not divide size 64" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such image file"),
        (b"\x89PNG\r\n\x1a\n garbage " * 10, "not a readable image"),
        (png_claiming(100_000, 90_000), "pixels"),
        # just above our limit (and Pillow's, set to match): the message is our header check's
        (png_claiming(16_385, 16_384), "header claims 16385x16384 pixels, more than "
                                                f"the {MAX_INPUT_PIXELS:,} allowed"),
    ],
)
def test_bad_primary_image_exits_2_and_leaves_existing_output_untouched(tmp_path, content,
                                                                         message):
    image = tmp_path / "primary.png"
    if content is not None:
        image.write_bytes(content)
    config = _write_config(tmp_path, "", image=str(image))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = _invoke(str(config), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert str(image) in result.output and message in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"


def test_build_end_to_end_through_the_cli(tmp_path):
    config = _write_config(tmp_path, "[tiles]\nstrength = 0.5\n")
    out = tmp_path / "out"
    result = _invoke(str(config), "--out", str(out), "--workers", "1", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "5 nodes (5 computed, 0 reused)" in result.output
    assert (out / "mosaic.dzi").is_file() and (out / "preview.png").is_file()
    again = _invoke(str(config), "--out", str(out), "--workers", "1", "--seed", "5")
    assert again.exit_code == 0 and "(0 computed, 5 reused)" in again.output
    changed = _invoke(str(config), "--out", str(out), "--workers", "1", "--seed", "6")
    assert changed.exit_code == 2 and "use --force" in changed.output


def test_missing_diffusion_model_exits_2_before_writing(tmp_path):
    config = _write_config(tmp_path, f'[diffusion]\nmodel = "{tmp_path}/no-such-model"\n')
    config.write_text('engine = "diffusion"\n' + config.read_text())
    out = tmp_path / "out"
    result = _invoke(str(config), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "diffusion.model" in result.output and "no-such-model" in result.output
    assert not out.exists()


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_negative_depth_in_the_file_exits_2_naming_depth(tmp_path):
    config = _write_config(tmp_path, "")
    config.write_text(config.read_text().replace("depth = 1", "depth = -1"))
    out = tmp_path / "out"
    result = _invoke(str(config), "--out", str(out))
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "c.toml: depth: Input should be greater than or equal to 0" in line
    assert not out.exists()


def _missing(folder: Path) -> None:
    pass


def _empty(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")


def _unreadable(folder: Path) -> None:
    folder.mkdir()
    (folder / "a.png").write_bytes((Path(__file__).resolve().parents[2]
                                    / "examples/images/coffee.png").read_bytes())
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage " * 10)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "photos is not a folder of images"),
        (_empty, "photos holds no images"),
        (_unreadable, "b.png: not a readable image"),
    ],
)
def test_bad_recolor_source_exits_2_before_anything_is_written(tmp_path, make, message):
    folder = tmp_path / "photos"
    make(folder)
    config = _write_config(tmp_path, f'[recolor]\nsource = "{folder}"\n')
    out = tmp_path / "out"
    result = _invoke(str(config), "--out", str(out), "--workers", "1")
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert line.startswith("Error: recolor.source: ") and message in line
    assert not out.exists()


def test_a_tile_that_keeps_failing_exits_1_naming_it(tmp_path):
    config = _write_config(tmp_path, "[tiles]\nstrength = 0.5\n")
    out = tmp_path / "out"
    first = _invoke(str(config), "--out", str(out), "--workers", "1", "--no-publish")
    assert first.exit_code == 0, first.output
    Store(out).node_path(((1, 0),)).write_bytes(b"\x89PNG not really")
    result = _invoke(str(config), "--out", str(out), "--workers", "1", "--no-publish",
                     "--depth", "2")
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: 4 nodes failed (1_0/0_0, 1_0/0_1, 1_0/1_0, 1_0/1_1)")
    assert "failed node 1_0/1_1" in result.output
    assert Store(out).has(((0, 1), (1, 1)))


@pytest.mark.parametrize(("args", "message"), [
    (("--scheduler-address", "notaurl"), "--scheduler-address notaurl: not a scheduler "
                                         "address (missing port number in address 'notaurl')"),
    (("--device", "gpu0", "--engine", "diffusion", "--model", "m"),
     "diffusion.device: unknown device 'gpu0'"),
])
def test_bad_options_exit_2_before_anything_is_written(tmp_path, args, message):
    out = tmp_path / "out"
    result = _invoke(str(_write_config(tmp_path, "")), "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output
    assert not out.exists()


def test_an_output_folder_that_cannot_be_written_is_refused_before_work(tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "file.txt" / "out"
    result = _invoke(str(_write_config(tmp_path, "")), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: --out {out}: cannot write here (Not a directory)\n"


_SMALL = 'size = 64\ngrid = 4\ndepth = 3\n[primary]\nimage = "{image}"\n'


@pytest.mark.slow
def test_ctrl_c_is_one_line_status_130_and_no_worker_traceback(tmp_path, examples_dir):
    """A terminal sends Ctrl-C to the whole process group: the client and its workers."""
    config = tmp_path / "c.toml"
    config.write_text(_SMALL.format(image=examples_dir / "images" / "chelsea.png"))
    out = tmp_path / "out"
    build = subprocess.Popen(
        [sys.executable, "-m", "hypermosaic", "build", str(config), "--out", str(out),
         "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    nodes = out / "nodes"
    for _ in range(600):  # at most 60 s, leaving once enough nodes are written
        if build.poll() is not None or (nodes.is_dir() and len(list(nodes.rglob("*.png"))) > 80):
            break
        time.sleep(0.1)
    assert build.poll() is None, build.communicate()
    os.killpg(build.pid, signal.SIGINT)
    _, err = build.communicate(timeout=60)
    assert build.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.rstrip().splitlines()[-1] == (
        f"interrupted: finished nodes are kept in {out}; run the same command again to resume")
    assert len(list(nodes.rglob("*.png"))) > 80 and not list(out.rglob("*.tmp"))
