"""The canvas pipeline on the tiny random Stable Diffusion (CPU, few steps, small sizes)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hypermosaic.canvas import canvas_config_from_dict, load_canvas_config
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas import (
    Window,
    blend,
    cpu_vae,
    guidance_embedding,
    initial_noise,
    render_canvas,
    window_input,
)
from hypermosaic.pipelines.canvas import guided as _guided
from hypermosaic.pipelines.canvas.tiled_vae import decode_tiled, encode_tiled
from hypermosaic.pipelines.img2img.engine import to_uint8
from hypermosaic.pipelines.models import make_scheduler

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NATIVE = 64  # the tiny model's native size: sample_size 32 latents, VAE factor 2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    from tests.tiny import tiny_pipeline

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


@pytest.mark.parametrize("scheduler", ["default", "euler", "euler_ancestral", "lms", "dpm++2m"])
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


def test_guidance_embedding_is_diffusers_lcm_embedding():
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([0.0, 4.5, 7.0])
    for dim in (32, 33, 256):
        theirs = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, dim)
        assert torch.allclose(guidance_embedding(w, dim), theirs, atol=1e-6)


def test_lcm_unet_canvas_equals_diffusers_latent_consistency_pipeline():
    """A guidance-embedding UNet: ``timestep_cond`` passed, classifier-free guidance off."""
    from diffusers import LatentConsistencyModelPipeline

    from tests.tiny import tiny_pipeline

    lcm = tiny_pipeline("lcm")
    assert isinstance(lcm, LatentConsistencyModelPipeline)
    assert lcm.unet.config.time_cond_proj_dim
    plan = plan_of({"width": NATIVE, "height": NATIVE, "steps": 3, "seed": 12,
                    "scheduler": "lcm", "guidance": 6.0, "negative_prompt": "ignored",
                    "regions": [text(0, NATIVE, 0, NATIVE)]})
    ours = render_canvas(lcm, plan)
    theirs = lcm(
        "a red house", height=NATIVE, width=NATIVE, num_inference_steps=3, guidance_scale=6.0,
        generator=torch.Generator().manual_seed(12), output_type="np",
    ).images[0]
    assert_same_image(ours, to_uint8(theirs))
    other = render_canvas(lcm, dataclasses.replace(
        plan, prompts=(dataclasses.replace(plan.prompts[0], guidance=2.0),)))
    assert np.abs(other.astype(int) - ours.astype(int)).max() > 1  # the guidance reaches it


def test_pndm_reports_every_timestep_and_holds_images_to_the_end(pipe, tmp_path):
    from PIL import Image

    steps = 4
    scheduler = make_scheduler("pndm", pipe.scheduler)
    scheduler.set_timesteps(steps)
    total = len(scheduler.timesteps)
    assert total > steps  # PNDM's Runge-Kutta warm-up adds timesteps
    reference = np.kron(np.random.default_rng(2).integers(0, 256, (4, 4, 3)),
                        np.ones((8, 8, 1))).astype(np.uint8)
    Image.fromarray(reference).save(tmp_path / "ref.png")
    base = {"width": 32, "height": 32, "steps": steps, "seed": 4, "regions": [text(0, 32, 0, 32)]}
    calls: list[tuple[int, int]] = []
    render_canvas(pipe, plan_of({**base, "scheduler": "pndm"}),
                  lambda step, of: calls.append((step, of)))
    assert calls == [(i, total) for i in range(1, total + 1)]
    image = {"kind": "image", "top": 0, "bottom": 32, "left": 0, "right": 32, "image": "ref.png",
             "strength": 0.0}
    held = {**base, "regions": base["regions"] + [image]}
    assert np.array_equal(render_canvas(pipe, plan_of({**held, "scheduler": "pndm"}, tmp_path)),
                          render_canvas(pipe, plan_of(held, tmp_path)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batched_windows_equal_one_window_per_unet_call(pipe, dtype):
    """Also for a bfloat16 model (``dtype = "bfloat16"``)."""
    model = pipe if dtype == "float32" else copy.deepcopy(pipe).to(dtype=torch.bfloat16)
    raw = {"steps": 2, "seed": 3, "grid": {
        "prompt": [["a forest", "a lake", "a hill"]], "tile_height": 32, "tile_width": 32,
        "tile_row_overlap": 0, "tile_col_overlap": 16}}
    batched = plan_of({**raw, "batch_size": 8})
    single = dataclasses.replace(batched, batch_size=1)
    image = render_canvas(model, batched)
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    assert_same_image(image, render_canvas(model, single))


def test_tiny_pipeline_with_sd_geometry():
    """``vae_factor = 8`` (the canvas benchmark's): SD's latent geometry, same UNet."""
    from hypermosaic.pipelines.canvas.tiled_vae import vae_scale_factor
    from tests.tiny import tiny_pipeline

    sd = tiny_pipeline(vae_factor=8)
    assert vae_scale_factor(sd.vae) == 8
    with torch.no_grad():
        assert sd.vae.decode(torch.zeros(1, 4, 3, 5)).sample.shape == (1, 3, 24, 40)
    plan = plan_of({"width": 64, "height": 64, "steps": 1, "regions": [text(0, 64, 0, 64)]})
    assert render_canvas(sd, plan).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="vae_factor: 4"):
        tiny_pipeline(vae_factor=4)


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


@pytest.mark.slow
def test_json_example_and_toml_twin_give_the_same_image(tmp_path, tiny_dir):
    """The JSON example, shrunk, through the command line against its TOML twin, shrunk the
    same way and given Mixture of Diffusers' semantics (what JSON input gets: issue 11, point
    4; its ``lms`` is not the model's), planned and rendered in this process with the same
    model."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from hypermosaic.cli import cli
    from hypermosaic.pipelines.models import load_pipeline

    small = {"steps": 1, "grid.tile_height": 32, "grid.tile_width": 32,
             "grid.tile_row_overlap": 16, "grid.tile_col_overlap": 16,
             "compat": "mixture-of-diffusers"}
    plans = [plan_canvas(load_canvas_config(EXAMPLES / name, small))
             for name in ("forest.json", "forest.toml")]
    assert plans[0] == plans[1] and (plans[0].height, plans[0].width) == (32, 176)
    raw = json.loads((EXAMPLES / "forest.json").read_text())
    raw.update(steps=1, tile_height=32, tile_width=32, tile_row_overlap=16, tile_col_overlap=16)
    (tmp_path / "forest.json").write_text(json.dumps(raw))
    model = tiny_dir
    result = CliRunner().invoke(cli, ["canvas", str(tmp_path / "forest.json"), "--model",
                                      str(model), "--out", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    from_cli = np.asarray(Image.open(tmp_path / f"forest-{raw['seed']}.png"))
    from_toml = render_canvas(load_pipeline(str(model), device="cpu", dtype=torch.float32),
                              plans[1])
    assert np.array_equal(from_cli, from_toml)


def test_a_full_brush_equals_a_full_constant_text_region(pipe, tmp_path):
    from PIL import Image

    Image.new("L", (32, 32), 255).save(tmp_path / "all.png")
    base = {"width": 32, "height": 32, "steps": 2, "seed": 8, "bootstrap_steps": 1}
    as_text = plan_of({**base, "regions": [text(0, 32, 0, 32, mask_type="constant")]})
    as_brush = plan_of({**base, "regions": [
        {"kind": "brush", "mask": "all.png", "prompt": "a red house"}]}, base=tmp_path)
    assert np.array_equal(render_canvas(pipe, as_text), render_canvas(pipe, as_brush))


def test_bootstrap_mixes_the_background_outside_a_brush():
    keep = torch.zeros(1, 1, 4, 6)
    keep[..., :, :2] = 1.0
    keep[..., :, 2] = 0.25
    window = Window((2, 6, 1, 7), (0, 1), (1.0,), 5.0, True, torch.ones(1, 1, 4, 6), keep)
    scaled = torch.randn(1, 4, 8, 8)
    background = torch.randn(1, 4, 4, 6)
    seen = window_input(window, scaled, {window.box: background})
    canvas = scaled[:, :, 2:6, 1:7]
    assert torch.equal(seen[..., :2], canvas[..., :2])
    assert torch.equal(seen[..., 3:], background[..., 3:])
    assert torch.allclose(seen[..., 2], 0.25 * canvas[..., 2] + 0.75 * background[..., 2])
    assert torch.equal(window_input(window, scaled), canvas)  # after the bootstrap steps


class RecordingUnet:
    """The tiny UNet, keeping a copy of every input batch."""

    def __init__(self, unet):
        self.unet, self.config, self.device, self.dtype = unet, unet.config, unet.device, unet.dtype
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x, t, **kwargs):
        self.inputs.append(x.clone())
        return self.unet(x, t, **kwargs)


class ScarceMemoryUnet(RecordingUnet):
    """The tiny UNet on a device that holds at most ``rows`` rows per call."""

    def __init__(self, unet, rows):
        super().__init__(unet)
        self.rows = rows
        self.refused: list[int] = []

    def __call__(self, x, t, **kwargs):
        if len(x) > self.rows:
            self.refused.append(len(x))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__call__(x, t, **kwargs)


def test_out_of_memory_halves_the_windows_per_call_and_keeps_them_halved(pipe):
    raw = {"steps": 3, "seed": 3, "grid": {
        "prompt": [["a forest", "a lake", "a hill", "a road"]], "tile_height": 32,
        "tile_width": 32, "tile_row_overlap": 0, "tile_col_overlap": 16}}
    plan = plan_of({**raw, "batch_size": 4})
    scarce = SimpleNamespace(unet=ScarceMemoryUnet(pipe.unet, rows=4), vae=pipe.vae,
                             scheduler=pipe.scheduler, encode_prompt=pipe.encode_prompt)
    image = render_canvas(scarce, plan)
    assert scarce.unet.refused == [8]  # 4 windows x 2 guidance rows: once, then 2 windows
    assert [len(x) for x in scarce.unet.inputs] == [4, 4] * 3
    assert_same_image(image, render_canvas(pipe, dataclasses.replace(plan, batch_size=2)))
    tiny = SimpleNamespace(**{**vars(scarce), "unet": ScarceMemoryUnet(pipe.unet, rows=1)})
    with pytest.raises(torch.OutOfMemoryError):
        render_canvas(tiny, plan)  # not even one window (two rows) fits
    assert tiny.unet.refused == [8, 4, 2]
    three = plan_of({**raw, "grid": {**raw["grid"], "prompt": [["a forest", "a lake", "a hill"]]},
                     "batch_size": 8})
    scarce.unet = ScarceMemoryUnet(pipe.unet, rows=4)
    render_canvas(scarce, three)  # halves what was tried (3 windows), not the batch_size (8)
    assert scarce.unet.refused == [6] and [len(x) for x in scarce.unet.inputs][:2] == [2, 2]

    class Broken(RecordingUnet):
        def __call__(self, x, t, **kwargs):
            self.inputs.append(x)
            raise RuntimeError("expected scalar type Float but found Half")

    broken = SimpleNamespace(**{**vars(scarce), "unet": Broken(pipe.unet)})
    with pytest.raises(RuntimeError, match="expected scalar type"):
        render_canvas(broken, plan)
    assert len(broken.unet.inputs) == 1  # not retried smaller


def test_bootstrap_separates_a_partial_brush_for_its_first_steps(pipe, tmp_path):
    from PIL import Image

    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    Image.fromarray(mask).save(tmp_path / "left.png")
    raw = {"width": 32, "height": 32, "steps": 2, "seed": 6, "guidance": 5.0,
           "background": {"prompt": "a blue lake"},
           "regions": [{"kind": "brush", "mask": "left.png", "prompt": "a red house"}]}
    separated = plan_of({**raw, "bootstrap_steps": 1}, tmp_path)
    mixed = plan_of(raw, tmp_path)
    assert not np.array_equal(render_canvas(pipe, separated), render_canvas(pipe, mixed))

    recorder = SimpleNamespace(unet=RecordingUnet(pipe.unet), vae=pipe.vae,
                               scheduler=pipe.scheduler, encode_prompt=pipe.encode_prompt)
    render_canvas(recorder, separated)
    first, second = recorder.unet.inputs  # one call a step: brush rows, then background rows
    white = encode_tiled(pipe.vae, np.full((32, 32, 3), 255, np.uint8), 256, 64)
    scheduler = make_scheduler("default", pipe.scheduler)
    scheduler.set_timesteps(2)
    noise, _ = initial_noise(separated, 4, 2)
    background = scheduler.add_noise(white, noise, scheduler.timesteps[:1])
    brush, canvas = first[0:1], first[2:3]
    assert torch.equal(brush[..., :8], canvas[..., :8])  # its own area: the canvas
    assert torch.allclose(brush[..., 8:], background[..., 8:], atol=1e-5)  # the rest: white
    assert not torch.allclose(canvas[..., 8:], background[..., 8:], atol=1e-2)
    assert torch.equal(second[0:1], second[2:3])  # bootstrap over: both see the canvas


def test_cpu_vae_is_a_cached_float32_copy_and_renders_the_same(pipe):
    plan = plan_of({"width": 32, "height": 32, "steps": 1, "seed": 3,
                    "regions": [text(0, 32, 0, 32)]})
    assert cpu_vae(pipe.vae) is pipe.vae
    half = copy.deepcopy(pipe.vae).to(torch.bfloat16)
    twin = cpu_vae(half)
    assert twin is cpu_vae(half) and twin is not half
    assert twin.dtype == torch.float32 and half.dtype == torch.bfloat16
    for (name, ours), (_, theirs) in zip(twin.state_dict().items(), half.state_dict().items(),
                                         strict=True):
        assert torch.equal(ours, theirs.float()), name
    with_half = SimpleNamespace(unet=pipe.unet, vae=half, scheduler=pipe.scheduler,
                                encode_prompt=pipe.encode_prompt)
    with_twin = SimpleNamespace(**{**vars(with_half), "vae": twin})
    assert np.array_equal(render_canvas(with_half, dataclasses.replace(plan, cpu_vae=True)),
                          render_canvas(with_twin, plan))


def test_window_stride_beyond_the_window_is_an_input_error(pipe, tmp_path):
    from PIL import Image

    Image.new("L", (96, 32), 255).save(tmp_path / "all.png")
    plan = plan_of({"width": 96, "height": 32, "window_stride": 72, "regions": [
        {"kind": "brush", "mask": "all.png", "prompt": "p"}]}, tmp_path)
    native = r"window_stride: 72 is larger than the model's native window \(64 px\)"
    with pytest.raises(InputError, match=native):
        render_canvas(pipe, plan)


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


# --- no NaN reaches an image; Mixture of Diffusers' semantics for its configs (issue 11) -----


def test_weights_that_vanish_stop_the_canvas_instead_of_writing_black(pipe):
    """A plan whose weights underflow (configs refuse such a mask_weight) gives NaN latents:
    refused at the first step, not decoded into a black image."""
    from hypermosaic.errors import BuildError

    plan = plan_of({"width": 32, "height": 32, "steps": 2, "seed": 1,
                    "regions": [text(0, 32, 0, 32)]})
    vanished = dataclasses.replace(plan, prompts=(
        dataclasses.replace(plan.prompts[0], mask_weight=1e-40),))
    steps: list[int] = []
    with pytest.raises(BuildError, match="latents hold NaN or infinite values after step 1 of "
                                         "2; .*nothing was written"):
        render_canvas(pipe, vanished, lambda step, total: steps.append(step))
    assert steps == []


def test_a_vae_that_decodes_nan_is_an_error_not_black_pixels():
    from hypermosaic.errors import BuildError

    class NanVae(PointwiseVae):
        def decode(self, z):
            out = super().decode(z)
            out.sample[..., 0, 0] = float("nan")
            return out

    with pytest.raises(BuildError, match="the VAE decoded NaN or infinite values"):
        decode_tiled(NanVae(), torch.randn(1, 4, 6, 6), tile=64, overlap=0)


def test_mod_guides_every_window_and_builds_its_own_schedulers(pipe):
    from diffusers import DDIMScheduler, LMSDiscreteScheduler

    from hypermosaic.pipelines.canvas.loop import canvas_scheduler
    from hypermosaic.pipelines.canvas.windows import TextRows, prompt_windows

    raw = {"width": 32, "height": 32, "scheduler": "ddim",
           "regions": [text(0, 32, 0, 32, guidance=1.0), text(0, 32, 0, 32, guidance=0.5)]}
    ours, theirs = plan_of(raw), plan_of({**raw, "compat": "mixture-of-diffusers"})
    assert [w.cfg for w in prompt_windows(ours, 2, TextRows())] == [False, False]
    guided = prompt_windows(theirs, 2, TextRows())
    assert [(w.cfg, len(w.rows)) for w in guided] == [(True, 2), (True, 2)]
    def settings(scheduler):
        return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}

    ddim = canvas_scheduler(theirs, pipe.scheduler)
    assert type(ddim) is DDIMScheduler and settings(ddim) == settings(DDIMScheduler())
    assert canvas_scheduler(ours, pipe.scheduler).config.beta_schedule == "scaled_linear"
    lms = canvas_scheduler(dataclasses.replace(theirs, scheduler="lms"), pipe.scheduler)
    reference = LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                     beta_schedule="scaled_linear", num_train_timesteps=1000)
    assert type(lms) is LMSDiscreteScheduler and settings(lms) == settings(reference)
    euler = canvas_scheduler(dataclasses.replace(theirs, scheduler="euler"), pipe.scheduler)
    assert euler.config.beta_schedule == "scaled_linear"  # not one of its own: the model's


MOD_GRID = {  # Mixture of Diffusers' JSON, with what it runs and we used to refuse
    "prompt": [["a red house", "a lake"], ["a hill", "a forest"]],
    "tile_height": 64, "tile_width": 64, "tile_row_overlap": 20, "tile_col_overlap": 28,
    "gc": 7, "gc_tiles": [[None, 0.5], [60, None]], "seed": 21, "steps": 2,
    "scheduler": "ddim", "seed_tiles": [[None, 5], [None, None]],
    "seed_tiles_mode": "exclusive", "seed_reroll_regions": [[40, 90, 0, 30, 9]],
}


def mod_reference(pipe, spec: dict) -> tuple[torch.Tensor, np.ndarray]:
    """Mixture of Diffusers' tiling pipeline as its README and paper describe it, written
    out for the tiny model (CPU generators where it uses CUDA's): the initial latents and the
    image. Pixels become latent indices by ``// 8``; every tile is guided; the gaussian weights'
    rows peak at ``h / 2``; ``ddim`` is a default DDIMScheduler; the VAE decodes in one pass."""
    from diffusers import DDIMScheduler

    from tests.canvas.test_canvas_config import mod_exclusive_reference

    prompts, seed = spec["prompt"], spec["seed"]
    rows, cols = len(prompts), len(prompts[0])
    th, tw, ro, co = (spec[k] for k in ("tile_height", "tile_width", "tile_row_overlap",
                                        "tile_col_overlap"))

    def box(r, c):
        top, left = r * (th - ro), c * (tw - co)
        return top // 8, (top + th) // 8, left // 8, (left + tw) // 8

    height, width = th + (rows - 1) * (th - ro), tw + (cols - 1) * (tw - co)
    latents = torch.randn((1, 4, height // 8, width // 8),
                          generator=torch.Generator().manual_seed(seed))
    for r in range(rows):
        for c in range(cols):
            tile_seed = spec["seed_tiles"][r][c]
            if tile_seed is None:
                continue
            t0, t1, l0, l1 = box(r, c) if spec["seed_tiles_mode"] == "full" else (
                v // 8 for v in mod_exclusive_reference(rows, cols, th, tw, ro, co, r, c))
            latents[..., t0:t1, l0:l1] = torch.randn(
                (1, 4, t1 - t0, l1 - l0), generator=torch.Generator().manual_seed(tile_seed))
    for top, bottom, left, right, reroll in spec["seed_reroll_regions"]:
        t0, t1, l0, l1 = top // 8, bottom // 8, left // 8, right // 8
        latents[..., t0:t1, l0:l1] = torch.randn(
            (1, 4, t1 - t0, l1 - l0), generator=torch.Generator().manual_seed(reroll))
    initial = latents.clone()

    def embed(text: str) -> torch.Tensor:
        ids = pipe.tokenizer(text, padding="max_length", truncation=True, return_tensors="pt",
                             max_length=pipe.tokenizer.model_max_length).input_ids
        return pipe.text_encoder(ids)[0]

    def gaussian(n, centre):
        return np.exp(-((np.arange(n) - centre) / n) ** 2 / 0.02) / np.sqrt(2 * np.pi * 0.01)

    h, w = th // 8, tw // 8
    weights = torch.tensor(np.outer(gaussian(h, h / 2), gaussian(w, (w - 1) / 2)))
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(spec["steps"])
    with torch.no_grad():
        uncond = embed("")
        for t in scheduler.timesteps:
            value, total = torch.zeros_like(latents), torch.zeros_like(latents)
            for r in range(rows):
                for c in range(cols):
                    t0, t1, l0, l1 = box(r, c)
                    x = scheduler.scale_model_input(torch.cat([latents[..., t0:t1, l0:l1]] * 2), t)
                    out = pipe.unet(x, t, encoder_hidden_states=torch.cat(
                        [uncond, embed(prompts[r][c])])).sample
                    u, cond = out.chunk(2)
                    g = spec["gc_tiles"][r][c]
                    eps = u + (spec["gc"] if g is None else g) * (cond - u)
                    value[..., t0:t1, l0:l1] += eps * weights
                    total[..., t0:t1, l0:l1] += weights
            latents = scheduler.step(value / total, t, latents).prev_sample
        image = (pipe.vae.decode(latents / 0.18215).sample / 2 + 0.5).clamp(0, 1)
    return initial, to_uint8(image[0].permute(1, 2, 0).numpy())


def test_mod_json_canvas_equals_mixture_of_diffusers(tmp_path):
    """Overlaps that are not multiples of 8, a tile guided at 0.5 and one at 60, an exclusive
    tile seed and a reroll box: the same initial noise and the same image as Mixture of
    Diffusers' algorithm on the same model (the tiny SD with SD's 8x latent geometry)."""
    import json
    import warnings

    from tests.tiny import tiny_pipeline

    sd = tiny_pipeline(vae_factor=8)
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(MOD_GRID))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the floored overlaps are reported
        plan = plan_canvas(load_canvas_config(path))
    assert (plan.height, plan.width) == (104, 96)
    initial, image = mod_reference(sd, MOD_GRID)
    assert torch.equal(initial_noise(plan, 4, 8)[0], initial)
    assert_same_image(render_canvas(sd, plan), image)
