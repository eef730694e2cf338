"""`hypermosaic frame` end to end with the tiny models: candidates, print file, preview; bad
input refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from click.testing import CliRunner, Result

from hypermosaic.cli import cli
from hypermosaic.frame import frame_config, plan_frame
from hypermosaic.frame.sizes import print_size
from hypermosaic.frame.steps import quad_mask

CORNERS = "30,10 70,14 68,50 28,48"
PHOTO_SIZE = (96, 64)


def _save(image: np.ndarray, path: Path) -> Path:
    pyvips.Image.new_from_array(image, interpretation="srgb").write_to_file(str(path))
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8)
    return _save(image, tmp_path_factory.mktemp("frame") / "room.png")


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import save_tiny_inpaint_pipeline

    return save_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-inpaint")


def _frame(*args: str) -> Result:
    return CliRunner().invoke(cli, ["frame", *args])


@pytest.mark.usefixtures("one_torch_thread")
def test_frame_writes_candidates_print_and_preview(photo: Path, tiny_dir: Path,
                                                   inpaint_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _frame(str(photo), "--corners", CORNERS, "--size", "4x3cm", "--dpi", "60",
                    "--bleed", "2", "--prompt", "a deer", "--print-prompt", "a painted deer",
                    "--model", str(tiny_dir), "--inpaint-model", str(inpaint_dir),
                    "--candidates", "2", "--choose", "2", "--steps", "2",
                    "--colour-fix", "0.5", "--upscaler", "bicubic", "--device", "cpu",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("candidate-*.png")) == [
        "candidate-1-seed-0.png", "candidate-2-seed-1.png"]
    # the print: size x dpi + bleed on both sides, its DPI and sRGB profile read back
    printed = pyvips.Image.new_from_file(str(out / "print.tif"))
    size = print_size("4x3cm", 60, 2)
    assert (printed.width, printed.height) == size.pixels == (94 + 2 * 5, 71 + 2 * 5)
    assert printed.xres * 25.4 == pytest.approx(60) and printed.yres * 25.4 == pytest.approx(60)
    assert printed.get("icc-profile-data") == pyvips.Image.profile_load("srgb")
    # the preview: outside the frame byte-identical to the photo
    room = pyvips.Image.new_from_file(str(photo)).numpy()
    preview = pyvips.Image.new_from_file(str(out / "on-the-wall.png")).numpy()
    corners = plan_frame(frame_config(None, photo=photo, corners=CORNERS, size="4x3cm",
                                      prompt="p", model="m"), PHOTO_SIZE, None, 64).corners
    outside = quad_mask(corners, *PHOTO_SIZE, grow=0) == 0
    assert outside.sum() > PHOTO_SIZE[0] * PHOTO_SIZE[1] // 2
    np.testing.assert_array_equal(preview[outside], room[outside])
    assert not np.array_equal(preview, room)
    for name in ("rectified.png", "artwork.png"):
        assert (out / name).is_file()
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(("change", "message"), [
    ({"--corners": "30,10 100,14 68,50 28,48"},
     "frame.corners: corner (100, 14) is outside the 96x64 photo (x in 0..95, y in 0..63)"),
    ({"--corners": "10,10 50,50 50,10 10,50"},
     "frame.corners: the quadrilateral intersects itself"),
    ({"--corners": None, "--mask": "small"}, "frame.mask: the mask is 48x32, the photo 96x64"),
    ({"--corners": None, "--mask": "empty"}, "frame.mask: the mask is empty (no pixel is on)"),
    ({"--size": "50x70ft"},
     "frame.size: unknown unit 'ft' in '50x70ft' (use mm, cm, in or \")"),
    ({"--dpi": "0"}, "frame.dpi: must be a finite number > 0, got 0.0"),
    ({"--dpi": "-300"}, "frame.dpi: must be a finite number > 0, got -300.0"),
    ({"photo": "missing.png"}, "{tmp}/missing.png: no such image file"),
    ({"--model": "{tmp}/none"}, "frame.model: {tmp}/none: no such file or directory"),
    ({"--choose": "5"}, "frame.choose: candidate 5 is not made (frame.candidates = 4)"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(
    change: dict[str, str | None], message: str, photo: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    masks = {"small": np.zeros((32, 48, 3), np.uint8), "empty": np.zeros((64, 96, 3), np.uint8)}
    options: dict[str, str | None] = {"--corners": CORNERS, "--size": "4x3cm",
                                      "--prompt": "a deer", "--model": str(tiny_dir)}
    options.update({key: value and value.format(tmp=tmp_path) for key, value in change.items()})
    if options.get("--mask") in masks:
        options["--mask"] = str(_save(masks[str(options["--mask"])], tmp_path / "mask.png"))
    photo_arg = str(tmp_path / str(options.pop("photo"))) if "photo" in options else str(photo)
    args = [photo_arg, "--out", str(tmp_path / "out")]
    args += [item for key, value in options.items() if value is not None
             for item in (key, value)]
    result = _frame(*args)
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message.format(tmp=tmp_path)}\n"
    assert not (tmp_path / "out").exists()


def test_config_file_keys_and_unknown_key(photo: Path, tmp_path: Path) -> None:
    config = tmp_path / "frame.toml"
    config.write_text(f'[frame]\nphoto = "{photo}"\ncorners = [[30, 10], [70, 14], [68, 50], '
                      '[28, 48]]\nsize = "50x70cm"\nprompt = "a deer"\nmodel = "m"\n'
                      'out = "prints"\n')
    loaded = frame_config(config, dpi=240.0)
    assert loaded.dpi == 240 and loaded.out == tmp_path / "prints"
    assert plan_frame(loaded, PHOTO_SIZE, None, 64).print.trim_px == (4724, 6614)
    config.write_text(config.read_text() + "colour = 1\n")
    result = _frame("--config", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output == (f"Error: {config}: frame.colour: unknown key (check the "
                             "spelling; see docs/print.md)\n")
    assert not (tmp_path / "out").exists()
