from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hypermosaic.cli import cli


def _png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _write_config(tmp_path: Path, body: str, image: str | None = None) -> Path:
    image = image or str(Path(__file__).resolve().parents[1] / "examples/images/chelsea.png")
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
        (_png_header_claiming(100_000, 90_000), "pixels"),
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
