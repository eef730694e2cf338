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
    ({"--refine-strength": "1"}, "options: frame.refine_strength: Input should be less than 1"),
    ({"--refine-scale": "1"},
     "options: frame.refine_scale: Input should be greater than or equal to 2"),
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


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_detail_pass_is_the_canvas_over_the_enlarged_artwork(photo: Path, tiny_dir: Path,
                                                              tmp_path: Path) -> None:
    """``refined.png`` ≡ the canvas of a background prompt over an image region holding the
    enlarged artwork (the config a user would write for `hypermosaic canvas`), and the print
    is made from it."""
    from hypermosaic import registry
    from hypermosaic.canvas import load_canvas_config, plan_canvas
    from hypermosaic.images import load_image, resize

    common = [str(photo), "--corners", CORNERS, "--size", "4x3cm", "--dpi", "60",
              "--prompt", "a deer", "--print-prompt", "a painted deer", "--model",
              str(tiny_dir), "--candidates", "1", "--steps", "4", "--upscaler", "bicubic",
              "--device", "cpu"]
    result = _frame(*common, "--refine-strength", "0.5", "--refine-scale", "3",
                    "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    refined = load_image(out / "refined.png")
    artwork = load_image(out / "artwork.png")
    # the tiny model's side is 64: the 64x48 artwork, 3x larger, is redrawn in 3x5 windows
    assert artwork.shape == (48, 64, 3) and refined.shape == (144, 192, 3)
    assert not list(out.glob(".refine-*")) and not list(out.glob(".enlarge-*"))

    (tmp_path / "enlarged.png").write_bytes(
        pyvips.Image.new_from_array(resize(artwork, 192, 144), interpretation="srgb")
        .write_to_buffer(".png"))
    (tmp_path / "canvas.toml").write_text(
        'seed = 0\nsteps = 4\nwidth = 192\nheight = 144\n'
        '[background]\nprompt = "a painted deer"\n'
        '[[regions]]\nkind = "image"\ntop = 0\nbottom = 144\nleft = 0\nright = 192\n'
        'image = "enlarged.png"\nstrength = 0.5\n')
    config = load_canvas_config(tmp_path / "canvas.toml",
                                {"model": str(tiny_dir), "device": "cpu"})
    pipe = registry.load_canvas_pipeline(str(tiny_dir), "cpu", "auto")
    np.testing.assert_array_equal(refined, registry.render_canvas(pipe, plan_canvas(config),
                                                                  None))
    assert np.abs(refined.astype(int) - resize(artwork, 192, 144)).mean() > 1

    plain = _frame(*common, "--out", str(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "plain" / "refined.png").exists()
    printed, unrefined = (pyvips.Image.new_from_file(str(folder / "print.tif")).numpy()
                          for folder in (out, tmp_path / "plain"))
    assert printed.shape == unrefined.shape and not np.array_equal(printed, unrefined)


def test_the_example_config_plans_on_its_photo(examples_dir: Path, tiny_dir: Path,
                                               inpaint_dir: Path) -> None:
    """examples/frame.toml's photo and corners are real: everything checked before work passes,
    with the tiny models standing in for the example's."""
    from hypermosaic.frame.run import prepare

    config = frame_config(examples_dir / "frame.toml", model=str(tiny_dir),
                          inpaint_model=str(inpaint_dir), upscaler="bicubic", device="cpu",
                          dtype="float32")
    prepared = prepare(config)
    assert prepared.photo.shape == (512, 768, 3)
    plan = prepared.plan
    assert plan.print.trim_px == (3543, 4724) and plan.print.bleed_px == 35
    assert plan.artwork_size == (48, 64) and plan.refined_size == (96, 128)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_another_choice_reuses_the_candidates(photo: Path, tiny_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run choosing another candidate inpaints nothing and prints what a fresh run
    with that choice prints; a changed prompt makes the candidates again."""
    from hypermosaic import registry

    common = [str(photo), "--corners", CORNERS, "--size", "4x3cm", "--dpi", "30",
              "--prompt", "a deer", "--model", str(tiny_dir), "--candidates", "2",
              "--steps", "2", "--upscaler", "bicubic", "--device", "cpu"]
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert _frame(*common, "--out", str(out)).exit_code == 0
    first = {p.name: p.read_bytes() for p in out.glob("candidate-*.png")}
    loads: list[int] = []
    engine = registry.inpaint_engine
    monkeypatch.setattr(registry, "inpaint_engine",
                        lambda settings: loads.append(1) or engine(settings))
    again = _frame(*common, "--choose", "2", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert loads == [] and first == {p.name: p.read_bytes() for p in out.glob("candidate-*.png")}
    assert _frame(*common, "--choose", "2", "--out", str(fresh)).exit_code == 0
    assert loads == [1]
    for name in ("rectified.png", "artwork.png"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    np.testing.assert_array_equal(*(pyvips.Image.new_from_file(str(folder / "print.tif"))
                                    .numpy() for folder in (out, fresh)))
    changed = _frame(*common, "--prompt", "a fox", "--out", str(out))
    assert changed.exit_code == 0 and loads == [1, 1]
