"""A diffusion build with ControlNet Tile: each tile conditioned on itself, through the
workers' model cache; a ControlNet for another model refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hypermosaic.build import build_mosaic
from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.cli import cli
from tests.helpers import diffusion_config, node_bytes
from tests.tiny import save_tiny_controlnet


@pytest.fixture(scope="module")
def controlnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_controlnet(tmp_path_factory.mktemp("cn") / "tiny-controlnet")


def _config(tiny_dir: Path, out: Path, **controlnet: object):
    return diffusion_config(tiny_dir, out, diffusion={
        "model": str(tiny_dir), "batch_size": 4, "device": "cpu", "controlnet": controlnet})


def test_scale_zero_builds_the_same_bytes_and_scale_one_steers_every_tile(
        tiny_dir: Path, tmp_path: Path, controlnet: Path, local_client, plain_nodes) -> None:
    for scale, out in ((0.0, tmp_path / "zero"), (1.0, tmp_path / "one")):
        config = _config(tiny_dir, out, model=str(controlnet), scale=scale)
        assert build_mosaic(config, client=local_client, publish=False).ok
    assert node_bytes(tmp_path / "zero") == plain_nodes
    steered = node_bytes(tmp_path / "one")
    assert steered.keys() == plain_nodes.keys()
    assert all(steered[name] != plain_nodes[name] for name in plain_nodes if "/" in name)


def test_the_controlnet_is_in_the_fingerprints(tiny_dir: Path, tmp_path: Path,
                                               controlnet: Path) -> None:
    plain = fingerprints(diffusion_config(tiny_dir, tmp_path / "b"))
    half = fingerprints(_config(tiny_dir, tmp_path / "b", model=str(controlnet), scale=0.5))
    full = fingerprints(_config(tiny_dir, tmp_path / "b", model=str(controlnet), scale=1.0))
    assert len({plain["0"], half["0"], full["0"]}) == 3


@pytest.mark.parametrize(("controlnet", "message"), [
    ('{ model = "WIDE" }',
     "diffusion.controlnet.model: WIDE does not fit the model: its cross_attention_dim is 48, "
     "the model's UNet has 32"),
    ('{ model = "WIDE", image = "edges.png" }',
     "diffusion.controlnet: image = 'edges.png': only a canvas takes a control image file; "
     'here each tile is conditioned on its own pixels (image = "tile")'),
])
def test_a_bad_controlnet_exits_2_before_any_work(tiny_dir: Path, tmp_path: Path,
                                                  controlnet: str, message: str) -> None:
    wide = save_tiny_controlnet(tmp_path / "wide", cross_attention_dim=48)
    config = tmp_path / "c.toml"
    config.write_text(
        'engine = "diffusion"\nsize = 64\ngrid = 2\ndepth = 1\n[primary]\nprompt = "a turtle"\n'
        f'[diffusion]\nmodel = "{tiny_dir}"\ndevice = "cpu"\n'
        f'controlnet = {controlnet.replace("WIDE", str(wide))}\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1
    assert message.replace("WIDE", str(wide)) in result.output
    assert not out.exists()
