"""The ``wrap`` key: validated at load, planned, and a 360° panorama's metadata and viewer page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hypermosaic.canvas import CanvasJob
from hypermosaic.canvas.config import canvas_config_from_dict
from hypermosaic.canvas.jobs import check_windows
from hypermosaic.canvas.outputs import write_outputs
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.canvas.wrap import gpano_xmp, is_photo_sphere
from hypermosaic.cli import cli
from hypermosaic.errors import InputError

PANORAMA = """width = 256
height = 128
wrap = "x"
[background]
prompt = "a mountain valley at dawn, 360 panorama"
"""


def config(tmp_path: Path, **raw):
    base = {"width": 256, "height": 128, "out": str(tmp_path / "out"),
            "background": {"prompt": "a valley"}}
    return canvas_config_from_dict({**base, **raw}, base=tmp_path, source="t.toml")


def test_wrap_is_off_by_default_and_planned():
    assert config(Path(".")).wrap == "none"
    assert plan_canvas(config(Path("."))).wrap == "none"
    for wrap in ("x", "xy"):
        assert plan_canvas(config(Path("."), wrap=wrap)).wrap == wrap


@pytest.mark.parametrize(("raw", "message"), [
    ({"wrap": "y"}, "t.toml: wrap: "),
    ({"wrap": "x", "window_size": 512}, 't.toml: wrap: "x" needs a width of at least the 512 px '
                                        "window (the width is 256 px)"),
    ({"wrap": "xy", "window_size": 192}, 't.toml: wrap: "xy" needs a height of at least the '
                                         "192 px window (the height is 128 px)"),
    ({"wrap": "x", "background": None, "grid": {"prompt": [["a", "b"]], "tile_width": 128,
                                                "tile_height": 128, "tile_col_overlap": 0,
                                                "tile_row_overlap": 0}},
     "t.toml: wrap: \"x\" needs regions or a [background]; a [grid]'s tiles"),
])
def test_a_wrap_the_canvas_cannot_close_is_one_line_naming_wrap(tmp_path, raw, message):
    with pytest.raises(InputError) as error:
        config(tmp_path, **raw)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_models_native_window_is_checked_before_any_work(tmp_path):
    check_windows(config(tmp_path, wrap="xy"), 128)
    with pytest.raises(InputError, match=r'^t.toml: wrap: "xy" needs a height of at least the '
                                         r"256 px window"):
        check_windows(config(tmp_path, wrap="xy"), 256)


def test_a_bad_wrap_exits_2_with_one_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("window_size = 128\n" + PANORAMA.replace("width = 256", "width = 64")
                    .replace("height = 128", "height = 32"))
    result = CliRunner().invoke(cli, ["canvas", str(path), "--model", "m"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {path}: wrap: ") and result.output.count("\n") == 1


def test_only_a_2_to_1_panorama_wrapped_in_x_is_a_photo_sphere():
    assert is_photo_sphere("x", 128, 256)
    assert not is_photo_sphere("x", 128, 384)  # cylindrical
    assert not is_photo_sphere("xy", 128, 256)  # a texture
    assert not is_photo_sphere("none", 128, 256)
    xmp = gpano_xmp(256, 128).decode()
    assert 'GPano:ProjectionType="equirectangular"' in xmp
    assert 'GPano:FullPanoWidthPixels="256"' in xmp and 'GPano:FullPanoHeightPixels="128"' in xmp


def read_xmp(path: Path) -> bytes | None:
    import pyvips

    image = pyvips.Image.new_from_file(str(path))
    return image.get("xmp-data") if image.get_typeof("xmp-data") else None


def test_a_panorama_carries_gpano_xmp_and_gets_a_360_viewer_page(tmp_path):
    cfg = config(tmp_path, wrap="x", upscale=4)
    image = np.random.default_rng(0).integers(0, 256, (128, 256, 3)).astype(np.uint8)
    upscaled = np.repeat(np.repeat(image, 4, 0), 4, 1)
    outputs = write_outputs(CanvasJob(cfg, plan_canvas(cfg)), image, upscaled)
    for kind in ("image", "upscaled"):
        xmp = read_xmp(outputs[kind])
        assert xmp is not None and b'GPano:ProjectionType="equirectangular"' in xmp
    assert b'GPano:FullPanoWidthPixels="1024"' in (read_xmp(outputs["upscaled"]) or b"")
    page = outputs["panorama"].read_text()
    assert outputs["panorama"].name == "canvas-0.html"
    assert '"canvas-0-x4.png"' in page and 'type: "equirectangular"' in page
    for name in ("pannellum.js", "pannellum.css", "COPYING"):
        assert (tmp_path / "out" / "pannellum" / name).stat().st_size > 0
    assert "Permission is hereby granted" in (tmp_path / "out" / "pannellum" / "COPYING"
                                              ).read_text()  # the MIT licence, kept


@pytest.mark.parametrize("raw", [{"wrap": "x", "width": 384}, {"wrap": "xy"}, {}])
def test_other_canvases_get_no_panorama_metadata_or_page(tmp_path, raw):
    cfg = config(tmp_path, **raw)
    image = np.zeros((cfg.size[0], cfg.size[1], 3), np.uint8)
    outputs = write_outputs(CanvasJob(cfg, plan_canvas(cfg)), image, None)
    assert read_xmp(outputs["image"]) is None and "panorama" not in outputs


@pytest.mark.parametrize(("name", "wrap"), [("panorama", "x"), ("texture", "xy")])
def test_the_examples_plan(name, wrap):
    from hypermosaic.canvas import load_canvas_config

    cfg = load_canvas_config(Path(__file__).parents[2] / "examples" / f"{name}.toml")
    assert cfg.wrap == wrap and plan_canvas(cfg).wrap == wrap
    check_windows(cfg, 512)  # Stable Diffusion 1.x's native window fits
    assert is_photo_sphere(cfg.wrap, *cfg.size) == (name == "panorama")
