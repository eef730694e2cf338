"""Tiled upscaling and the streamed file path: two routes to the same answer each time."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from click.testing import CliRunner

from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.pipelines.esrgan import upscaler as esrgan
from hypermosaic.pipelines.esrgan.tiled import axis_weights, upscale_array
from hypermosaic.progress import Progress
from hypermosaic.store import LOCK_NAME
from hypermosaic.tiling import tile_windows
from hypermosaic.upscale import plan_jobs, upscale_file, upscale_files, upscale_images
from tests.helpers import astronaut, png_claiming, save_srvgg

pytestmark = pytest.mark.usefixtures("hypermosaic_cache", "one_torch_thread")


def _save(image: np.ndarray, path: Path) -> Path:
    pyvips.Image.new_from_array(image, interpretation="srgb").write_to_file(str(path))
    return path


def _read(path: Path) -> np.ndarray:
    return pyvips.Image.new_from_file(str(path)).numpy()


@pytest.fixture(scope="module")
def fast() -> esrgan.Upscaler:
    return esrgan.load_upscaler("fast", device="cpu", dtype="float32")


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    return save_srvgg(tmp_path / "tiny.safetensors", 2)


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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiled_equals_untiled_fast_model(dtype: str) -> None:
    fast = esrgan.load_upscaler("fast", device="cpu", dtype=dtype)
    image = astronaut(96, 128)
    whole = upscale_array(fast, image, tile=512)
    tiled = upscale_array(fast, image, tile=64, overlap=32)
    assert whole.shape == tiled.shape == (384, 512, 3)
    difference = np.abs(whole.astype(int) - tiled.astype(int))
    assert difference.max() <= 1  # one level of rounding: no seams
    assert difference.mean() < 0.01


def test_tiled_close_to_untiled_x4plus() -> None:
    """RRDBNet sees far: tiles differ slightly from the whole, but stay within 40 dB PSNR and
    show no seam: in the cross-fade bands, where one tile hands over to the next, the mean
    squared error is at most 1.25 times that away from them (measured: about 0.75 times)."""
    upscaler = esrgan.load_upscaler("x4plus", device="cpu", dtype="float32")
    image = astronaut(48, 48)
    whole = upscale_array(upscaler, image, tile=64).astype(float)
    tiled = upscale_array(upscaler, image, tile=32, overlap=16).astype(float)
    squared = ((whole - tiled) ** 2).mean(axis=2)
    assert 10 * np.log10(255**2 / squared.mean()) >= 40.0
    (_, first_stop), (second_start, _) = tile_windows(48, 32, 16)
    pad = 16 // 4  # the feather gives no weight over the outer quarter of an overlap
    fade = np.zeros(48 * 4, bool)
    fade[(second_start + pad) * 4 : (first_stop - pad) * 4] = True  # weights ramp here
    seams = fade[:, None] | fade[None, :]  # the same windows along both axes
    assert 0 < seams.mean() < 1
    assert squared[seams].mean() <= 1.25 * squared[~seams].mean()


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
    image = astronaut(64, 80)
    flaky = esrgan.Upscaler(_RunsOutOfMemory(fast.model, 40), 4, fast.device, fast.dtype,
                            tile=64, name="flaky")
    result = upscale_array(flaky, image, tile=64, overlap=16).astype(float)
    assert flaky.tile == 32  # halved once, and kept for the later tiles
    reference = upscale_array(fast, image, tile=512).astype(float)
    assert 10 * np.log10(255**2 / np.mean((result - reference) ** 2)) >= 45.0


@pytest.mark.slow
def test_streamed_file_matches_in_memory_within_a_memory_budget(
    fast: esrgan.Upscaler, tmp_path: Path
) -> None:
    """A tall image whose output (6.3 MB) is three times the budget streams through in bands.

    The budget bounds what numpy allocates (tracemalloc sees numpy only; libvips and torch
    memory is bounded by `test_streamed_peak_rss_does_not_grow_with_the_image`).
    """
    budget = 2_000_000
    strip = astronaut(512, 64)
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


# Runs in a fresh process: upscales a short image of the same width first (thread pools,
# allocator arenas, one band's buffers), resets the peak (writing 5 to clear_refs), then
# reports how far the peak RSS (VmHWM) rose above the resident size during the tall upscale.
_RSS_CHILD = """
import re, sys
from pathlib import Path
import torch
from hypermosaic.pipelines.esrgan.upscaler import load_upscaler
from hypermosaic.upscale import plan_jobs, upscale_file
torch.set_num_threads(1)
def kib(key):
    return int(re.search(key + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
model, warm, tall, folder = sys.argv[1:5]
upscaler = load_upscaler(model, device="cpu", dtype="float32")
for src in (warm, tall):
    (job,) = plan_jobs([src], Path(folder) / (Path(src).stem + ".tif"), model)
    if src == tall:
        Path("/proc/self/clear_refs").write_text("5")
        before = kib("VmRSS")
    upscale_file(job, upscaler, tile=64, overlap=16)
print(kib("VmHWM") - before)
"""


@pytest.mark.slow
def test_streamed_peak_rss_does_not_grow_with_the_image(tmp_path: Path) -> None:
    """A 1024 x 32768 output (100 MB raw) raises the peak RSS of the process (numpy, torch and
    libvips together) by less than a quarter of its raw size over that of a 1024 x 2048 one:
    were libvips to buffer the image, it would rise by the whole 100 MB (measured: 10 MB
    streamed, 99 MB with the stream copied into memory)."""
    model = save_srvgg(tmp_path / "tiny_x4.safetensors", 4)
    photo = pyvips.Image.new_from_array(astronaut(512, 256), interpretation="srgb")
    tall = tmp_path / "tall.png"
    photo.replicate(1, 16).pngsave(str(tall), compression=1)
    warm = tmp_path / "warm.png"
    photo.pngsave(str(warm), compression=1)
    # Two malloc arenas: glibc otherwise gives each thread (libvips', the writer's) an arena of
    # its own, and their fragments (20-35 MiB here, whatever the image height) hide the signal.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    result = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(model), str(warm), str(tall), str(tmp_path)],
        capture_output=True, text=True, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    growth = int(result.stdout.strip().splitlines()[-1]) * 1024
    output = pyvips.Image.new_from_file(str(tmp_path / "tall.tif"))
    assert (output.width, output.height) == (1024, 32768)
    raw = output.width * output.height * 3
    assert growth < raw / 4, f"peak RSS rose {growth / 2**20:.0f} MiB for {raw / 2**20:.0f} MiB"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_several_images_on_dask_skip_finished(
    tiny_model: Path, tmp_path: Path, dask_client, dtype: str
) -> None:
    """Workers run the asked dtype (one of the two differs from ``auto`` on any CPU)."""
    inputs = [_save(astronaut(40, 56), tmp_path / "a.png"),
              _save(astronaut(56, 40), tmp_path / "b.png")]
    jobs = plan_jobs(inputs, tmp_path / "out", str(tiny_model), fmt="png")
    seen: list[tuple[int, int]] = []
    written = upscale_files(jobs, str(tiny_model), tile=32, overlap=8,
                            scheduler_address=dask_client.scheduler.address, dtype=dtype,
                            progress=lambda event: seen.append((event.done, event.total)))
    assert sorted(written) == [tmp_path / "out" / "a.png", tmp_path / "out" / "b.png"]
    upscaler = esrgan.load_upscaler(tiny_model, device="cpu", dtype=dtype)
    for src, dst in zip(inputs, written, strict=True):
        expected = upscale_array(upscaler, _read(src), tile=32, overlap=8)
        np.testing.assert_array_equal(_read(dst), expected)
    # Every tile reported by a worker arrives, one by one, and no final call papers over any.
    assert seen == [(done, 8) for done in range(9)]
    assert upscale_files(jobs, str(tiny_model), tile=32, overlap=8, dtype=dtype) == []


def test_cli_upscales_and_reduces_scale(tiny_model: Path, tmp_path: Path) -> None:
    src = _save(astronaut(30, 50), tmp_path / "in.png")
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


def test_cli_dtype_reaches_the_model(tiny_model: Path, tmp_path: Path) -> None:
    """``--dtype float32`` gives the float32 upscaler's pixels; a bad name exits 2."""
    src = _save(astronaut(30, 50), tmp_path / "in.png")
    args = ["upscale", str(src), "--model", str(tiny_model), "--tile", "32"]
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.png"
        result = CliRunner().invoke(cli, [*args, "--out", str(out), "--dtype", dtype])
        assert result.exit_code == 0, result.output
        upscaler = esrgan.load_upscaler(tiny_model, device="cpu", dtype=dtype)
        np.testing.assert_array_equal(_read(out), upscale_array(upscaler, _read(src), tile=32))
    assert not np.array_equal(_read(tmp_path / "float32.png"), _read(tmp_path / "bfloat16.png"))
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x.png"), "--dtype", "half"])
    assert result.exit_code == 2 and "--dtype" in result.output
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(InputError, match="--dtype: unknown dtype 'half'"):
        upscale_files(plan_jobs([src], tmp_path / "y.png", str(tiny_model)), str(tiny_model),
                      dtype="half")


def _absurd_png(path: Path, width: int = 1_000_000, height: int = 1_000_000) -> Path:
    path.write_bytes(png_claiming(width, height))
    return path


def test_cli_bad_input_exits_2_and_leaves_no_output(tmp_path: Path) -> None:
    good = _save(astronaut(200, 200), tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    webp = _save(astronaut(40, 40), tmp_path / "a.webp")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    complex_image = tmp_path / "spectrum.v"
    pyvips.Image.new_from_array(np.zeros((8, 8, 2), np.float32)).copy(
        format="complex", bands=1, interpretation="fourier").write_to_file(str(complex_image))
    cases = [
        ([str(good), "--model", "x8"], "--model: unknown model 'x8'"),
        ([str(good), "--model", "fast", "--out", str(good)], "would overwrite its input"),
        ([str(webp), "--model", "fast", "--out", str(webp)], "is an existing file, not a folder"),
        ([str(good), "--model", "fast", "--out", str(notes)], "is an existing file, not a folder"),
        ([str(good), "--model", "fast", "--out", str(notes / "x.tif")], "not a folder"),
        ([str(_absurd_png(tmp_path / "absurd.png")), "--model", "fast"], "header claims"),
        ([str(_absurd_png(tmp_path / "wide.png", 3_000_000, 100)), "--model", "fast"],
         "more than libvips handles (10,000,000)"),
        ([str(_absurd_png(tmp_path / "empty.png", 100, 50)), "--model", "fast"],
         "truncated or corrupt"),
        ([str(complex_image), "--model", "fast"], "cannot convert to RGB"),
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
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and message in errors[0], result.output
    # (the output folder's lock file stays: it is the OS's lock, reused by the next run)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_NAME) == sorted(
        ["good.png", "truncated.png", "garbage.jpg", "absurd.png", "a.webp", "notes.txt",
         "spectrum.v", "wide.png", "empty.png"]
    )
    assert notes.read_text() == "not a folder"


def test_format_side_limits_are_refused_when_planning(tmp_path: Path) -> None:
    """JPEG holds 65,500 px a side (libjpeg), not 65,535: refused before any upscale runs,
    from the header alone (these PNGs hold no pixel data)."""
    src = _absurd_png(tmp_path / "strip.png", 16_376, 8)  # x4: 65,504 px wide
    with pytest.raises(InputError, match=r"65,504 px a side is more than \.jpg holds \(65,500\)"):
        plan_jobs([src], tmp_path / "strip.jpg", "fast")
    (job,) = plan_jobs([src], tmp_path / "strip.jpg", "fast", scale=65_500 / 16_376)
    assert round(job.width * job.scale) == 65_500
    (job,) = plan_jobs([src], tmp_path / "strip.tif", "fast")
    assert job.width == 16_376
    wide = _absurd_png(tmp_path / "wide.png", 2_500_001, 4)  # x4: 10,000,004 px
    for out in ("wide_x4.tif", "wide_x4.png", "wide_x4.dzi"):
        with pytest.raises(InputError, match=r"10,000,004 px a side is more than libvips"):
            plan_jobs([wide], tmp_path / out, "fast")
    # the model's own scale sets the size libvips must handle, even when reduced afterwards
    with pytest.raises(InputError, match="more than libvips handles"):
        plan_jobs([wide], tmp_path / "wide_x4.tif", "fast", scale=1.0)
    assert not any(p.suffix in (".jpg", ".tif", ".dzi") for p in tmp_path.iterdir())


def test_alpha_is_flattened_onto_white(tiny_model: Path, tmp_path: Path) -> None:
    """RGBA (8- and 16-bit) and grey+alpha inputs upscale as their colours over white."""
    rgb = astronaut(24, 24)
    alpha = np.full((24, 24, 1), 128, np.uint8)
    over_white = (rgb * (128 / 255) + 255 * (127 / 255) + 0.5).astype(np.uint8)
    upscaler = esrgan.load_upscaler(tiny_model, device="cpu", dtype="float32")
    expected = upscale_array(upscaler, over_white, tile=32)
    rgba = pyvips.Image.new_from_array(np.dstack([rgb, alpha]), interpretation="srgb")
    inputs = {"rgba8.png": rgba, "rgba16.png": (rgba.cast("ushort") * 257).cast("ushort")
              .copy(interpretation="rgb16")}
    for name, image in inputs.items():
        image.write_to_file(str(tmp_path / name))
        (job,) = plan_jobs([tmp_path / name], tmp_path / f"{name}.tif", str(tiny_model))
        result = _read(upscale_file(job, upscaler, tile=32))
        assert np.abs(result.astype(int) - expected.astype(int)).max() <= 2, name
    grey = pyvips.Image.new_from_array(np.dstack([rgb[..., :1], alpha]), interpretation="b-w")
    grey.write_to_file(str(tmp_path / "grey.png"))
    (job,) = plan_jobs([tmp_path / "grey.png"], tmp_path / "grey.tif", str(tiny_model))
    grey_over_white = np.repeat(over_white[..., :1], 3, axis=2)
    expected = upscale_array(upscaler, grey_over_white, tile=32)
    result = _read(upscale_file(job, upscaler, tile=32))
    assert np.abs(result.astype(int) - expected.astype(int)).max() <= 2


def test_the_pool_writes_what_one_process_writes(tiny_model: Path, tmp_path: Path,
                                                 dask_client) -> None:
    """Images streamed on workers, where libvips pulls the upscaled stream (and so reports
    tiles) from threads of its own, give the same files as one at a time in this process,
    and every tile is reported."""
    inputs = [_save(astronaut(160, 224), tmp_path / "a.png"),
              _save(astronaut(224, 160, left=100), tmp_path / "b.png")]
    for src in inputs:
        (job,) = plan_jobs([src], tmp_path / "alone" / f"{src.stem}.png", str(tiny_model))
        upscale_files([job], str(tiny_model), tile=48)
    seen: list[Progress] = []
    result = upscale_images(inputs, tmp_path / "pool", model=str(tiny_model), tile=48,
                            fmt="png", client=dask_client, progress=seen.append)
    assert sorted(p.name for p in result.written) == ["a.png", "b.png"] and not result.skipped
    for src in inputs:
        assert ((tmp_path / "pool" / f"{src.stem}.png").read_bytes()
                == (tmp_path / "alone" / f"{src.stem}.png").read_bytes())
    assert [event.done for event in seen] == list(range(seen[-1].total + 1))
