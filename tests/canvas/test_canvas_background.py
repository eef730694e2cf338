"""Canvases over a background photo: the photo kept outside the regions, pixel for pixel;
inpainting UNets in canvas windows (against diffusers' inpainting pipeline); bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hypermosaic.pipelines.canvas.loop as loop
from hypermosaic.canvas import canvas_config_from_dict, load_canvas_config, plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas import render_canvas
from hypermosaic.pipelines.canvas.tiled_vae import encode_tiled

SIZE = 64  # the tiny models' native size
PROMPT = "a red house"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    from tests.tiny import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """``room.png`` (a random photo of the canvas's size), ``left.png`` (a mask of the left
    half), ``small.png`` (a 32 px mask), ``blob.png`` (a mask off the 8 px cells, part of
    `BOX`), ``ref.png`` (a reference drawing)."""
    photo = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "room.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, : SIZE // 2] = 255
    Image.fromarray(mask).save(tmp_path / "left.png")
    Image.fromarray(mask[:32, :32]).save(tmp_path / "small.png")
    blob = np.zeros((SIZE, SIZE), np.uint8)
    blob[20:44, 4:30] = 255
    Image.fromarray(blob).save(tmp_path / "blob.png")
    Image.fromarray(np.full((24, 40, 3), (20, 200, 90), np.uint8)).save(tmp_path / "ref.png")
    return tmp_path


def plan_of(base: Path, regions: list[dict], **extra):
    raw = {"width": SIZE, "height": SIZE, "steps": 2, "seed": 5, "guidance": 6.0,
           "background": {"image": "room.png", "prompt": PROMPT}, "regions": regions, **extra}
    return plan_canvas(canvas_config_from_dict(raw, base=base, source="bg.toml"))


def brush(mask: str = "left.png", **extra) -> dict:
    return {"kind": "brush", "mask": mask, "prompt": PROMPT, **extra}


BOX = {"top": 16, "bottom": 48, "left": 8, "right": 40}
MASKED = {  # text, image and reroll regions limited to blob.png
    "text": {**BOX, "prompt": "a window", "mask": "blob.png", "blur": 4},
    "image": {**BOX, "kind": "image", "image": "ref.png", "mask": "blob.png"},
    "reroll": {**BOX, "kind": "reroll", "seed": 9, "mask": "blob.png"},
}


@pytest.mark.parametrize("region", [
    brush(blur=8),
    {"top": 16, "bottom": 48, "left": 8, "right": 40, "prompt": "a window"},
])
def test_pixels_outside_every_mask_are_the_photo(pipe, files, region):
    plan = plan_of(files, [region])
    image = render_canvas(pipe, plan)
    photo = np.asarray(Image.open(files / "room.png"))
    outside = ~plan.background.repaint
    assert outside.any() and plan.background.repaint.any()
    assert np.array_equal(image[outside], photo[outside])
    assert (image[plan.background.repaint] != photo[plan.background.repaint]).mean() > 0.5


@pytest.mark.parametrize("kind", MASKED)
def test_a_masked_region_repaints_only_inside_its_mask(pipe, files, kind):
    plan = plan_of(files, [MASKED[kind]])
    blob = np.asarray(Image.open(files / "blob.png")) > 0
    inside_box = np.zeros_like(blob)
    inside_box[16:48, 8:40] = True
    assert np.array_equal(plan.background.repaint, blob & inside_box)
    image = render_canvas(pipe, plan)
    photo = np.asarray(Image.open(files / "room.png"))
    outside = ~plan.background.repaint
    assert np.array_equal(image[outside], photo[outside])
    assert (image[~outside] != photo[~outside]).mean() > 0.5


def test_a_masked_reroll_edits_the_noise_only_inside_its_mask(files):
    plain = plan_of(files, [brush()])
    rerolled = plan_of(files, [brush(), MASKED["reroll"]])
    before, _ = loop.initial_noise(plain, 4, 8)
    after, _ = loop.initial_noise(rerolled, 4, 8)
    inside = np.zeros((SIZE // 8, SIZE // 8), bool)
    inside[2:6, 1:5] = True  # BOX in 8 px cells
    changed = (before != after).any(dim=1)[0].numpy()
    assert np.array_equal(changed, (rerolled.noise_edits[0].mask.cells > 0) & inside)
    assert changed.sum() < inside.sum()


def test_without_a_photo_a_mask_weights_the_text_regions_window(files):
    from hypermosaic.pipelines.canvas.masks import region_weights
    from hypermosaic.pipelines.canvas.windows import TextRows, prompt_windows

    whole = {"top": 0, "bottom": SIZE, "left": 0, "right": SIZE, "prompt": "a wall"}
    sharp = {**MASKED["text"], "blur": 0}
    raw = {"width": SIZE, "height": SIZE, "steps": 2, "regions": [whole, sharp, MASKED["text"]]}
    plan = plan_canvas(canvas_config_from_dict(raw, base=files, source="bg.toml"))
    assert plan.background is None
    _, sharp_window, blurred_window = prompt_windows(plan, 8, TextRows())
    cells = plan.prompts[1].mask.cells[2:6, 1:5]  # BOX in 8 px cells
    expected = region_weights("gaussian", 4, 4) * cells
    assert np.allclose(sharp_window.weight[0, 0].numpy(), expected)
    assert (cells == 0).any() and (blurred_window.weight > 0).all()


def test_a_masked_text_region_leaves_its_uncovered_box_to_other_prompts(files):
    raw = {"width": SIZE, "height": SIZE, "steps": 2, "regions": [MASKED["text"]]}
    with pytest.raises(InputError, match=r"^bg.toml: canvas: .* covered by no prompt"):
        plan_canvas(canvas_config_from_dict(raw, base=files, source="bg.toml"))


def test_one_window_with_an_inpainting_model_is_diffusers_inpainting(files, monkeypatch):
    from diffusers import StableDiffusionInpaintPipeline

    from tests.tiny import tiny_inpaint_pipeline

    inpaint = tiny_inpaint_pipeline()
    plan = plan_of(files, [brush()])  # brush and background: one window each, the same prompt
    caught: list[torch.Tensor] = []
    decode = loop.decode_tiled
    monkeypatch.setattr(loop, "decode_tiled",
                        lambda vae, z, *a: caught.append(z.clone()) or decode(vae, z, *a))
    image = render_canvas(inpaint, plan)

    photo = plan.background.pixels
    masked = np.where(plan.background.repaint[..., None], np.float32(0),
                      photo.astype(np.float32) / 255.0 * 2.0 - 1.0)
    theirs = StableDiffusionInpaintPipeline(**inpaint.components)
    theirs.set_progress_bar_config(disable=True)
    latents = theirs(
        PROMPT, image=torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255.0,
        mask_image=torch.from_numpy(plan.background.repaint.astype(np.float32))[None, None],
        masked_image_latents=encode_tiled(inpaint.vae, masked, 128, 32), height=SIZE,
        width=SIZE, num_inference_steps=2, guidance_scale=6.0, strength=1.0,
        generator=torch.Generator().manual_seed(5), output_type="latent",
    ).images
    assert torch.allclose(caught[0], latents, atol=1e-4)
    outside = ~plan.background.repaint
    assert np.array_equal(image[outside], photo[outside])


def test_a_canvas_without_a_photo_is_unchanged_by_its_machinery(pipe, files):
    raw = {"width": SIZE, "height": SIZE, "steps": 2, "seed": 5,
           "background": {"prompt": "a meadow"}, "regions": [brush()]}
    plan = plan_canvas(canvas_config_from_dict(raw, base=files, source="bg.toml"))
    assert plan.background is None
    with_photo = plan_of(files, [brush()])
    assert [b.cells.tolist() for b in plan.brushes] == [b.cells.tolist()
                                                        for b in with_photo.brushes]


def test_the_example_plans_over_its_photo():
    examples = Path(__file__).resolve().parents[2] / "examples"
    plan = plan_canvas(load_canvas_config(examples / "canvas_background.toml"))
    assert plan.background is not None and plan.background.pixels.shape == (400, 600, 3)
    assert plan.background.repaint.sum() == 160 * 176


def test_an_inpainting_model_needs_a_photo(files):
    from tests.tiny import tiny_inpaint_pipeline

    raw = {"width": SIZE, "height": SIZE, "steps": 1,
           "regions": [{"top": 0, "bottom": SIZE, "left": 0, "right": SIZE, "prompt": "p"}]}
    plan = plan_canvas(canvas_config_from_dict(raw, base=files, source="bg.toml"))
    with pytest.raises(InputError, match=r"^model: a UNet with 9 input channels paints only "):
        render_canvas(tiny_inpaint_pipeline(), plan)


@pytest.mark.parametrize(("change", "message"), [
    ({"background": {"image": "small.png", "prompt": "p"}},
     r"^bg.toml: background.image: .*small.png is 32x32 but the canvas is 64x64"),
    ({"background": {"image": "gone.png", "prompt": "p"}},
     r"^bg.toml: background.image: .*gone.png: no such image file"),
    ({"regions": [brush("small.png")]},
     r"^bg.toml: regions.0.mask: .*small.png is 32x32 but the canvas is 64x64"),
    ({"regions": [brush("gone.png")]}, r"^bg.toml: regions.0.mask: .*gone.png: no such mask"),
    *[({"regions": [{**MASKED[kind], "mask": mask}]},
       rf"^bg.toml: regions.0.mask: .*{mask}{message}")
      for kind in MASKED
      for mask, message in [("small.png", " is 32x32 but the canvas is 64x64"),
                            ("gone.png", ": no such mask")]],
    ({"regions": [{**BOX, "prompt": "p", "blur": 2}]},
     r"^bg.toml: regions.0.blur: a blur needs a mask"),
    ({"regions": []}, r"^bg.toml: background.image: no regions to repaint"),
    ({"background": {"image": "room.png", "prompt": "p", "feather": -1}},
     r"^bg.toml: background.feather: "),
])
def test_bad_inputs_name_the_key(files, change, message):
    with pytest.raises(InputError, match=message):
        change = dict(change)
        plan_of(files, change.pop("regions", [brush()]), **change)
