"""Image prompts on canvas text regions (docs/canvas.md), on the tiny model and a tiny CLIP
vision model: settings 0 change no pixel, the rest change the region, one vision call per
canvas; bad settings stop `hypermosaic canvas` with one line before any work."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from hypermosaic.canvas import canvas_config_from_dict
from hypermosaic.canvas.image_prompts import GUIDE_SIDE
from hypermosaic.canvas.jobs import check_image_prompts
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.image_prompts import DEFAULT_VISION_MODEL
from tests.helpers import STRONG, ZERO

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHELSEA = EXAMPLES / "images" / "chelsea.png"
SIDE = 64  # the tiny model's native size


@pytest.fixture(scope="module")
def pipe() -> Any:
    from tests.tiny import tiny_pipeline

    return tiny_pipeline()


def region(left: int, image_prompt: Any = None, prompt: str = "a red house") -> dict[str, Any]:
    raw = {"top": 0, "bottom": SIDE, "left": left, "right": left + SIDE, "prompt": prompt,
           "mask_type": "constant"}
    return raw if image_prompt is None else {**raw, "image_prompt": image_prompt}


def canvas(*regions: dict[str, Any], base: Path = EXAMPLES) -> Any:
    raw = {"width": SIDE * len(regions), "height": SIDE, "steps": 2, "seed": 3,
           "guidance": 5.0, "regions": list(regions)}
    return canvas_config_from_dict(raw, base=base, source="c.toml")


def test_a_path_alone_or_a_table_relative_to_the_config(tmp_path: Path) -> None:
    short = canvas(region(0, "images/chelsea.png")).regions[0].image_prompt
    table = canvas(region(0, {"image": "images/chelsea.png", "threshold": 0.4})).regions[0]
    assert short.image == table.image_prompt.image == str(CHELSEA)
    assert short.threshold == 0.25 and table.image_prompt.threshold == 0.4
    assert short.vision_model == DEFAULT_VISION_MODEL
    plan = plan_canvas(canvas(region(0, "images/chelsea.png"), region(SIDE)))
    guided, plain = plan.prompts
    assert plain.image_prompt is None and guided.image_prompt is not None
    assert guided.image_prompt.pixels.shape == (GUIDE_SIDE, GUIDE_SIDE, 3)
    assert guided.image_prompt.items["threshold"] == 0.25
    other = plan_canvas(canvas(region(0, {"image": "images/chelsea.png", "threshold": 0.4}),
                               region(SIDE)))
    assert repr(other) != repr(plan)  # the settings are in the job's key


def test_regions_without_image_prompts_plan_as_before() -> None:
    plan = plan_canvas(canvas(region(0)))
    assert plan.prompts[0].image_prompt is None


def render_pair(pipe: Any, vision_dir: Path, tmp_path: Path, settings: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The same two-region canvas without and with an image prompt on region 0; the image
    is deleted once planned (workers read no files)."""
    from hypermosaic.pipelines.canvas.loop import render_canvas

    image = tmp_path / "style.png"
    image.write_bytes(CHELSEA.read_bytes())
    plain = plan_canvas(canvas(region(0), region(SIDE)))
    prompt = {"image": "style.png", "vision_model": str(vision_dir), **settings}
    guided = plan_canvas(canvas(region(0, prompt), region(SIDE), base=tmp_path))
    image.unlink()
    return render_canvas(pipe, plain), render_canvas(pipe, guided)


@pytest.mark.usefixtures("one_torch_thread")
def test_all_settings_zero_is_byte_identical_to_no_image_prompt(
        pipe: Any, vision_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hypermosaic.pipelines.image_prompt.canvas as canvas_prompts

    monkeypatch.setattr(canvas_prompts, "load_vision_model", None)  # never loaded
    plain, zero = render_pair(pipe, vision_dir, tmp_path, ZERO)
    assert np.array_equal(plain, zero)


@pytest.mark.usefixtures("one_torch_thread")
def test_an_image_prompt_changes_its_region(pipe: Any, vision_dir: Path, tmp_path: Path) -> None:
    plain, guided = render_pair(pipe, vision_dir, tmp_path, STRONG)
    assert not np.array_equal(plain[:, :SIDE], guided[:, :SIDE])


@pytest.mark.usefixtures("one_torch_thread")
def test_the_vision_model_runs_once_per_canvas_and_loads_once_per_pipeline(
        pipe: Any, vision_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hypermosaic.pipelines.image_prompt.canvas as canvas_prompts
    from hypermosaic.pipelines.canvas.loop import render_canvas

    loads: list[str] = []
    calls: list[int] = []
    load, embed = canvas_prompts.load_vision_model, canvas_prompts.image_token_embeddings

    def counted_load(name: str, *args: Any) -> Any:
        loads.append(name)
        return load(name, *args)

    def counted_embed(vision: Any, images: np.ndarray, *args: Any) -> Any:
        calls.append(len(images))
        return embed(vision, images, *args)

    monkeypatch.setattr(canvas_prompts, "load_vision_model", counted_load)
    monkeypatch.setattr(canvas_prompts, "image_token_embeddings", counted_embed)
    monkeypatch.setattr(canvas_prompts, "_VISION", type(canvas_prompts._VISION)())
    (tmp_path / "other.png").write_bytes(_noise_png())
    (tmp_path / "style.png").write_bytes(CHELSEA.read_bytes())
    vision = {"vision_model": str(vision_dir), **STRONG}
    config = canvas(region(0, {"image": "style.png", **vision}),
                    region(SIDE, {"image": "style.png", **vision}, prompt="a blue sea"),
                    region(2 * SIDE, {"image": "other.png", **vision}), base=tmp_path)
    for seed in (3, 4):
        render_canvas(pipe, plan_canvas(config, seed))
    assert loads == [str(vision_dir)]  # once for the pipeline, not per canvas
    assert calls == [2, 2]  # per canvas: one call, each distinct image once (not per step)


def _noise_png() -> bytes:
    from io import BytesIO

    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _toml(tmp_path: Path, tiny_dir: Path, image_prompt: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'width = {SIDE}\nheight = {SIDE}\nsteps = 1\nmodel = "{tiny_dir}"\n'
        f'out = "{tmp_path / "out"}"\n[[regions]]\ntop = 0\nbottom = {SIDE}\nleft = 0\n'
        f'right = {SIDE}\nprompt = "a red house"\nimage_prompt = {image_prompt}\n')
    return path


@pytest.mark.parametrize(("table", "message"), [
    ('{{ image = "{chelsea}", vision_model = "{vision}", threshold = nan }}',
     "c.toml: regions.0.image_prompt.threshold: not a number"),
    ('{{ image = "{chelsea}", vision_model = "{vision}", linear_end = 2 }}',
     "c.toml: regions.0.image_prompt.linear_end: "),
    ('{{ image = "{chelsea}", vision_model = "{vision}", method = "ip" }}',
     "c.toml: regions.0.image_prompt.method: "),
    ('{{ image = "{chelsea}", method = "ip_adapter" }}',
     "c.toml: regions.0.image_prompt.method: 'ip_adapter' is not supported on canvas regions"),
    ('{{ vision_model = "{vision}" }}', "c.toml: regions.0.image_prompt.image: missing"),
    ('"tile"', 'c.toml: regions.0.image_prompt.image: "tile" is for builds'),
    ('"{tmp}/absent.png"', "c.toml: regions.0.image_prompt.image: {tmp}/absent.png: no such "
                           "image file"),
    ('{{ image = "{chelsea}", vision_model = "{tmp}/nowhere" }}',
     "c.toml: regions.0.image_prompt.vision_model: {tmp}/nowhere: no such"),
    ('{{ image = "{chelsea}", vision_model = "{narrow}" }}',
     "c.toml: regions.0.image_prompt.vision_model: {narrow} projects images to 16 values but "
     "the text encoder's prompt embeddings (hidden states) have 32"),
    ('{{ image = "{chelsea}", vision_model = "{vision}", space = "projected" }}',
     "c.toml: regions.0.image_prompt.space: 'projected' needs the text encoder's projection"),
])
def test_bad_image_prompts_exit_2_naming_the_key_before_any_work(
        table: str, message: str, tiny_dir: Path, vision_dir: Path, narrow_vision_dir: Path,
        tmp_path: Path) -> None:
    names = {"chelsea": CHELSEA, "vision": vision_dir, "narrow": narrow_vision_dir,
             "tmp": tmp_path}
    config = _toml(tmp_path, tiny_dir, table.format(**names))
    result = CliRunner().invoke(cli, ["canvas", str(config)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message.format(**names) in result.output
    assert not (tmp_path / "out").exists()


def test_sdxl_is_refused_naming_the_region(tmp_path: Path, vision_dir: Path) -> None:
    model = tmp_path / "sdxl"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps(
        {"text_encoder": ["transformers", "CLIPTextModel"],
         "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}))
    config = canvas(region(0, {"image": "images/chelsea.png", "vision_model": str(vision_dir)}))
    with pytest.raises(InputError, match=r"^c\.toml: regions\.0\.image_prompt: models with two "
                                         r"text encoders \(SDXL\) are not supported yet"):
        check_image_prompts(config, SimpleNamespace(folder=model))


@pytest.mark.usefixtures("one_torch_thread")
def test_a_canvas_with_an_image_prompt_on_a_worker_equals_one_in_process(
        tiny_dir: Path, vision_dir: Path, tmp_path: Path) -> None:
    """Through the pool (the worker's own pipeline, the plan's image): the same pixels."""
    import torch
    from distributed import Client
    from PIL import Image

    from hypermosaic.canvas.run import paint_canvases
    from hypermosaic.pipelines.canvas.loop import render_canvas
    from hypermosaic.pipelines.models import load_pipeline

    prompt = {"image": "images/chelsea.png", "vision_model": str(vision_dir), **STRONG}
    config = canvas_config_from_dict(
        {"width": 2 * SIDE, "height": SIDE, "steps": 2, "model": str(tiny_dir), "device": "cpu",
         "out": str(tmp_path / "out"), "regions": [region(0, prompt), region(SIDE)]},
        base=EXAMPLES, source="c.toml")
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=":0") as client:
        (result,) = paint_canvases([config], client=client)
    expected = render_canvas(load_pipeline(str(tiny_dir), device="cpu",
                                                    dtype=torch.float32), plan_canvas(config))
    assert np.array_equal(np.asarray(Image.open(result.outputs["image"])), expected)


def test_the_example_config_plans() -> None:
    from hypermosaic.canvas import load_canvas_config

    config = load_canvas_config(EXAMPLES / "canvas_image_prompt.toml")
    guided = plan_canvas(config).prompts[0].image_prompt
    assert guided is not None and guided.items["vision_model"] == DEFAULT_VISION_MODEL
