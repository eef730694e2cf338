"""`hypermosaic frame` streams its print: a 60x60cm print grows peak RSS about as much as a 4x4cm
one, with bicubic resampling and with a tiny ESRGAN model; the print's size, DPI and profile and
the preview outside the frame stay right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from hypermosaic.frame import frame_config, plan_frame
from hypermosaic.frame.sizes import print_size
from hypermosaic.frame.steps import quad_mask
from tests.helpers import save_srvgg

CORNERS = "30,10 70,14 68,50 28,48"
PHOTO_SIZE = (96, 64)
DPI = 150
BLEED_MM = 3

# One frame run in a fresh process; prints the growth of its peak RSS (MiB) past the imports.
_PEAK = """
import resource, sys
import diffusers, torch
from hypermosaic.cli import cli
torch.set_num_threads(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cli.main(["frame", *sys.argv[1:]], standalone_mode=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("frame") / "room.png"
    pyvips.Image.new_from_array(image, interpretation="srgb").write_to_file(str(path))
    return path


def _peak_growth_mib(photo: Path, model: Path, upscaler: str, size: str, out: Path) -> float:
    args = [str(photo), "--corners", CORNERS, "--size", size, "--dpi", str(DPI),
            "--bleed", str(BLEED_MM), "--prompt", "a deer", "--model", str(model),
            "--candidates", "1", "--steps", "1", "--upscaler", upscaler, "--device", "cpu",
            "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def _check_outputs(photo: Path, out: Path, size: str) -> None:
    expected = print_size(size, DPI, BLEED_MM).pixels
    with tifffile.TiffFile(out / "print.tif") as tif:
        page = tif.pages.first
        assert page.shape == (expected[1], expected[0], 3) and page.is_tiled
        assert page.tags["XResolution"].value == (DPI, 1)
        assert page.tags["InterColorProfile"].value == pyvips.Image.profile_load("srgb")
    room = pyvips.Image.new_from_file(str(photo)).numpy()
    preview = pyvips.Image.new_from_file(str(out / "on-the-wall.png")).numpy()
    corners = plan_frame(frame_config(None, photo=photo, corners=CORNERS, size=size,
                                      prompt="p", model="m"), PHOTO_SIZE, None, 64).corners
    outside = quad_mask(corners, *PHOTO_SIZE, grow=0) == 0
    np.testing.assert_array_equal(preview[outside], room[outside])
    assert not np.array_equal(preview, room)
    assert not list(out.glob(".enlarge-*")) and not list(out.glob(".*.tmp"))


# (upscaler, small size): with ESRGAN the small print takes as many passes as the large one
# (64 -> 256 -> 1024 px), so that both hold the same model tiles and only the print differs.
@pytest.mark.slow
@pytest.mark.parametrize(("upscaler", "small_size"), [("bicubic", "4x4cm"), ("esrgan", "20x20cm")])
def test_large_print_streams_with_flat_memory(upscaler: str, small_size: str, photo: Path,
                                              tiny_dir: Path, tmp_path: Path) -> None:
    """60x60cm at 150 dpi (3543² + bleed, 36 MiB of pixels) grows peak RSS by under 8 MiB more
    than a small print does: the enlargement, resampling and bleed never hold the print."""
    name = str(save_srvgg(tmp_path / "tiny-x4.safetensors", 4)) if upscaler == "esrgan" \
        else upscaler
    runs = ((small_size, tmp_path / "small"), ("60x60cm", tmp_path / "large"))
    small, large = (_peak_growth_mib(photo, tiny_dir, name, size, out) for size, out in runs)
    assert large - small < 8 < 3543 * 3543 * 3 / 2**20 / 4, (small, large)
    for size, out in runs:
        _check_outputs(photo, out, size)
