"""ControlNet on the tiny models: the build's tiles conditioned on themselves, canvas windows on
their crops of a control image; scale 0 changes nothing; a ControlNet for another model is
refused naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.canvas import canvas_config_from_dict, plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.pipelines.controlnet import check_controlnet
from hypermosaic.pipelines.img2img import DiffusionEngine, to_uint8
from hypermosaic.pipelines.models import locate_model
from tests.tiny import save_tiny_controlnet, tiny_controlnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_controlnet(tmp_path_factory.mktemp("cn") / "tiny-controlnet")


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    rng = np.random.default_rng(4)
    smooth = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    return np.ascontiguousarray(smooth.repeat(SIZE // 8, axis=1).repeat(SIZE // 8, axis=2))


def _jobs(count: int) -> list[TileJob]:
    return [TileJob(address=((0, i),), seed=50 + i, prompt="a tile", negative_prompt="",
                    strength=0.6, steps=4, guidance=7.5) for i in range(count)]


def _run(tiny_dir: Path, tiles: np.ndarray, controlnet: tuple[str, float] | None) -> np.ndarray:
    engine = DiffusionEngine(str(tiny_dir), batch_size=2, device="cpu", dtype="float32",
                             controlnet=controlnet)
    return engine.tiles(tiles, _jobs(len(tiles)), TileContext(tiles[0], 2, tiles[0]))


def test_build_tiles_scale_zero_is_no_controlnet_and_scale_one_changes_them(
        tiny_dir: Path, controlnet_dir: Path, tiles: np.ndarray) -> None:
    plain = _run(tiny_dir, tiles, None)
    np.testing.assert_array_equal(_run(tiny_dir, tiles, (str(controlnet_dir), 0.0)), plain)
    steered = _run(tiny_dir, tiles, (str(controlnet_dir), 1.0))
    assert np.abs(steered.astype(int) - plain.astype(int)).mean() > 1


def test_build_tiles_equal_diffusers_controlnet_img2img(tiny_dir: Path, controlnet_dir: Path,
                                                        tiles: np.ndarray) -> None:
    """The engine's batch ≡ diffusers' `StableDiffusionControlNetImg2ImgPipeline` called on
    the same tiles, each its own control image, one seed per tile."""
    from diffusers import (
        ControlNetModel,
        StableDiffusionControlNetImg2ImgPipeline,
        StableDiffusionPipeline,
    )

    base = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None)
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        **{**base.components, "controlnet": ControlNetModel.from_pretrained(controlnet_dir)})
    pipe.set_progress_bar_config(disable=True)
    images = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    expected = pipe(prompt=["a tile"] * 2, negative_prompt=[""] * 2, image=images,
                    control_image=images, strength=0.6, num_inference_steps=4,
                    guidance_scale=7.5, controlnet_conditioning_scale=0.8,
                    generator=[torch.Generator("cpu").manual_seed(50 + i) for i in range(2)],
                    output_type="np").images
    got = _run(tiny_dir, tiles, (str(controlnet_dir), 0.8))
    assert np.abs(got.astype(int) - to_uint8(expected).astype(int)).max() <= 1


def test_a_controlnet_for_another_model_is_refused_naming_the_key(tiny_dir: Path,
                                                                  tmp_path: Path) -> None:
    wide = save_tiny_controlnet(tmp_path / "wide", cross_attention_dim=48)
    with pytest.raises(InputError) as error:
        check_controlnet(locate_model(str(tiny_dir)), str(wide), "diffusion.controlnet.model")
    assert str(error.value) == (f"diffusion.controlnet.model: {wide} does not fit the model: "
                                "its cross_attention_dim is 48, the model's UNet has 32")
    with pytest.raises(InputError) as error:
        check_controlnet(locate_model(str(tiny_dir)), str(tiny_dir), "controlnet.model")
    assert str(error.value) == f"controlnet.model: cannot read {tiny_dir}/config.json"


@pytest.fixture(scope="module")
def pipe():
    from tests.tiny import tiny_pipeline

    return tiny_pipeline()


def _canvas(tmp_path: Path, control: np.ndarray, width: int, **controlnet: object):
    import pyvips

    pyvips.Image.new_from_array(control, interpretation="srgb").write_to_file(
        str(tmp_path / "control.png"))
    raw: dict = {"width": width, "height": SIZE, "steps": 2, "seed": 11, "guidance": 6.0,
                 "regions": [{"top": 0, "bottom": SIZE, "left": 0, "right": width,
                              "prompt": "a red house"}] if width == SIZE else [],
                 "background": None if width == SIZE else {"prompt": "a red house"}}
    if controlnet:
        raw["controlnet"] = {"image": "control.png", **controlnet}
    raw = {key: value for key, value in raw.items() if value is not None}
    return plan_canvas(canvas_config_from_dict(raw, base=tmp_path, source="test"))


def test_one_canvas_window_equals_diffusers_controlnet_text_to_image(pipe, tmp_path,
                                                                     tiles) -> None:
    from diffusers import StableDiffusionControlNetPipeline

    from hypermosaic.pipelines.canvas import render_canvas

    controlnet = tiny_controlnet()
    plan = _canvas(tmp_path, tiles[0], SIZE, model="cn", scale=0.7)
    ours = render_canvas(pipe, plan, None, controlnet)
    reference = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet,
                                                  requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    theirs = reference("a red house", image=torch.from_numpy(tiles[0]).permute(2, 0, 1)[None]
                       .float() / 255, height=SIZE, width=SIZE, num_inference_steps=2,
                       guidance_scale=6.0, controlnet_conditioning_scale=0.7,
                       generator=torch.Generator().manual_seed(11), output_type="np").images[0]
    diff = np.abs(ours.astype(int) - to_uint8(theirs).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_canvas_windows_scale_zero_is_no_controlnet_and_crops_steer_each_window(
        pipe, tmp_path, tiles) -> None:
    from hypermosaic.pipelines.canvas import render_canvas

    controlnet = tiny_controlnet()
    wide = np.concatenate([tiles[0], tiles[1]], axis=1)  # 128x64: three sliding windows
    plain = render_canvas(pipe, _canvas(tmp_path, wide, 2 * SIZE))
    zero = render_canvas(pipe, _canvas(tmp_path, wide, 2 * SIZE, model="cn", scale=0.0), None,
                         controlnet)
    np.testing.assert_array_equal(zero, plain)
    steered = render_canvas(pipe, _canvas(tmp_path, wide, 2 * SIZE, model="cn", scale=1.0),
                            None, controlnet)
    swapped = render_canvas(pipe, _canvas(tmp_path, wide[:, ::-1].copy(), 2 * SIZE, model="cn",
                                          scale=1.0), None, controlnet)
    for image in (steered, swapped):
        assert np.abs(image.astype(int) - plain.astype(int)).mean() > 1
    assert not np.array_equal(steered, swapped)


def test_canvas_control_image_of_another_size_is_refused(tmp_path, tiles) -> None:
    with pytest.raises(InputError) as error:
        _canvas(tmp_path, tiles[0][:32], SIZE, model="cn")
    assert str(error.value) == (f"test: controlnet.image: {tmp_path}/control.png is 64x32 but "
                                "the canvas is 64x64")


def test_canvas_controlnet_checks_name_their_keys(tiny_dir: Path, tmp_path: Path) -> None:
    from hypermosaic.canvas import plan_jobs

    wide = save_tiny_controlnet(tmp_path / "wide", cross_attention_dim=48)
    raw = {"width": SIZE, "height": SIZE, "steps": 2, "model": str(tiny_dir),
           "background": {"prompt": "a red house"},
           "controlnet": {"model": str(wide), "image": "tile"}}
    with pytest.raises(InputError) as error:
        plan_canvas(canvas_config_from_dict(raw, base=tmp_path, source="c.toml"))
    assert str(error.value) == ('c.toml: controlnet.image: "tile" conditions the windows on '
                                "the background photo, and the canvas has none (give an image "
                                "file)")
    import pyvips

    pyvips.Image.black(SIZE, SIZE, bands=3).write_to_file(str(tmp_path / "edges.png"))
    raw["controlnet"]["image"] = "edges.png"
    with pytest.raises(InputError) as error:
        plan_jobs([canvas_config_from_dict(raw, base=tmp_path, source="c.toml")])
    assert str(error.value) == (f"c.toml: controlnet.model: {wide} does not fit the model: its "
                                "cross_attention_dim is 48, the model's UNet has 32")
