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
from tests.build.test_build_diffusion import local_client, node_bytes  # noqa: F401 (fixture)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ZERO = {"linear_start": 0.0, "linear_end": 0.0, "clustered": 0.0, "threshold": 0.0}
STRONG = {"linear_start": 0.5, "linear_end": 1.0, "max_image_guidance": 1.0,
          "threshold_floor": 0.0}


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP vision model (projection as wide as the tiny text encoder), saved."""
    from tests.tiny import tiny_vision_model

    folder = tmp_path_factory.mktemp("vision") / "tiny-clip"
    tiny_vision_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def narrow_vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny vision model projecting to 16 values, for a text encoder 32 wide."""
    from tests.tiny import tiny_vision_model

    folder = tmp_path_factory.mktemp("vision") / "narrow-clip"
    tiny_vision_model(projection_dim=16).save_pretrained(folder)
    return folder


def raw_config(tiny_dir: Path, out: Path, image_prompt: dict[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "engine": "diffusion", "size": 64, "grid": 2, "depth": 1, "seed": 5, "out": str(out),
        "primary": {"prompt": "a turtle", "steps": 2},
        "tiles": {"prompt": "shell {row} {col}", "strength": 0.6, "steps": 3, "guidance": 5.0},
        "diffusion": {"model": str(tiny_dir), "batch_size": 4, "device": "cpu"},
        **extra,
    }
    if image_prompt is not None:
        raw["image_prompt"] = image_prompt
    return raw


def config(tiny_dir: Path, out: Path, image_prompt: dict[str, Any] | None = None,
           **extra: Any) -> Any:
    return build_config_from_dict(raw_config(tiny_dir, out, image_prompt, **extra),
                                  base=EXAMPLES, source="test.toml")


@pytest.fixture(scope="module")
def plain_nodes(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                local_client) -> dict[str, bytes]:  # noqa: F811
    out = tmp_path_factory.mktemp("plain") / "b"
    assert build_mosaic(config(tiny_dir, out), client=local_client, publish=False).ok
    return node_bytes(out)


def test_schema_mirrors_the_guidance_settings() -> None:
    from hypermosaic.pipelines.image_prompt import guidance, vision

    mirrored = ImagePromptConfig()
    defaults = guidance.ImagePromptSettings()
    assert set(GUIDANCE_KEYS) == {f.name for f in fields(defaults)}
    for key in GUIDANCE_KEYS:
        if key != "space":  # "auto" resolves to one of guidance.SPACES per model
            assert getattr(mirrored, key) == getattr(defaults, key), key
    assert set(ImagePromptConfig.model_fields["method"].annotation.__args__) == set(
        guidance.METHODS)
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
    built = config(Path("m"), tmp_path / "o", block, depth=2, levels=levels)
    assert built.image_prompt_at(1) == ImagePromptConfig(image="tile", threshold=0.5)
    deep = built.image_prompt_at(2)
    assert deep is not None and deep.threshold == 0.5 and deep.clustered == 0.0
    assert deep.image == str(EXAMPLES / "images" / "chelsea.png")  # relative to the config
    plain = fingerprints(config(Path("m"), tmp_path / "o", depth=2))
    prints = fingerprints(built)
    assert prints["0"] == plain["0"] and prints["1"] != plain["1"]
    other = fingerprints(config(Path("m"), tmp_path / "o", {**block, "threshold": 0.4},
                                depth=2, levels=levels))
    assert other["1"] != prints["1"] and other["2"] != prints["2"]


def test_all_settings_zero_is_byte_identical_to_no_image_prompt(
    tiny_dir: Path, vision_dir: Path, tmp_path: Path, local_client,  # noqa: F811
    plain_nodes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zero = config(tiny_dir, tmp_path / "zero",
                  {"image": "tile", "vision_model": str(vision_dir), **ZERO})
    assert build_mosaic(zero, client=local_client, publish=False).ok
    assert node_bytes(zero.out) == plain_nodes


def test_image_prompts_change_nodes_and_resume_to_the_same_bytes(
    tiny_dir: Path, vision_dir: Path, tmp_path: Path, local_client,  # noqa: F811
    plain_nodes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for image in ("tile", "images/chelsea.png"):
        guided = config(tiny_dir, tmp_path / Path(image).stem,
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
    tiny_dir: Path, vision_dir: Path, tmp_path: Path, local_client,  # noqa: F811
    dask_client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompt = {"image": "tile", "vision_model": str(vision_dir), "concept": "a shell", **STRONG}
    built = {}
    for name, client in (("one", local_client), ("two", dask_client)):
        guided = config(tiny_dir, tmp_path / name, prompt, depth=2,
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

    calls: list[int] = []
    embed = encode.image_token_embeddings

    def counted(vision: Any, images: Any, *rest: Any) -> Any:
        calls.append(len(images))
        return embed(vision, images, *rest)

    monkeypatch.setattr(encode, "image_token_embeddings", counted)
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
