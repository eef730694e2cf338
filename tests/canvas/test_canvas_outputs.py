"""Canvas output files: the tiled BigTIFF route holds the same pixels as the PNG route."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import hypermosaic.canvas.outputs as canvas
from hypermosaic.canvas import CanvasJob
from hypermosaic.canvas.config import canvas_config_from_dict
from hypermosaic.canvas.outputs import write_outputs
from hypermosaic.canvas.plan import plan_canvas

HEIGHT, WIDTH = 296, 520  # not multiples of the 256 px TIFF tiles: edge tiles are partial


def job(tmp_path: Path, fmt: str) -> CanvasJob:
    config = canvas_config_from_dict(
        {"width": WIDTH, "height": HEIGHT, "format": fmt, "out": str(tmp_path / fmt),
         "regions": [{"top": 0, "bottom": HEIGHT, "left": 0, "right": WIDTH, "prompt": "p"}]},
        base=tmp_path, source="test",
    )
    return CanvasJob(config, plan_canvas(config))


def canvas_image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)


def read(path: Path):
    import pyvips

    image = pyvips.Image.new_from_file(str(path))
    return image, np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                             shape=(image.height, image.width, image.bands))


def test_tiff_format_writes_a_tiled_bigtiff_with_the_png_pixels(tmp_path):
    image = canvas_image()
    tiff = write_outputs(job(tmp_path, "tiff"), image, None)["image"]
    png = write_outputs(job(tmp_path, "png"), image, None)["image"]
    assert (tiff.name, png.name) == ("canvas-0.tif", "canvas-0.png")
    assert tiff.read_bytes()[:4] == b"II+\x00"  # little-endian BigTIFF (version 43)
    vips_tiff, tiff_pixels = read(tiff)
    assert (vips_tiff.get("tile-width"), vips_tiff.get("tile-height")) == (256, 256)
    assert vips_tiff.get("n-pages") == 1  # one full-resolution page, no pyramid
    assert np.array_equal(tiff_pixels, read(png)[1])
    assert np.array_equal(tiff_pixels, image)
    assert sorted(p.name for p in tiff.parent.iterdir()) == ["canvas-0.tif"]  # no temporaries


def test_auto_format_switches_to_tiff_beyond_png_pixels(tmp_path, monkeypatch):
    image = canvas_image()
    monkeypatch.setattr(canvas, "PNG_MAX_PIXELS", HEIGHT * WIDTH)
    assert write_outputs(job(tmp_path, "auto"), image, None)["image"].suffix == ".png"
    monkeypatch.setattr(canvas, "PNG_MAX_PIXELS", HEIGHT * WIDTH - 1)
    path = write_outputs(job(tmp_path, "auto"), image, None)["image"]
    assert path.suffix == ".tif" and np.array_equal(read(path)[1], image)

