"""`hypermosaic canvas` through the command line: bad input, and a real run on the pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hypermosaic.cli import cli
from hypermosaic.store import LOCK_NAME

GOOD = """
width = 32
height = 32
steps = 1
[[regions]]
top = 0
bottom = 32
left = 0
right = 32
prompt = "a red house"
"""


def run(*args: str):
    return CliRunner().invoke(cli, ["canvas", *args])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("bottom = 32", "bottom = 40"), "regions.0.bottom: 40 is outside the canvas"),
    (GOOD.replace("right = 32", "right = 30"), "regions.0.right: 30 is not a multiple of 8"),
    (GOOD.replace("width = 32", "width = 60"), "c.toml: width: 60 is not a multiple of 8"),
    (GOOD + 'kind = "circle"\n', "c.toml: regions.0.kind: 'circle' is not a region kind "
                                 "(use text, image, reroll, brush)"),
    (GOOD + "mask_weight = 1e-40\n", "c.toml: regions.0.mask_weight: 1e-40 is too small"),
    (GOOD + "mask_weight = inf\n", "c.toml: regions.0.mask_weight: not a finite number"),
    (GOOD.split("[[regions]]")[0] + '[[regions]]\nkind = "image"\ntop = 0\nbottom = 32\n'
     "left = 0\nright = 32\n", "c.toml: regions.0.image: missing (required)"),
    (GOOD.replace("right = 32", "right = 16"), "canvas: 512 px are covered by no prompt, within "
                                               "rows 0-32 and columns 16-32"),
    (GOOD + "sharpness = 3\n", "sharpness: unknown key"),
    ('device = "gpu0"\n' + GOOD, "c.toml: device: unknown device 'gpu0' (use auto, cpu, cuda, "
                                  "cuda:N or mps)"),
    ('upscale = 4\nupscale_model = "x8"\n' + GOOD, "c.toml: upscale_model: 'x8' is neither "
                                                    "one of x4plus, anime, fast"),
])
def test_bad_toml_exits_2_naming_the_key(tmp_path, text, message):
    result = run(str(write(tmp_path / "c.toml", text)), "--model", "m")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {tmp_path / 'c.toml'}: ")  # the file first
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("raw", "message"), [
    ({"prompt": [["a", "b"], ["c"]]}, "prompt: row 1 has 1 prompts but row 0 has 2"),
    ({"prompt": []}, "prompt: an empty prompt grid"),
    ({"prompt": [["a"], ["b"]], "tile_height": 256, "tile_row_overlap": 256},
     "tile_row_overlap: 256 is as large as the tile"),
    ({"prompt": [["a", "b"]], "tile_col_overlap": -8}, "tile_col_overlap: -8 is negative"),
])
def test_bad_json_grid_exits_2_naming_the_key(tmp_path, raw, message):
    result = run(str(write(tmp_path / "g.json", json.dumps(raw))), "--model", "m")
    assert result.exit_code == 2, result.output
    assert f"g.json: {message}" in result.output


def test_mask_of_another_size_and_missing_things_exit_2(tmp_path):
    Image.new("L", (64, 32), 255).save(tmp_path / "mask.png")
    brush = GOOD.split("[[regions]]")[0] + (
        '[[regions]]\nkind = "brush"\nmask = "mask.png"\nprompt = "p"\n'
    )
    result = run(str(write(tmp_path / "b.toml", brush)), "--model", "m")
    assert result.exit_code == 2 and "regions.0.mask:" in result.output
    assert "is 64x32 but the canvas is 32x32" in result.output
    result = run(str(write(tmp_path / "c.toml", GOOD)))
    assert result.exit_code == 2 and "model: no model given" in result.output
    result = run(str(tmp_path / "nothing.toml"), "--model", "m")
    assert result.exit_code == 2 and "no such config file" in result.output


def test_a_missing_model_exits_2_before_any_work(tmp_path):
    config = write(tmp_path / "c.toml", GOOD)
    for model, message in ((tmp_path / "nowhere", "no such file or directory"),
                           (tmp_path, "not a diffusers pipeline directory (no model_index.json)")):
        result = run(str(config), "--model", str(model), "--out", str(tmp_path / "out"))
        assert result.exit_code == 2, result.output
        assert result.output == f"Error: {config}: model: {model}: {message}\n"
        assert not (tmp_path / "out").exists()


def test_a_window_stride_beyond_the_native_window_exits_2(tmp_path, tiny_dir):
    Image.new("L", (96, 32), 255).save(tmp_path / "all.png")
    brush = GOOD.replace("width = 32", "width = 96").split("[[regions]]")[0] + (
        'window_stride = 72\n[[regions]]\nkind = "brush"\nmask = "all.png"\nprompt = "p"\n'
    )
    result = run(str(write(tmp_path / "b.toml", brush)), "--model", str(tiny_dir))
    assert result.exit_code == 2, result.output
    assert (f"{tmp_path / 'b.toml'}: window_stride: 72 is larger than the model's native "
            "window (64 px)" in result.output)
    fitting = brush.replace("window_stride = 72", "window_stride = 64")
    from hypermosaic.canvas import load_canvas_config, plan_jobs

    config = load_canvas_config(write(tmp_path / "b.toml", fitting), {"model": str(tiny_dir)})
    assert [job.plan.window_stride for job in plan_jobs([config])] == [64]


def test_mod_json_that_mod_runs_is_accepted_with_one_line_warnings(tmp_path):
    """overlap 100, gc 60, a reroll box past the canvas: accepted; what runs otherwise than
    written is one "warning:" line naming the file and the JSON key; the error that follows
    (no such model) still names the file."""
    raw = {"prompt": [["a", "b"]], "tile_height": 512, "tile_width": 512,
           "tile_row_overlap": 256, "tile_col_overlap": 100, "gc": 60, "scheduler": "lms",
           "seed_tiles": [[None, 3]], "seed_tiles_mode": "exclusive",
           "seed_reroll_regions": [[0, 64, 800, 1000, 7]]}
    path = write(tmp_path / "g.json", json.dumps(raw))
    result = run(str(path), "--model", str(tmp_path / "nowhere"))
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"warning: {path}: tile_col_overlap: 100 is not a multiple of 8: as in Mixture of "
        "Diffusers, tile edges are floored to multiples of 8, and the canvas is 920x512 px",
        f"warning: {path}: seed_reroll_regions[0]: reaches past the 920x512 px canvas and is "
        "clipped to it (Mixture of Diffusers stops with an error there)",
        f'warning: {path}: grid tile (0, 1): seed mode "exclusive" redraws the whole tile on a '
        "grid of one row or one column, as in Mixture of Diffusers (only tiles in another row "
        "and another column clip a tile there)",
        f"Error: {path}: model: {tmp_path / 'nowhere'}: no such file or directory",
    ]


def test_device_and_dtype_options_override_the_config(tmp_path, tiny_dir, monkeypatch):
    import hypermosaic.canvas.run as canvas_run

    planned = []
    monkeypatch.setattr(canvas_run, "run_canvases", lambda jobs, **_: planned.extend(jobs) or [])
    config = write(tmp_path / "c.toml", 'device = "cuda:1"\ndtype = "float16"\n' + GOOD)
    result = run(str(config), "--model", str(tiny_dir), "--device", "cpu", "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    assert [(job.config.device, job.config.dtype) for job in planned] == [("cpu", "bfloat16")]
    result = run(str(config), "--model", str(tiny_dir))
    assert planned[-1].config.device == "cuda:1" and planned[-1].config.dtype == "float16"
    for option, value, message in (("--device", "gpu0", "unknown device 'gpu0' (use auto, cpu, "
                                                        "cuda, cuda:N or mps)"),
                                   ("--dtype", "float8", "'float8' is not one of")):
        result = run(str(config), "--model", str(tiny_dir), option, value)
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
        assert message in result.output


def test_a_folder_in_use_or_not_writable_exits_2_before_any_work(tmp_path, tiny_dir):
    from hypermosaic.store import folder_lock

    config = write(tmp_path / "c.toml", GOOD)
    out = tmp_path / "out"
    with folder_lock(out):
        result = run(str(config), "--model", str(tiny_dir), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert f"Error: {out}: in use by another hypermosaic run" in result.output
    assert sorted(p.name for p in out.iterdir()) == [".hypermosaic.lock"]
    (tmp_path / "a-file").write_text("")
    config = write(tmp_path / "c.toml", 'out = "a-file"\n' + GOOD)
    result = run(str(config), "--model", str(tiny_dir))
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: --out {tmp_path / 'a-file'}: an existing file, not a folder\n"


@pytest.mark.slow
@pytest.mark.usefixtures("hypermosaic_cache", "one_torch_thread")
def test_canvases_render_side_by_side_on_the_pool(tmp_path, tiny_dir):
    """Two seeds on two workers, PNG + DeepZoom + ESRGAN finish; pixels equal an in-process
    render of the same plans (the same config gives the same pixels on any worker)."""
    import torch

    from hypermosaic.canvas import load_canvas_config
    from hypermosaic.canvas.plan import plan_canvas
    from hypermosaic.pipelines.canvas.loop import render_canvas
    from hypermosaic.pipelines.esrgan.tiled import upscale_array
    from hypermosaic.pipelines.esrgan.upscaler import load_upscaler
    from hypermosaic.pipelines.models import load_pipeline

    model = tiny_dir
    config = write(tmp_path / "duo.toml",
                   'deepzoom = true\nupscale = 4\nupscale_model = "fast"\n' + GOOD)
    out = tmp_path / "out"
    result = run(str(config), "--model", str(model), "--seed", "4", "--seed", "5",
                 "--out", str(out), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == [
        "duo-4-x4.png", "duo-4.dzi", "duo-4.png", "duo-4_files",
        "duo-5-x4.png", "duo-5.dzi", "duo-5.png", "duo-5_files",
    ]
    pipe = load_pipeline(str(model), device="cpu", dtype=torch.float32)
    settings = load_canvas_config(config, {"model": str(model)})
    for seed in (4, 5):
        expected = render_canvas(pipe, plan_canvas(settings, seed))
        assert np.array_equal(np.asarray(Image.open(out / f"duo-{seed}.png")), expected)
        big = upscale_array(load_upscaler("fast", device="cpu"), expected)
        assert np.array_equal(np.asarray(Image.open(out / f"duo-{seed}-x4.png")), big)
    assert "duo-4 image:" in result.output
