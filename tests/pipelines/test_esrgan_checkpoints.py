"""A user's upscaler checkpoints: every supported layout loads into the network it was saved
from (same outputs, bit for bit); other networks and other files are one line naming them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.identity import check_upscaler, model_file_digest
from hypermosaic.pipelines import esrgan
from hypermosaic.pipelines.esrgan.checkpoints import SUPPORTED, to_basicsr_layout, unwrap
from hypermosaic.pipelines.esrgan.networks import RRDBNet, SRVGGNetCompact
from tests.helpers import astronaut

pytestmark = pytest.mark.usefixtures("one_torch_thread")

State = dict[str, torch.Tensor]


def _rrdb(scale: int) -> RRDBNet:
    torch.manual_seed(scale)
    return RRDBNet(scale=scale, num_feat=8, num_block=2, num_grow_ch=4).eval()


def _srvgg() -> SRVGGNetCompact:
    torch.manual_seed(7)
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).eval()


def _old_layout(state: State, blocks: int = 2) -> State:
    """basicsr's RRDBNet keys written back in the old ESRGAN layout (4x-UltraSharp's):
    ``model.0`` in, ``model.1.sub`` the trunk, upsampling convs at ``model.3`` and ``model.6``,
    the HR conv at ``model.8``, the last at ``model.10``."""
    convs = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    old = {}
    for key, value in state.items():
        name, param = key.rsplit(".", 1)
        if block := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)", name):
            i, j, conv = block.groups()
            key = f"model.1.sub.{i}.RDB{j}.{conv}.0.{param}"
        elif name == "conv_body":
            key = f"model.1.sub.{blocks}.{param}"
        else:
            key = f"model.{convs[name]}.{param}"
        old[key] = value
    return old


def _esrgan_repo_layout(state: State) -> State:
    """The same keys as xinntao/ESRGAN's RRDB_ESRGAN_x4.pth names them."""
    names = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
             "conv_hr": "HRconv"}
    old = {}
    for key, value in state.items():
        name, param = key.rsplit(".", 1)
        if block := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)", name):
            i, j, conv = block.groups()
            name = f"RRDB_trunk.{i}.RDB{j}.{conv}"
        old[f"{names.get(name, name)}.{param}"] = value
    return old


# Each layout: the network the weights come from, and the state dict as the file holds it.
LAYOUTS: dict[str, Callable[[], tuple[torch.nn.Module, State]]] = {
    "rrdb-4x": lambda: (m := _rrdb(4), m.state_dict()),
    "rrdb-2x": lambda: (m := _rrdb(2), m.state_dict()),
    "rrdb-1x": lambda: (m := _rrdb(1), m.state_dict()),
    "old-4x": lambda: (m := _rrdb(4), _old_layout(m.state_dict())),
    "old-2x": lambda: (m := _rrdb(2), _old_layout(m.state_dict())),
    "old-1x": lambda: (m := _rrdb(1), _old_layout(m.state_dict())),
    "esrgan-repo-4x": lambda: (m := _rrdb(4), _esrgan_repo_layout(m.state_dict())),
    "srvgg-4x": lambda: (m := _srvgg(), m.state_dict()),
}


def _save(state: object, path: Path) -> Path:
    if path.suffix == ".safetensors":
        assert isinstance(state, dict)
        save_file(state, path)
    else:
        torch.save(state, path)
    return path


def _out(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        out: torch.Tensor = model(x)
    return out


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_into_the_network_it_came_from(layout: str, suffix: str,
                                                          tmp_path: Path) -> None:
    network, state = LAYOUTS[layout]()
    path = _save(state, tmp_path / f"{layout}{suffix}")
    assert check_upscaler(str(path)) == str(path)  # the configs accept it, as before
    assert esrgan.describe_upscaler(str(path), device="cpu") == (network.scale, 256)
    loaded = esrgan.load_model(path)
    assert type(loaded) is type(network) and loaded.scale == network.scale
    assert torch.equal(_out(loaded), _out(network))


def test_old_layouts_give_the_new_layouts_bytes(tmp_path: Path) -> None:
    network = _rrdb(4)
    new = _save(network.state_dict(), tmp_path / "new.safetensors")
    old = _save(_old_layout(network.state_dict()), tmp_path / "4x-Community.pth")
    assert torch.equal(_out(esrgan.load_model(old)), _out(esrgan.load_model(new)))
    converted = to_basicsr_layout(_old_layout(network.state_dict()), "old")
    assert converted.keys() == network.state_dict().keys()  # the same tensors, renamed
    assert model_file_digest(str(old), "--model") != model_file_digest(str(new), "--model")


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "state_dict", "module."])
def test_training_checkpoints_are_unwrapped(wrapper: str, tmp_path: Path) -> None:
    network = _srvgg()
    state = network.state_dict()
    if wrapper == "module.":  # DataParallel's prefix
        saved: object = {f"module.{k}": v for k, v in state.items()}
    elif wrapper == "params_ema":  # basicsr keeps both: the EMA weights are the released ones
        saved = {"params_ema": state, "params": {k: torch.zeros_like(v) for k, v in state.items()}}
    else:
        saved = {wrapper: state, "epoch": torch.tensor(3)}
    loaded = esrgan.load_model(_save(saved, tmp_path / "wrapped.pth"))
    assert torch.equal(_out(loaded), _out(network))
    assert unwrap({"model.0.weight": state["body.0.weight"]}).keys() == {"model.0.weight"}


def _swinir() -> State:
    """A few keys of a SwinIR state dict, an integer buffer among them."""
    return {
        "conv_first.weight": torch.zeros(8, 3, 3, 3),
        "patch_embed.norm.weight": torch.ones(8),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": torch.zeros(9, 2),
        "layers.0.residual_group.blocks.0.attn.relative_position_index":
            torch.zeros(4, 4, dtype=torch.int64),
        "conv_last.weight": torch.zeros(3, 8, 3, 3),
    }


FOREIGN = {
    "SwinIR": _swinir(),
    "HAT": {**_swinir(), "layers.0.residual_group.overlap_attn.qkv.weight": torch.zeros(2, 2)},
    "Swin2SR": {**_swinir(), "layers.0.residual_group.blocks.0.attn.logit_scale":
                torch.zeros(2, 1, 1)},
    "DAT": {"before_RG.1.weight": torch.ones(8), "conv_first.weight": torch.zeros(8, 3, 3, 3)},
    "OmniSR": {"input.weight": torch.zeros(8, 3, 3, 3),
               "residual_layer.0.residual_layer.0.layer.0.weight": torch.zeros(8)},
    "SPAN": {"conv_1.sk.weight": torch.zeros(8, 3, 1, 1),
             "block_1.c1_r.sk.weight": torch.zeros(8, 8, 1, 1)},
}


@pytest.mark.parametrize("name", FOREIGN)
def test_a_network_we_do_not_implement_is_named(name: str, tmp_path: Path) -> None:
    path = _save({"params": FOREIGN[name]}, tmp_path / "x.pth")
    article = "an" if name == "OmniSR" else "a"
    expected = f"{path}: {article} {name} checkpoint; supported: {SUPPORTED}"
    for check in (esrgan.describe_upscaler, esrgan.load_model):
        with pytest.raises(InputError) as error:
            check(str(path))
        assert str(error.value) == expected


def test_the_swinir_message_in_full(tmp_path: Path) -> None:
    path = _save(_swinir(), tmp_path / "x.safetensors")
    with pytest.raises(InputError) as error:
        esrgan.load_model(path)
    assert str(error.value) == (f"{path}: a SwinIR checkpoint; supported: ESRGAN (old and new "
                                "layouts, 1x/2x/4x RRDBNet), SRVGG compact")


def test_unknown_and_unsupported_esrgan_layouts_are_one_line(tmp_path: Path) -> None:
    unknown = _save(torch.nn.Linear(3, 3).state_dict(), tmp_path / "unknown.safetensors")
    with pytest.raises(InputError, match=r"unknown\.safetensors: not a Real-ESRGAN RRDBNet or "
                       r"SRVGGNetCompact state dict \(an unknown architecture\); supported: "):
        esrgan.load_model(unknown)
    state = _old_layout(_rrdb(4).state_dict())
    for param in ("weight", "bias"):  # a third upsampling conv: an 8x, which RRDBNet is not
        state[f"model.13.{param}"] = state.pop(f"model.10.{param}")
        state[f"model.11.{param}"] = state.pop(f"model.8.{param}")
        state[f"model.9.{param}"] = state[f"model.6.{param}"]
    eight = _save(state, tmp_path / "8x.pth")
    with pytest.raises(InputError, match=r"8x\.pth: an old-layout ESRGAN with 3 upsampling "
                       "convs, not 2; supported: "):
        esrgan.describe_upscaler(str(eight))


class _Payload:
    """Not a tensor: a pickle holding it could run code when loaded without weights_only."""


def test_pickles_and_other_files_are_refused(tmp_path: Path) -> None:
    objects = _save({"params_ema": _old_layout(_rrdb(4).state_dict()), "opt": _Payload()},
                    tmp_path / "objects.ckpt")
    with pytest.raises(InputError, match=r"objects\.ckpt: refused, not plain weights \(it "
                       r"holds tests\.pipelines\.test_esrgan_checkpoints\._Payload"):
        esrgan.load_model(objects)
    text = tmp_path / "notes.pt"
    text.write_text("not weights\n")
    with pytest.raises(InputError, match=r"notes\.pt: not a PyTorch checkpoint"):
        esrgan.describe_upscaler(str(text))


def test_the_upscale_command_exits_2_with_one_line(tmp_path: Path) -> None:
    import pyvips

    photo = tmp_path / "photo.png"
    pyvips.Image.new_from_array(astronaut(16, 16), interpretation="srgb").write_to_file(
        str(photo))
    weights = _save(_swinir(), tmp_path / "swinir.pth")
    result = CliRunner().invoke(cli, ["upscale", str(photo), "--model", str(weights),
                                      "--out", str(tmp_path / "out.png")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"Error: {weights}: a SwinIR checkpoint; supported: {SUPPORTED}"
    assert not (tmp_path / "out.png").exists()
