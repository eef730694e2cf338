"""The canvas pipeline on the tiny random Stable Diffusion (CPU, few steps, small sizes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hypermosaic.canvas_config import canvas_config_from_dict, load_canvas_config
from hypermosaic.canvas_plan import plan_canvas
from hypermosaic.pipelines.canvas import (
    Window,
    _guided,
    blend,
    initial_noise,
    render_canvas,
)
from hypermosaic.pipelines.engine import to_uint8
from hypermosaic.pipelines.models import make_scheduler
from hypermosaic.pipelines.tiled_vae import decode_tiled, encode_tiled

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NATIVE = 64  # the tiny model's native size: sample_size 32 latents, VAE factor 2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    from hypermosaic.pipelines.tiny import tiny_pipeline

    return tiny_pipeline()


def plan_of(raw: dict, base: Path = Path("."), seed: int | None = None):
    return plan_canvas(canvas_config_from_dict(raw, base=base, source="test"), seed)


def text(top, bottom, left, right, prompt="a red house", **extra):
    return {"top": top, "bottom": bottom, "left": left, "right": right, "prompt": prompt, **extra}


def assert_same_image(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: no pixel more than one level apart, nearly all equal."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("scheduler", ["default", "euler_ancestral"])
def test_one_region_at_native_size_equals_diffusers_text_to_image(pipe, scheduler):
    plan = plan_of({"width": NATIVE, "height": NATIVE, "steps": 2, "seed": 11,
                    "scheduler": scheduler, "guidance": 6.0,
                    "regions": [text(0, NATIVE, 0, NATIVE)]})
    ours = render_canvas(pipe, plan)
    components = {**pipe.components, "scheduler": make_scheduler(scheduler, pipe.scheduler)}
    diffusers_pipe = type(pipe)(**components, requires_safety_checker=False)
    diffusers_pipe.set_progress_bar_config(disable=True)
    theirs = diffusers_pipe(
        "a red house", height=NATIVE, width=NATIVE, num_inference_steps=2, guidance_scale=6.0,
        generator=torch.Generator().manual_seed(11), output_type="np",
    ).images[0]
    assert_same_image(ours, to_uint8(theirs))


def test_batched_windows_equal_one_window_per_unet_call(pipe):
    raw = {"steps": 2, "seed": 3, "grid": {
        "prompt": [["a forest", "a lake", "a hill"]], "tile_height": 32, "tile_width": 32,
        "tile_row_overlap": 0, "tile_col_overlap": 16}}
    batched = plan_of({**raw, "batch_size": 8})
    single = dataclasses.replace(batched, batch_size=1)
    assert_same_image(render_canvas(pipe, batched), render_canvas(pipe, single))


def test_blend_normalises_weights_to_one_where_covered():
    shape = torch.Size((1, 4, 12, 20))
    windows = [
        Window((0, 8, 0, 8), (0,), (1.0,), 1.0, False, torch.rand(1, 1, 8, 8) + 0.1),
        Window((4, 12, 4, 20), (0,), (1.0,), 1.0, False, torch.rand(1, 1, 8, 16) * 4 + 0.01),
        Window((0, 12, 16, 20), (0,), (1.0,), 1.0, False, torch.full((1, 1, 12, 4), 1e-4)),
    ]
    ones = [torch.ones(1, 4, *w.shape) for w in windows]
    out = blend(shape, windows, ones)
    covered = torch.zeros(12, 20, dtype=torch.bool)
    for w in windows:
        covered[w.box[0]:w.box[1], w.box[2]:w.box[3]] = True
    assert torch.allclose(out[..., covered], torch.ones(()), atol=1e-6)
    assert torch.isnan(out[..., ~covered]).all()
    # a weighted average: two constant predictions 0 and 1 with weights 1 and 3 give 0.75
    pair = [Window((0, 4, 0, 4), (0,), (1.0,), 1.0, False, torch.full((1, 1, 4, 4), w))
            for w in (1.0, 3.0)]
    mixed = blend(torch.Size((1, 1, 4, 4)), pair, [torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)])
    assert torch.allclose(mixed, torch.full((1, 1, 4, 4), 0.75))


def test_ensemble_mix_and_guidance():
    window = Window((0, 2, 0, 2), (0, 1, 2), (0.25, 0.75), 5.0, True, torch.ones(1, 1, 2, 2))
    u, a, b = torch.randn(3, 4, 2, 2).split(1)
    expected = u + 5.0 * (0.25 * a + 0.75 * b - u)
    assert torch.allclose(_guided(window, torch.cat([u, a, b])), expected, atol=1e-6)


def test_ensembling_one_prompt_equals_that_prompt_alone(pipe):
    base = {"width": 32, "height": 32, "steps": 2, "seed": 5}
    alone = plan_of({**base, "regions": [text(0, 32, 0, 32, prompt="a cat")]})
    ensemble = plan_of({**base, "regions": [
        text(0, 32, 0, 32, prompt=[{"text": "a cat", "weight": 2}, "a cat"])]})
    assert ensemble.prompts[0].prompt == (("a cat", 2.0), ("a cat", 1.0))
    assert_same_image(render_canvas(pipe, alone), render_canvas(pipe, ensemble))


def test_reroll_reset_and_epsilon_edit_only_their_box():
    raw = {"width": 64, "height": 64, "seed": 1, "regions": [text(0, 64, 0, 64)]}
    base, _ = initial_noise(plan_of(raw), 4, 8)
    reroll = {"kind": "reroll", "top": 16, "bottom": 48, "left": 8, "right": 32, "seed": 9}
    reset, _ = initial_noise(plan_of({**raw, "regions": raw["regions"] + [reroll]}), 4, 8)
    eps = {**reroll, "mode": "epsilon", "noise_eps": 0.1}
    nudged, _ = initial_noise(plan_of({**raw, "regions": raw["regions"] + [eps]}), 4, 8)
    fresh = torch.randn((1, 4, 4, 3), generator=torch.Generator().manual_seed(9))
    inside = (slice(None), slice(None), slice(2, 6), slice(1, 4))
    assert torch.equal(reset[inside], fresh)
    assert torch.allclose(nudged[inside], base[inside] + 0.1 * fresh)
    for edited in (reset, nudged):
        outside = edited.clone()
        outside[inside] = base[inside]
        assert torch.equal(outside, base)


def test_seed_tiles_exclusive_writes_only_the_part_no_other_tile_covers():
    grid = {"prompt": [["a", "b", "c"]], "tile_height": 32, "tile_width": 64,
            "tile_row_overlap": 0, "tile_col_overlap": 16}
    base = plan_of({"grid": grid, "seed": 2})

    def noise(mode):
        tiles = [{"row": 0, "col": 1, "seed": 99, "seed_mode": mode}]
        return initial_noise(plan_of({"grid": {**grid, "tiles": tiles}, "seed": 2}), 4, 8)[0]

    canvas, _ = initial_noise(base, 4, 8)
    full, exclusive = noise("full"), noise("exclusive")
    tile = torch.randn((1, 4, 4, 8), generator=torch.Generator().manual_seed(99))
    assert torch.equal(full[..., 6:14], tile)  # tile 1 spans columns 48-112 px
    assert torch.equal(exclusive[..., 8:12], tile[..., 2:6])  # only 64-96 px is its own
    assert torch.equal(exclusive[..., :8], canvas[..., :8])
    assert torch.equal(exclusive[..., 12:], canvas[..., 12:])
    assert not torch.equal(full[..., 6:8], canvas[..., 6:8])


def test_image_region_at_strength_zero_is_its_reference_through_the_vae(pipe, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    reference = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    Image.fromarray(reference).save(tmp_path / "ref.png")
    plan = plan_of({"width": 32, "height": 32, "steps": 2, "regions": [
        text(0, 32, 0, 32),
        {"kind": "image", "top": 0, "bottom": 32, "left": 0, "right": 32, "image": "ref.png",
         "strength": 0.0},
    ]}, base=tmp_path)
    with torch.no_grad():
        x = torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 127.5 - 1
        latent = pipe.vae.encode(x).latent_dist.mode()
        through = (pipe.vae.decode(latent).sample / 2 + 0.5).clamp(0, 1)
    expected = to_uint8(through[0].permute(1, 2, 0).numpy())
    assert_same_image(render_canvas(pipe, plan), expected)


def test_json_example_and_toml_twin_give_the_same_image(pipe):
    small = {"steps": 1, "grid.tile_height": 32, "grid.tile_width": 32,
             "grid.tile_row_overlap": 16, "grid.tile_col_overlap": 16}
    plans = [plan_canvas(load_canvas_config(EXAMPLES / name, small))
             for name in ("forest.json", "forest.toml")]
    assert plans[0] == plans[1] and (plans[0].height, plans[0].width) == (32, 176)
    first, second = (render_canvas(pipe, plan) for plan in plans)
    assert np.array_equal(first, second)


def test_a_full_brush_equals_a_full_constant_text_region(pipe, tmp_path):
    from PIL import Image

    Image.new("L", (32, 32), 255).save(tmp_path / "all.png")
    base = {"width": 32, "height": 32, "steps": 2, "seed": 8, "bootstrap_steps": 1}
    as_text = plan_of({**base, "regions": [text(0, 32, 0, 32, mask_type="constant")]})
    as_brush = plan_of({**base, "regions": [
        {"kind": "brush", "mask": "all.png", "prompt": "a red house"}]}, base=tmp_path)
    assert np.array_equal(render_canvas(pipe, as_text), render_canvas(pipe, as_brush))


class PointwiseVae:
    """A stand-in VAE whose output at a pixel depends on its own latent only, so tiling must
    reproduce the untiled result exactly."""

    config = SimpleNamespace(block_out_channels=(1, 1), scaling_factor=0.5, latent_channels=4)
    device, dtype = torch.device("cpu"), torch.float32

    def decode(self, z):
        rgb = torch.tanh(z[:, :3] + 0.5 * z[:, 3:])
        return SimpleNamespace(sample=rgb.repeat_interleave(2, 2).repeat_interleave(2, 3))

    def encode(self, x):
        pooled = torch.nn.functional.avg_pool2d(x, 2)
        mean = torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: mean))


def test_tiled_vae_blends_back_to_the_untiled_result():
    vae = PointwiseVae()
    latents = torch.randn(1, 4, 37, 53)
    whole = decode_tiled(vae, latents, tile=64, overlap=0)
    expected = to_uint8(((vae.decode(latents * 2).sample / 2 + 0.5).clamp(0, 1))[0]
                        .permute(1, 2, 0).numpy())
    assert np.array_equal(whole, expected)
    tiled = decode_tiled(vae, latents, tile=12, overlap=4)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    image = np.random.default_rng(1).integers(0, 256, (74, 106, 3)).astype(np.uint8)
    assert torch.allclose(encode_tiled(vae, image, 12, 4), encode_tiled(vae, image, 64, 0),
                          atol=1e-5)
