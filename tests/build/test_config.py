from __future__ import annotations

from pathlib import Path

import pytest

from hypermosaic.build.config import build_config_from_dict, load_build_config
from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _config(**raw):
    raw.setdefault("primary", {"image": "images/chelsea.png"})
    return build_config_from_dict(raw, base=EXAMPLES, source="t.toml")


def test_example_demo_loads_with_paths_relative_to_the_file():
    config = load_build_config(EXAMPLES / "demo.toml")
    assert config.primary.image == EXAMPLES / "images" / "chelsea.png"
    assert config.out == Path("out/demo")
    assert config.grids == (8, 8)


def test_level_settings_merge_defaults_overrides_and_templates():
    config = _config(
        depth=3, grid=[4, 2, 2],
        tiles={"prompt": ["a turtle", "a shell {row}-{col} at {depth}"], "strength": 0.6},
        levels={"3": {"strength": 0.3, "steps": 12}},
    )
    assert config.level(1).prompts_for(1, 0, 1)[0] == "a turtle"
    assert config.level(2).prompts_for(2, 1, 0)[0] == "a shell 1-0 at 2"
    assert config.level(3).prompts_for(3, 0, 0)[0] == "a shell 0-0 at 3"
    assert config.level(1).strength == 0.6 and config.level(3).strength == 0.3
    assert config.level(3).steps == 12 and config.level(2).steps == 30


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"depth": -1}, "t.toml: depth: Input should be greater than or equal to 0"),
        ({"grid": 3, "size": 64}, "grid: 3 does not divide size 64"),
        ({"colour": "red"}, "t.toml: colour: unknown key"),
        ({"tiles": {"strenght": 0.5}}, "t.toml: tiles.strenght: unknown key"),
        ({"tiles": {"strength": 1.5}}, "tiles.strength: Input should be less than or equal to 1"),
        ({"levels": {"2": {"steps": 0}}}, "levels.2.steps"),
        ({"tiles": {"prompt": "a {colour} turtle"}}, "unknown template field {colour}"),
        ({"primary": {"prompt": "a turtle"}}, "primary.image: the recolor engine cannot"),
        ({"primary": {}}, "give exactly one of primary.prompt or primary.image"),
        ({"engine": "diffusion"}, "diffusion.model: the diffusion engine needs a model"),
        ({"depth": 2, "grid": [4]}, "grid: 1 entries but depth is 2"),
        ({"depth": 2, "grid": 4, "focus": {"path": [[1, 1], [4, 0]]}}, "outside the 4x4 grid"),
    ],
)
def test_bad_configs_name_the_key(raw, message):
    with pytest.raises(InputError) as info:
        _config(**raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("depth = [1,\n")
    with pytest.raises(InputError, match="bad.toml: malformed TOML"):
        load_build_config(bad)
    with pytest.raises(InputError, match="no such config file"):
        load_build_config(tmp_path / "nope.toml")


def test_fingerprints_change_with_pixels_not_with_depth():
    base = _config(depth=2, grid=4)
    deeper = _config(depth=3, grid=4)
    assert fingerprints(deeper)["2"] == fingerprints(base)["2"]
    stronger = _config(depth=2, grid=4, levels={"2": {"strength": 0.9}})
    assert fingerprints(stronger)["1"] == fingerprints(base)["1"]
    assert fingerprints(stronger)["2"] != fingerprints(base)["2"]
    assert fingerprints(_config(depth=2, grid=4, seed=1))["0"] != fingerprints(base)["0"]


def test_diffusion_batch_size_is_in_the_fingerprints_and_device_is_not():
    raw = {"engine": "diffusion", "primary": {"prompt": "a turtle"}, "size": 64, "grid": 2}
    base = fingerprints(_config(**raw, diffusion={"model": "m", "batch_size": 4}))
    smaller = fingerprints(_config(**raw, diffusion={"model": "m", "batch_size": 2}))
    on_cpu = _config(**raw, diffusion={"model": "m", "batch_size": 4, "device": "cpu"})
    assert smaller["0"] != base["0"]
    assert fingerprints(on_cpu) == base


def test_fingerprints_follow_the_primary_image_bytes_not_its_path(tmp_path):
    image = (EXAMPLES / "images" / "chelsea.png").read_bytes()
    (tmp_path / "a.png").write_bytes(image)
    (tmp_path / "b.png").write_bytes(image)
    first = fingerprints(_config(primary={"image": str(tmp_path / "a.png")}))
    assert fingerprints(_config(primary={"image": str(tmp_path / "b.png")})) == first
    (tmp_path / "a.png").write_bytes((EXAMPLES / "images" / "coffee.png").read_bytes())
    assert fingerprints(_config(primary={"image": str(tmp_path / "a.png")}))["0"] != first["0"]


def test_a_single_file_model_counts_by_content(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\0" * 3_000_000)
    raw = {"engine": "diffusion", "primary": {"prompt": "a turtle"}, "size": 64, "grid": 2,
           "diffusion": {"model": str(model)}}
    before = fingerprints(_config(**raw))
    model.write_bytes(b"\0" * 2_999_999 + b"\1")  # same size, last byte changed
    assert fingerprints(_config(**raw))["0"] != before["0"]


def test_a_short_focus_path_reaches_the_plan():
    """The config hands its focus to the plan (whose continuation `tests/test_tree.py` tests)."""
    config = _config(depth=3, grid=4, focus={"path": [[1, 1]], "neighbours": 0})
    plan = config.plan()
    assert (plan.focus, plan.neighbours) == (((1, 1),), 0)
    assert plan.path == ((1, 1), (2, 2), (2, 2))


def test_example_turtle_and_folder_configs_load():
    turtle = load_build_config(EXAMPLES / "turtle.toml")
    assert turtle.engine == "diffusion" and turtle.diffusion.batch_size == 8
    assert turtle.diffusion.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert turtle.grids == (8, 8, 8) and turtle.level(3).strength == 0.5
    assert turtle.plan().count() == 193  # as its comment says
    folder = load_build_config(EXAMPLES / "folder.toml")
    assert folder.recolor.source == str(EXAMPLES / "images")
    assert folder.primary.image == EXAMPLES / "images" / "coffee.png"
    assert folder.plan().count() == 1 + 64
