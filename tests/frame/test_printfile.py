from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile
from PIL import Image, ImageCms

from hypermosaic.errors import InputError
from hypermosaic.frame.printfile import bleed_pixels, write_print

RNG = np.random.default_rng(14)
ART = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _description(profile: bytes) -> str:
    return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip()


@pytest.mark.parametrize("source", ["array", "vips"])
def test_tiff_carries_dpi_and_srgb_profile(tmp_path: Path, source: str) -> None:
    image = ART if source == "array" else pyvips.Image.new_from_array(ART)
    path = write_print(image, tmp_path / "print.tif", dpi=300)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.tags["XResolution"].value == (300, 1)
        assert page.tags["YResolution"].value == (300, 1)
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH
        assert page.is_tiled and not tif.is_bigtiff
        assert _description(page.tags["InterColorProfile"].value) == "sRGB"
    back = pyvips.Image.new_from_file(str(path))
    assert back.xres * 25.4 == pytest.approx(300, abs=1e-3)
    assert back.yres * 25.4 == pytest.approx(300, abs=1e-3)
    assert _description(back.get("icc-profile-data")) == "sRGB"
    assert np.array_equal(back.numpy(), ART)  # LZW: tifffile would need imagecodecs
    assert [p.name for p in tmp_path.iterdir()] == ["print.tif"]


def test_png_carries_phys_and_iccp(tmp_path: Path) -> None:
    path = write_print(ART, tmp_path / "print.png", dpi=240)
    with Image.open(path) as png:
        assert png.info["dpi"] == pytest.approx((240, 240), abs=0.01)  # whole pixels per metre
        assert _description(png.info["icc_profile"]) == "sRGB"
        assert np.array_equal(np.asarray(png), ART)


@pytest.mark.parametrize(("bleed_mm", "dpi"), [(3.0, 300), (5.0, 240), (0.5, 72), (0.0, 300)])
def test_bleed_adds_mirrored_pixels_per_side(tmp_path: Path, bleed_mm: float, dpi: int) -> None:
    pad = round(bleed_mm / 25.4 * dpi)
    assert bleed_pixels(bleed_mm, dpi) == pad
    path = write_print(ART, tmp_path / "print.tif", dpi=dpi, bleed_mm=bleed_mm)
    out = pyvips.Image.new_from_file(str(path)).numpy()
    assert out.shape == (48 + 2 * pad, 64 + 2 * pad, 3)
    assert np.array_equal(out[pad : pad + 48, pad : pad + 64], ART)  # the trim is unmoved
    if pad >= 2:
        assert np.array_equal(out[pad - 1, pad : pad + 64], ART[0])  # mirrored at the edge
        assert np.array_equal(out[pad : pad + 48, pad - 2], ART[:, 1])


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"dpi": 0}, "dpi"), ({"dpi": float("nan")}, "dpi"),
    ({"dpi": 300, "bleed_mm": -1}, "bleed"), ({"dpi": 300, "name": "print.jpg"}, ".jpg"),
])
def test_bad_arguments_write_nothing(tmp_path: Path, kwargs: dict, words: str) -> None:
    name = kwargs.pop("name", "print.tif")
    with pytest.raises(InputError, match=words):
        write_print(ART, tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("image", [ART.astype(np.float32), ART[..., :2],
                                   pyvips.Image.new_from_array(ART[..., 0])])
def test_bad_images_write_nothing(tmp_path: Path, image: np.ndarray | pyvips.Image) -> None:
    with pytest.raises(InputError, match="print image"):
        write_print(image, tmp_path / "print.tif", dpi=300)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    big = np.tile(ART, (40, 40, 1))
    src = tmp_path / "src.png"
    src.write_bytes(pyvips.Image.new_from_array(big).pngsave_buffer(compression=0)[:200_000])
    lazy = pyvips.Image.new_from_file(str(src), access="sequential", fail_on="error")
    with pytest.raises(InputError, match="cannot write the print"):
        write_print(lazy, tmp_path / "print.tif", dpi=300, bleed_mm=3)
    assert [p.name for p in tmp_path.iterdir()] == ["src.png"]


# A lazy side x side print written in a fresh process; prints the growth of its peak RSS (MiB).
_PEAK = """
import resource, sys
from pathlib import Path
import pyvips
from hypermosaic.frame.printfile import write_print
side = int(sys.argv[1])
xy = pyvips.Image.xyz(side, side)
grey = ((xy[0] ^ xy[1]) & 255).cast("uchar")
image = grey.bandjoin([grey, grey ^ 85])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_print(image, Path(sys.argv[2]), dpi=300, bleed_mm=3)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def _peak_growth_mib(side: int, path: Path) -> float:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(side), str(path)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout)


def _check_streamed(side: int, path: Path, cap_mib: float) -> None:
    growth = _peak_growth_mib(side, path)
    raw_mib = side * side * 3 / 2**20
    assert growth < cap_mib < raw_mib / 4, (growth, raw_mib)
    pad = bleed_pixels(3, 300)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.shape == (side + 2 * pad, side + 2 * pad, 3)
        assert tif.pages.first.tags["XResolution"].value == (300, 1)


@pytest.mark.slow
def test_print_streams_with_flat_memory(tmp_path: Path) -> None:
    """A 6000² print (103 MiB of pixels) grows peak RSS by a small bounded amount, and about
    as much as a 1500² one: memory does not follow the image size."""
    small = _peak_growth_mib(1500, tmp_path / "small.tif")
    _check_streamed(6000, tmp_path / "big.tif", cap_mib=small + 20)


@pytest.mark.slow
def test_print_larger_than_the_memory_cap(tmp_path: Path) -> None:
    """A 20000² print: 1.1 GiB of pixels written with under 100 MiB of RSS growth."""
    _check_streamed(20000, tmp_path / "huge.tif", cap_mib=100)
