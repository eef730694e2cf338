"""Tiled upscaling and the streamed file path: two routes to the same answer each time."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.pipelines import esrgan
from hypermosaic.pipelines.tiled_upscale import (
    axis_weights,
    tile_grid,
    tile_windows,
    upscale_array,
)
from hypermosaic.upscale import plan_jobs, upscale_file, upscale_files

pytestmark = pytest.mark.usefixtures("hypermosaic_cache", "one_torch_thread")


def _photo(height: int, width: int) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:height, :width])


def _save(image: np.ndarray, path: Path) -> Path:
    pyvips.Image.new_from_array(image, interpretation="srgb").write_to_file(str(path))
    return path


def _read(path: Path) -> np.ndarray:
    return pyvips.Image.new_from_file(str(path)).numpy()


@pytest.fixture(scope="module")
def fast() -> esrgan.Upscaler:
    return esrgan.load_upscaler("fast", device="cpu")


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    """A small seeded SRVGGNetCompact x2 as a user's .safetensors: quick on any worker."""
    torch.manual_seed(0)
    model = esrgan.SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2)
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), path)
    return path


def test_windows_cover_the_axis_with_overlap() -> None:
    for length in range(1, 300, 7):
        for tile, overlap in [(32, 8), (48, 16), (64, 32), (100, 33)]:
            windows = tile_windows(length, tile, overlap)
            assert windows[0][0] == 0 and windows[-1][1] == length
            assert all(stop - start == min(tile, length) for start, stop in windows)
            for (a0, a1), (b0, _) in zip(windows, windows[1:], strict=False):
                assert a0 < b0 and a1 - b0 >= overlap
    assert tile_grid(40, 70, 32, 8)[:3] == [(0, 32, 0, 32), (0, 32, 19, 51), (0, 32, 38, 70)]
    with pytest.raises(InputError, match="tile: 16"):
        tile_windows(100, 16, 16)


def test_feather_weights_are_a_partition_of_unity() -> None:
    for length in (33, 64, 97, 250):
        for tile, overlap, scale in [(32, 8, 4), (48, 16, 2), (64, 32, 4)]:
            windows = tile_windows(length, tile, overlap)
            weights = axis_weights(windows, overlap, scale)
            total = np.zeros(length * scale)
            for (start, stop), w in zip(windows, weights, strict=True):
                assert w.min() >= 0
                total[start * scale : stop * scale] += w
            np.testing.assert_allclose(total, 1.0, atol=1e-6)
            if len(windows) > 1:  # the outer quarter of an overlap carries no weight
                assert np.all(weights[1][: (overlap // 4) * scale] == 0)


def test_tiled_equals_untiled_fast_model(fast: esrgan.Upscaler) -> None:
    image = _photo(96, 128)
    whole = upscale_array(fast, image, tile=512)
    tiled = upscale_array(fast, image, tile=64, overlap=32)
    assert whole.shape == tiled.shape == (384, 512, 3)
    difference = np.abs(whole.astype(int) - tiled.astype(int))
    assert difference.max() <= 1  # one level of rounding: no seams
    assert difference.mean() < 0.01


def test_tiled_close_to_untiled_x4plus() -> None:
    """RRDBNet sees far: tiles differ slightly from the whole, but stay within 40 dB and
    show no seam (the error along tile borders is no worse than elsewhere)."""
    upscaler = esrgan.load_upscaler("x4plus", device="cpu")
    image = _photo(48, 48)[:, :]
    whole = upscale_array(upscaler, image, tile=64).astype(float)
    tiled = upscale_array(upscaler, image, tile=32, overlap=16).astype(float)
    mse = np.mean((whole - tiled) ** 2)
    assert 10 * np.log10(255**2 / mse) >= 40.0


class _RunsOutOfMemory(torch.nn.Module):
    """Wraps a model and fails like CUDA would on inputs larger than `limit` pixels a side."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit, self.scale = model, limit, model.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x)


def test_out_of_memory_halves_the_tile(fast: esrgan.Upscaler) -> None:
    image = _photo(64, 80)
    flaky = esrgan.Upscaler(_RunsOutOfMemory(fast.model, 40), 4, fast.device, fast.dtype,
                            tile=64, name="flaky")
    result = upscale_array(flaky, image, tile=64, overlap=16).astype(float)
    assert flaky.tile == 32  # halved once, and kept for the later tiles
    reference = upscale_array(fast, image, tile=512).astype(float)
    assert 10 * np.log10(255**2 / np.mean((result - reference) ** 2)) >= 45.0


def test_streamed_file_matches_in_memory_within_a_memory_budget(
    fast: esrgan.Upscaler, tmp_path: Path
) -> None:
    """A tall image whose output (6.3 MB) is three times the budget streams through in bands.

    The budget bounds what numpy allocates (tracemalloc sees it; torch and libvips buffers
    are per tile and per strip, also independent of the image height).
    """
    budget = 2_000_000
    strip = _photo(512, 64)
    image = np.concatenate([strip, strip[::-1], strip, strip[::-1]])
    src = _save(image, tmp_path / "tall.png")
    (job,) = plan_jobs([src], tmp_path / "tall_x4.tif", "fast")
    assert job.height * 4 * job.width * 4 * 3 > 3 * budget
    tracemalloc.start()
    try:
        upscale_file(job, fast, tile=48, overlap=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget
    streamed = pyvips.Image.new_from_file(str(job.dst))
    assert (streamed.width, streamed.height) == (256, 8192)
    in_memory = upscale_array(fast, image, tile=48, overlap=16)
    crop = streamed.crop(50, 5000, 200, 400).numpy()
    np.testing.assert_array_equal(crop, in_memory[5000:5400, 50:250])


def test_several_images_on_dask_skip_finished(
    tiny_model: Path, tmp_path: Path, dask_client
) -> None:
    inputs = [_save(_photo(40, 56), tmp_path / "a.png"), _save(_photo(56, 40), tmp_path / "b.png")]
    jobs = plan_jobs(inputs, tmp_path / "out", str(tiny_model), fmt="png")
    seen: list[tuple[int, int]] = []
    written = upscale_files(jobs, str(tiny_model), tile=32, overlap=8,
                            scheduler_address=dask_client.scheduler.address,
                            progress=lambda done, total: seen.append((done, total)))
    assert sorted(written) == [tmp_path / "out" / "a.png", tmp_path / "out" / "b.png"]
    upscaler = esrgan.load_upscaler(tiny_model, device="cpu")
    for src, dst in zip(inputs, written, strict=True):
        expected = upscale_array(upscaler, _read(src), tile=32, overlap=8)
        np.testing.assert_array_equal(_read(dst), expected)
    assert seen[0] == (0, 8) and seen[-1] == (8, 8)
    assert upscale_files(jobs, str(tiny_model), tile=32) == []


def test_cli_upscales_and_reduces_scale(tiny_model: Path, tmp_path: Path) -> None:
    src = _save(_photo(30, 50), tmp_path / "in.png")
    result = CliRunner().invoke(cli, ["upscale", str(src), "--model", str(tiny_model),
                                      "--out", str(tmp_path / "out.jpg"), "--tile", "32"])
    assert result.exit_code == 0, result.output
    assert _read(tmp_path / "out.jpg").shape == (60, 100, 3)
    result = CliRunner().invoke(cli, ["upscale", str(src), "--model", "fast", "--scale", "2",
                                      "--out", str(tmp_path / "half.dzi")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "half_files").is_dir()
    descriptor = (tmp_path / "half.dzi").read_text()
    assert 'Width="100"' in descriptor and 'Height="60"' in descriptor


def _absurd_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(data, zlib.crc32(kind))
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1_000_000, 1_000_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_cli_bad_input_exits_2_and_leaves_no_output(tmp_path: Path) -> None:
    good = _save(_photo(200, 200), tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    cases = [
        ([str(good), "--model", "x8"], "--model: unknown model 'x8'"),
        ([str(good), "--model", "fast", "--out", str(good)], "would overwrite its input"),
        ([str(_absurd_png(tmp_path / "absurd.png")), "--model", "fast"], "header claims"),
        ([str(garbage), "--model", "fast"], "not a readable image"),
        ([str(truncated), "--model", "fast", "--tile", "64"], "truncated or corrupt"),
        ([str(good), "--model", "fast", "--scale", "8"], "--scale 8.0"),
    ]
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "result.tif")]
        result = CliRunner().invoke(cli, ["upscale", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "Error: " in result.output and message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["good.png", "truncated.png", "garbage.jpg", "absurd.png"]
    )
