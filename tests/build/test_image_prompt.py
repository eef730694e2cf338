"""Image prompts in `hypermosaic build` (docs/image-prompts.md), on the tiny model and a tiny
CLIP vision model: settings 0 change nothing, the rest change nodes, deterministically."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hypermosaic.build import build_mosaic
from hypermosaic.build.config import build_config_from_dict, load_build_config
from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.cli import cli
from hypermosaic.image_prompts import DEFAULT_VISION_MODEL, GUIDANCE_KEYS, ImagePromptConfig
from hypermosaic.store import Store
from tests.helpers import STRONG, ZERO, count_calls, diffusion_config, node_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_schema_mirrors_the_guidance_settings() -> None:
    from hypermosaic.pipelines.image_prompt import guidance, vision

    mirrored = ImagePromptConfig()
    defaults = guidance.ImagePromptSettings()
    assert set(GUIDANCE_KEYS) == {f.name for f in fields(defaults)}
    for key in GUIDANCE_KEYS:
        if key != "space":  # "auto" resolves to one of guidance.SPACES per model
            assert getattr(mirrored, key) == getattr(defaults, key), key
    assert set(ImagePromptConfig.model_fields["method"].annotation.__args__) == {
        *guidance.METHODS, "ip_adapter"}  # the IP-Adapter is diffusers', not a mapping
    assert DEFAULT_VISION_MODEL == vision.DEFAULT_VISION_MODEL


def test_configs_without_image_prompts_keep_their_old_fingerprints() -> None:
    """Stores built before image prompts existed resume (values from the code before them)."""
    assert fingerprints(load_build_config(EXAMPLES / "demo.toml")) == {
        "0": "26253e51115824d2", "1": "69a35ed0694a4f4b", "2": "2ae7e9e7e4113ce9"}
    raw = {"engine": "diffusion", "size": 64, "grid": 2, "depth": 2, "seed": 11,
           "primary": {"prompt": "a turtle", "steps": 2},
           "tiles": {"prompt": "shell {row} {col}", "strength": 0.6, "steps": 3,
                     "guidance": 5.0},
           "levels": {"2": {"strength": 0.4}},
           "diffusion": {"model": "some/model", "batch_size": 3, "device": "cpu"}}
    assert fingerprints(build_config_from_dict(raw, base=EXAMPLES, source="t.toml")) == {
        "0": "f6c4d756089dc3a6", "1": "88d32a6f715e4bc7", "2": "69ca3ecc9d35c7c2"}


def test_levels_override_the_block_and_prints_follow_the_settings(tmp_path: Path) -> None:
    block = {"image": "tile", "threshold": 0.5}
    levels = {"2": {"image_prompt": {"image": "images/chelsea.png", "clustered": 0.0}}}
    built = diffusion_config(Path("m"), tmp_path / "o", block, depth=2, levels=levels)
    assert built.image_prompt_at(1) == ImagePromptConfig(image="tile", threshold=0.5)
    deep = built.image_prompt_at(2)
    assert deep is not None and deep.threshold == 0.5 and deep.clustered == 0.0
    assert deep.image == str(EXAMPLES / "images" / "chelsea.png")  # relative to the config
    plain = fingerprints(diffusion_config(Path("m"), tmp_path / "o", depth=2))
    prints = fingerprints(built)
    assert prints["0"] == plain["0"] and prints["1"] != plain["1"]
    other = fingerprints(diffusion_config(Path("m"), tmp_path / "o", {**block, "threshold": 0.4},
                                depth=2, levels=levels))
    assert other["1"] != prints["1"] and other["2"] != prints["2"]


def test_all_settings_zero_is_byte_identical_to_no_image_prompt(
    tiny_dir: Path, vision_dir: Path, tmp_path: Path, local_client,
    plain_nodes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zero = diffusion_config(tiny_dir, tmp_path / "zero",
                  {"image": "tile", "vision_model": str(vision_dir), **ZERO})
    assert build_mosaic(zero, client=local_client, publish=False).ok
    assert node_bytes(zero.out) == plain_nodes


def test_image_prompts_change_nodes_and_resume_to_the_same_bytes(
    tiny_dir: Path, vision_dir: Path, tmp_path: Path, local_client,
    plain_nodes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for image in ("tile", "images/chelsea.png"):
        guided = diffusion_config(tiny_dir, tmp_path / Path(image).stem,
                        {"image": image, "vision_model": str(vision_dir), **STRONG})
        assert build_mosaic(guided, client=local_client, publish=False).ok
        nodes = node_bytes(guided.out)
        assert nodes["root.png"] == plain_nodes["root.png"]  # the primary is not guided
        assert all(nodes[name] != plain_nodes[name] for name in nodes if name != "root.png")
        Store(guided.out, "png").node_path(((1, 0),)).unlink()
        resumed = build_mosaic(guided, client=local_client, publish=False)
        assert resumed.ok and resumed.computed == 1
        assert node_bytes(guided.out) == nodes


@pytest.mark.slow
def test_tile_image_prompts_on_one_worker_equal_two(
    tiny_dir: Path, vision_dir: Path, tmp_path: Path, local_client,
    dask_client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompt = {"image": "tile", "vision_model": str(vision_dir), "concept": "a shell", **STRONG}
    built = {}
    for name, client in (("one", local_client), ("two", dask_client)):
        guided = diffusion_config(tiny_dir, tmp_path / name, prompt, depth=2,
                        diffusion={"model": str(tiny_dir), "batch_size": 3, "device": "cpu"})
        assert build_mosaic(guided, client=client, publish=False).ok
        built[name] = node_bytes(guided.out)
    assert len(built["one"]) == 21 and built["one"] == built["two"]


def _cli_config(tmp_path: Path, tiny_dir: Path, image_prompt: dict[str, Any]) -> Path:
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in image_prompt.items()]
    path = tmp_path / "bad.toml"
    path.write_text(
        f'engine = "diffusion"\nsize = 64\ngrid = 2\nout = "{tmp_path / "out"}"\n'
        f'[primary]\nprompt = "a turtle"\n[diffusion]\nmodel = "{tiny_dir}"\n'
        f"[image_prompt]\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("settings", "message"), [
    ({"vision_model": "{narrow}"}, "image_prompt.vision_model: {narrow} projects images to 16 "
     "values but the text encoder's prompt embeddings (hidden states) have 32"),
    ({"vision_model": "{tmp}/nowhere"}, "image_prompt.vision_model: {tmp}/nowhere: no such"),
    ({"vision_model": "{vision}", "space": "projected"},
     "image_prompt.space: 'projected' needs the text encoder's projection"),
    ({"vision_model": "{vision}", "image": "{tmp}/absent.png"},
     "image_prompt.image: {tmp}/absent.png: no such image file"),
])
def test_bad_image_prompts_exit_2_naming_the_key_before_any_work(
    settings: dict[str, str], message: str, tiny_dir: Path, vision_dir: Path,
    narrow_vision_dir: Path, tmp_path: Path,
) -> None:
    names = {"narrow": narrow_vision_dir, "vision": vision_dir, "tmp": tmp_path}
    settings = {"image": "tile", **{k: v.format(**names) for k, v in settings.items()}}
    result = CliRunner().invoke(cli, ["build", str(_cli_config(tmp_path, tiny_dir, settings))])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message.format(**names) in result.output
    assert not (tmp_path / "out").exists()


def test_the_example_config_validates() -> None:
    example = load_build_config(EXAMPLES / "image_prompt.toml")
    assert example.engine == "diffusion"
    prompt = example.image_prompt_at(1)
    assert prompt is not None and prompt.image == "tile"
    assert prompt.vision_model == DEFAULT_VISION_MODEL


def test_one_vision_call_per_batch_and_settings_zero_pass_the_same_tensors(
    tiny_dir: Path, vision_dir: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None,
) -> None:
    import numpy as np
    import torch

    from hypermosaic.build.engines import TileContext, TileJob
    from hypermosaic.pipelines.image_prompt import encode
    from hypermosaic.pipelines.img2img import DiffusionEngine

    calls = count_calls(monkeypatch, encode, "image_token_embeddings")
    engine = DiffusionEngine(str(tiny_dir), device="cpu", batch_size=2)
    inits = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    context = TileContext(parent=inits[0], grid=2, primary=inits[0])

    def jobs(**settings: Any) -> list[TileJob]:
        prompt = ImagePromptConfig(image="tile", vision_model=str(vision_dir), **settings)
        return [TileJob(((0, i),), i, f"shell {i}", "", 0.5, 2, 5.0,
                        image_prompt=tuple(prompt.model_dump().items())) for i in range(3)]

    guided = engine.tiles(inits, jobs(**STRONG), context)
    assert calls == [3]  # three tiles, two pipeline calls, one vision call
    states = torch.zeros(3, 4, 8)
    assert encode.with_guidance(states, [None, None, None]) is states
    assert engine.image_prompts.guide(engine.img2img, states, jobs(**ZERO), inits) == {}
    zero = engine.tiles(inits, jobs(**ZERO), context)
    assert calls == [3]  # nothing moves: no vision call
    plain = engine.tiles(inits, [TileJob(j.address, j.seed, j.prompt, "", 0.5, 2, 5.0)
                                 for j in jobs()], context)
    assert np.array_equal(zero, plain) and not np.array_equal(guided, plain)
