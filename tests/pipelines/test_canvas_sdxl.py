"""The canvas on the tiny random SDXL (two text encoders, pooled embeddings, time ids): one
window against diffusers' SDXL text-to-image, batched windows against one by one, every
region kind, a Mixture of Diffusers JSON grid, and the command line end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import hypermosaic.pipelines.canvas.loop as loop
from hypermosaic.canvas import canvas_config_from_dict, load_canvas_config
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas import render_canvas
from hypermosaic.pipelines.canvas.conditioning import (
    decoding_vae,
    encode_table,
    window_time_ids,
)
from hypermosaic.pipelines.canvas.windows import TextRows, prompt_windows
from hypermosaic.pipelines.models import make_scheduler
from hypermosaic.pipelines.sdxl import check_added_embedding
from hypermosaic.store import LOCK_NAME

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NATIVE = 64  # the tiny SDXL's native size: sample_size 32 latents, VAE factor 2
PROMPT = "a red house"
SDXL_REFUSED = ("models with two text encoders (SDXL) are not supported yet; use an SD 1.x or "
                "2.x model")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sdxl():
    from tests.tiny import tiny_pipeline

    return tiny_pipeline("sdxl")


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sdxl", "sdxl")


def plan_of(raw: dict, base: Path = EXAMPLES):
    return plan_canvas(canvas_config_from_dict(raw, base=base, source="x.toml"))


def box(top: int, bottom: int, left: int, right: int, **extra) -> dict:
    return {"top": top, "bottom": bottom, "left": left, "right": right, **extra}


def render_latents(pipe, plan, monkeypatch) -> tuple[np.ndarray, torch.Tensor]:
    """The canvas and its final latents (what the loop hands its VAE)."""
    seen: list[torch.Tensor] = []
    decode = loop.decode_tiled

    def capture(vae, latents, tile, overlap):
        seen.append(latents.clone())
        return decode(vae, latents, tile, overlap)

    monkeypatch.setattr(loop, "decode_tiled", capture)
    image = render_canvas(pipe, plan)
    monkeypatch.undo()
    return image, seen[0]


@pytest.mark.parametrize(("scheduler", "negative", "size"), [
    ("default", None, (NATIVE, NATIVE)),
    ("euler_ancestral", "blurry, dark", (NATIVE, NATIVE)),
    ("dpm++2m", None, (48, NATIVE)),
])
def test_one_window_equals_diffusers_sdxl_text_to_image(sdxl, monkeypatch, scheduler, negative,
                                                        size):
    """Both text encoders, pooled embeddings, time ids ``(H, W, 0, 0, H, W)``; an empty
    negative prompt embeds as zeros (``force_zeros_for_empty_prompt``), as diffusers'."""
    from diffusers import StableDiffusionXLPipeline

    height, width = size
    plan = plan_of({"width": width, "height": height, "steps": 2, "seed": 11,
                    "scheduler": scheduler, "guidance": 6.0, "negative_prompt": negative or "",
                    "regions": [box(0, height, 0, width, prompt=PROMPT)]})
    _, ours = render_latents(sdxl, plan, monkeypatch)
    components = {**sdxl.components, "scheduler": make_scheduler(scheduler, sdxl.scheduler)}
    reference = StableDiffusionXLPipeline(**components)
    reference.set_progress_bar_config(disable=True)
    theirs = reference(
        PROMPT, negative_prompt=negative, height=height, width=width, num_inference_steps=2,
        guidance_scale=6.0, generator=torch.Generator().manual_seed(11), output_type="latent",
    ).images
    assert ours.shape == theirs.shape == (1, 4, height // 2, width // 2)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)


def test_an_lcm_sdxl_unet_equals_diffusers_sdxl_text_to_image(sdxl, monkeypatch):
    """An LCM-distilled SDXL UNet (``time_cond_proj_dim``): guidance embedded, no
    unconditional rows, pooled embeddings and time ids as for SDXL."""
    from diffusers import LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(sdxl.unet.config, time_cond_proj_dim=32).eval()
    scheduler = LCMScheduler.from_config(sdxl.scheduler.config)
    lcm = StableDiffusionXLPipeline(**{**sdxl.components, "unet": unet, "scheduler": scheduler})
    lcm.set_progress_bar_config(disable=True)
    plan = plan_of({"width": NATIVE, "height": NATIVE, "steps": 2, "seed": 12,
                    "scheduler": "lcm", "guidance": 6.0,
                    "regions": [box(0, NATIVE, 0, NATIVE, prompt=PROMPT)]})
    _, ours = render_latents(lcm, plan, monkeypatch)
    theirs = lcm(PROMPT, height=NATIVE, width=NATIVE, num_inference_steps=2, guidance_scale=6.0,
                 generator=torch.Generator().manual_seed(12), output_type="latent").images
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)


def test_each_window_gets_its_own_time_ids_and_pooled_rows(sdxl):
    """A window is the crop of the canvas at its offset: (H, W, top, left, h, w) in pixels,
    its unconditional row too; the pooled rows follow the embedding rows."""
    plan = plan_of({"width": 128, "height": 96, "steps": 1,
                    "regions": [box(0, 96, 0, 128, prompt="a lake"),
                                box(16, 80, 32, 128, prompt="a hill", negative_prompt="fog")]})
    rows = TextRows()
    windows = prompt_windows(plan, 2, rows)
    assert [window_time_ids(w, (96, 128), 2) for w in windows] == [
        (96, 128, 0, 0, 96, 128), (96, 128, 16, 32, 64, 96)]
    table = encode_table(sdxl, [text for text, _ in rows.texts], (96, 128), 2,
                         torch.device("cpu"))
    assert rows.texts == {("", None): 0, ("a lake", None): 1, ("fog", None): 2,
                          ("a hill", None): 3}
    assert table.pooled is not None and not table.states[0].any() and not table.pooled[0].any()
    kwargs = table.unet_kwargs(windows[1:], torch.float32)
    added = kwargs["added_cond_kwargs"]
    assert torch.equal(kwargs["encoder_hidden_states"], table.states[[2, 3]])
    assert torch.equal(added["text_embeds"], table.pooled[[2, 3]])
    assert added["time_ids"].tolist() == [[96, 128, 16, 32, 64, 96]] * 2


GRID = {"steps": 2, "seed": 3, "guidance": 5.0, "grid": {
    "prompt": [["a forest", "a lake"], ["a hill", "a town"]], "tile_height": 48,
    "tile_width": 48, "tile_row_overlap": 16, "tile_col_overlap": 24}}


def regions_canvas(base: Path) -> dict:
    """Text regions of two shapes, a brush and the background, with bootstrap steps."""
    mask = np.zeros((64, 96), np.uint8)
    mask[8:40, 40:88] = 255
    Image.fromarray(mask).save(base / "brush.png")
    return {"width": 96, "height": 64, "steps": 2, "seed": 4, "bootstrap_steps": 1,
            "window_stride": 32, "background": {"prompt": "a meadow"},
            "regions": [box(0, 64, 0, 48, prompt="a tree"), box(32, 64, 48, 96, prompt="a dog"),
                        {"kind": "brush", "mask": "brush.png", "prompt": "a cloud", "blur": 8}]}


@pytest.mark.parametrize("kind", ["grid", "regions"])
def test_batched_windows_equal_one_window_per_unet_call(sdxl, monkeypatch, tmp_path, kind):
    """A 2x2 grid with overlaps, and text regions, a brush and the background: batch_size 4
    (windows of one shape together, their CFG rows with their pooled embeddings and time ids)
    gives the latents of one window per call; the canvas is finite and the canvas's size."""
    raw = GRID if kind == "grid" else regions_canvas(tmp_path)
    batched = plan_of({**raw, "batch_size": 4}, tmp_path)
    image, latents = render_latents(sdxl, batched, monkeypatch)
    _, single = render_latents(sdxl, dataclasses.replace(batched, batch_size=1), monkeypatch)
    assert image.shape == (batched.height, batched.width, 3) and image.dtype == np.uint8
    assert torch.isfinite(latents).all()
    # batched matrix products sum in another order: float32 rounding (as Stable Diffusion's)
    assert (latents - single).abs().max() <= 1e-5 * single.abs().max()
    if kind == "grid":
        assert (batched.height, batched.width) == (80, 72)


def test_the_unet_sees_each_windows_time_ids(sdxl, monkeypatch):
    """Through the loop: every call's rows carry their window's time ids."""
    seen: list[tuple[int, ...]] = []
    forward = sdxl.unet.forward

    def spy(*args, added_cond_kwargs, **kwargs):
        seen.extend(tuple(row) for row in added_cond_kwargs["time_ids"].int().tolist())
        return forward(*args, added_cond_kwargs=added_cond_kwargs, **kwargs)

    monkeypatch.setattr(sdxl.unet, "forward", spy)
    render_canvas(sdxl, dataclasses.replace(plan_of(GRID), steps=1))
    monkeypatch.undo()
    assert sorted(set(seen)) == [(80, 72, top, left, 48, 48) for top in (0, 32)
                                 for left in (0, 24)]
    assert len(seen) == 4 * 2  # one step: four windows, each its unconditional row and prompt


def test_every_region_kind_over_a_photo(sdxl, tmp_path):
    """Brush, text region with a mask, image and reroll regions over a background photo: the
    photo is kept, pixel for pixel, outside what they repaint."""
    photo = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "room.png")
    mask = np.zeros((64, 96), np.uint8)
    mask[8:40, 8:40] = 255
    Image.fromarray(mask).save(tmp_path / "blob.png")
    Image.fromarray(np.full((24, 32, 3), (20, 200, 90), np.uint8)).save(tmp_path / "ref.png")
    plan = plan_of({"width": 96, "height": 64, "steps": 2, "seed": 5,
                    "background": {"image": "room.png", "prompt": "a room", "feather": 0},
                    "regions": [{"kind": "brush", "mask": "blob.png", "prompt": "a sofa"},
                                box(0, 32, 48, 96, prompt="a lamp", mask="blob.png"),
                                box(40, 64, 48, 80, kind="image", image="ref.png"),
                                box(32, 64, 0, 32, kind="reroll", seed=9)]}, tmp_path)
    image = render_canvas(sdxl, plan)
    assert image.shape == (64, 96, 3)
    assert plan.background is not None
    kept = ~plan.background.repaint
    assert kept.any() and np.array_equal(image[kept], photo[kept])


def test_an_sdxl_inpainting_unet_paints_over_a_photo(sdxl, tmp_path):
    """A 9-channel SDXL UNet sees the mask and the masked photo's latents in its windows."""
    from diffusers import UNet2DConditionModel

    photo = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "room.png")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(sdxl.unet.config, in_channels=9).eval()
    pipe = type(sdxl)(**{**sdxl.components, "unet": unet})
    plan = plan_of({"width": 64, "height": 64, "steps": 2, "seed": 2,
                    "background": {"image": "room.png", "prompt": "a room", "feather": 0},
                    "regions": [box(8, 40, 8, 40, prompt="a lamp")]}, tmp_path)
    image = render_canvas(pipe, plan)
    assert plan.background is not None
    kept = ~plan.background.repaint
    assert np.array_equal(image[kept], photo[kept])
    assert not np.array_equal(image[~kept], photo[~kept])


def test_a_mod_json_grid_runs_unchanged(sdxl, tmp_path):
    """Mixture of Diffusers' JSON: overlaps off the 8 px grid, per-tile guidance, an exclusive
    seeded tile, a reroll box, its LMS scheduler and cpu_vae."""
    raw = {"prompt": [["a forest, ukiyo-e", "a forest, by velazquez"],
                      ["a forest, van gogh", "a forest, synthwave"]],
           "tile_height": 40, "tile_width": 48, "tile_row_overlap": 12, "tile_col_overlap": 20,
           "gc": 8, "gc_tiles": [[None, 0.5], [None, None]], "seed": 639688656, "steps": 2,
           "scheduler": "lms", "cpu_vae": True, "seed_tiles": [[None, 7], [None, None]],
           "seed_tiles_mode": "exclusive", "seed_reroll_regions": [[0, 16, 8, 32, 5]]}
    path = tmp_path / "forest.json"
    path.write_text(json.dumps(raw))
    with pytest.warns(UserWarning):
        config = load_canvas_config(path)
    plan = plan_canvas(config)
    image = render_canvas(sdxl, plan)
    assert image.shape == (plan.height, plan.width, 3) == (64, 72, 3)
    assert 0 < image.std()


def test_image_prompts_on_sdxl_are_refused_naming_the_region(sdxl):
    plan = plan_of({"width": NATIVE, "height": NATIVE, "steps": 1,
                    "regions": [box(0, NATIVE, 0, NATIVE, prompt=PROMPT,
                                    image_prompt="images/chelsea.png")]})
    with pytest.raises(InputError) as refused:
        render_canvas(sdxl, plan)
    assert str(refused.value) == f"regions.0.image_prompt: {SDXL_REFUSED}"


def test_a_unet_taking_other_added_conditions_is_refused(sdxl):
    """A refiner-like model: the pooled embedding and time ids do not fit its UNet."""
    narrow = SimpleNamespace(config=SimpleNamespace(projection_dim=16))
    with pytest.raises(InputError, match=r"^model: its UNet's added embedding takes 80 values, "
                                         r"not 6 time ids and a pooled embedding of 16 \(64\)"):
        check_added_embedding(SimpleNamespace(unet=sdxl.unet, text_encoder_2=narrow))
    check_added_embedding(sdxl)


def test_a_float16_sdxl_vae_decodes_in_float32(sdxl):
    """As diffusers' SDXL pipelines (``force_upcast``); a Stable Diffusion VAE is left as it is."""
    half = copy.deepcopy(sdxl.vae).to(torch.float16)
    twin = decoding_vae(SimpleNamespace(unet=sdxl.unet, vae=half), cpu=False)
    assert twin is not half and twin.dtype == torch.float32 and twin.device == half.device
    assert decoding_vae(SimpleNamespace(unet=sdxl.unet, vae=half), cpu=False) is twin
    sd_unet = SimpleNamespace(config=SimpleNamespace())
    assert decoding_vae(SimpleNamespace(unet=sd_unet, vae=half), cpu=False) is half


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "xl.toml"
    path.write_text(f'width = 64\nheight = 32\nsteps = 2\nseed = 6\nout = "{tmp_path / "out"}"\n'
                    f'[[regions]]\ntop = 0\nbottom = 32\nleft = 0\nright = 48\nprompt = "a lake"\n'
                    f'[[regions]]\ntop = 0\nbottom = 32\nleft = 24\nright = 64\nprompt = "a hill"\n'
                    + extra)
    return path


@pytest.mark.slow
def test_the_command_line_paints_on_a_tiny_sdxl_folder(tmp_path, sdxl_dir):
    """`hypermosaic canvas` on the pool: the worker loads the SDXL folder; its canvas is the
    in-process render of the same plan (with the worker's torch threads: all cores)."""
    from hypermosaic.executor import cpu_count
    from hypermosaic.pipelines.models import load_pipeline

    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["canvas", str(config), "--model", str(sdxl_dir),
                                      "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == ["xl-6.png"]
    painted = np.asarray(Image.open(out / "xl-6.png"))
    plan = plan_canvas(load_canvas_config(config, {"model": str(sdxl_dir)}))
    pipe = load_pipeline(str(sdxl_dir), device="cpu", dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_count())
    try:
        expected = render_canvas(pipe, plan)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(painted, expected)


def test_an_sd_only_key_on_sdxl_exits_2_with_one_line_before_any_work(tmp_path, sdxl_dir):
    """``image_prompt`` (Stable Diffusion only) on an SDXL model: the key, one line, exit 2,
    nothing written, the model not loaded."""
    config = write_config(tmp_path, 'image_prompt = "chelsea.png"\n')
    Image.open(EXAMPLES / "images" / "chelsea.png").save(tmp_path / "chelsea.png")
    result = CliRunner().invoke(cli, ["canvas", str(config), "--model", str(sdxl_dir)])
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {config}: regions.1.image_prompt: {SDXL_REFUSED}\n"
    assert not (tmp_path / "out").exists()
