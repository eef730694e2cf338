"""``method = "ip_adapter"`` in `hypermosaic build` (docs/image-prompts.md): a tiny IP-Adapter
built in code for the tiny UNet, loaded by diffusers' own loader from a .safetensors file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from hypermosaic.build import build_mosaic
from hypermosaic.cli import cli
from hypermosaic.image_prompts import ImagePromptConfig
from tests.helpers import count_calls, diffusion_config, node_bytes

WEIGHTS = "ip-adapter_tiny.safetensors"


def tiny_ip_adapter(unet: Any, image_dim: int, seed: int = 0) -> dict[str, Any]:
    """A plain IP-Adapter state dict for ``unet``, as the released files lay it out (and as
    diffusers' own tests build one): ``image_proj.proj`` and ``norm`` (four image tokens), and
    ``ip_adapter.{1, 3, 5, ...}.to_k_ip`` / ``to_v_ip`` for each cross-attention layer."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(4 * cross, image_dim, generator=generator),
        "image_proj.proj.bias": torch.randn(4 * cross, generator=generator),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        attention = unet.get_submodule(name.removesuffix(".processor"))
        hidden = attention.to_q.out_features
        for kind in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{kind}.weight"] = torch.randn(
                hidden, cross, generator=generator)
        key_id += 2
    return state


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``models/ip-adapter_tiny.safetensors`` (h94/IP-Adapter's layout),
    and a 16-wide one that fits no tiny vision model paired with the tiny UNet."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet")
    folder = tmp_path_factory.mktemp("ip") / "tiny-ip-adapter"
    (folder / "models").mkdir(parents=True)
    save_file(tiny_ip_adapter(unet, unet.config.cross_attention_dim), folder / "models" / WEIGHTS)
    save_file(tiny_ip_adapter(unet, 16), folder / "models" / "narrow.safetensors")
    return folder


def settings(adapter: Path, vision: Path, **extra: Any) -> dict[str, Any]:
    return {"image": "tile", "method": "ip_adapter", "vision_model": str(vision),
            "ip_adapter": str(adapter), "ip_adapter_subfolder": "models",
            "ip_adapter_weight_name": WEIGHTS, **extra}


def test_the_adapter_loads_through_diffusers_and_leaves_the_unet_as_it_was(
    tiny_dir: Path, adapter_dir: Path, one_torch_thread: None,
) -> None:
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    from hypermosaic.pipelines.image_prompt.ip_adapter import IPAdapters, locate_ip_adapter
    from hypermosaic.pipelines.models import load_pipeline

    pipe = load_pipeline(str(tiny_dir), device="cpu", dtype="float32")
    before = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    file = locate_ip_adapter(str(adapter_dir), "models", WEIGHTS)
    assert file == locate_ip_adapter(str(file))  # the file itself, as well
    adapters = IPAdapters()
    with adapters.applied(pipe, file, 0.5):
        assert isinstance(pipe.unet.encoder_hid_proj, MultiIPAdapterImageProjection)
        scales = {p.scale[0] for p in pipe.unet.attn_processors.values() if hasattr(p, "scale")}
        assert scales == {0.5}
    assert {name: type(p) for name, p in pipe.unet.attn_processors.items()} == before
    assert pipe.unet.encoder_hid_proj is None and pipe.unet.config.encoder_hid_dim_type is None


def test_scale_zero_matches_no_image_prompt_and_one_vision_call_per_batch(
    tiny_dir: Path, vision_dir: Path, adapter_dir: Path,
    monkeypatch: pytest.MonkeyPatch, one_torch_thread: None,
) -> None:
    from hypermosaic.build.engines import TileContext, TileJob
    from hypermosaic.pipelines.image_prompt import encode
    from hypermosaic.pipelines.img2img import DiffusionEngine

    calls = count_calls(monkeypatch, encode, "image_embeddings")
    engine = DiffusionEngine(str(tiny_dir), device="cpu", batch_size=2)
    inits = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    context = TileContext(parent=inits[0], grid=2, primary=inits[0])

    def jobs(**extra: Any) -> list[TileJob]:
        prompt = ImagePromptConfig(**settings(adapter_dir, vision_dir, **extra))
        return [TileJob(((0, i),), i, f"shell {i}", "", 0.5, 2, 5.0,
                        image_prompt=tuple(prompt.model_dump().items())) for i in range(3)]

    plain = engine.tiles(inits, [TileJob(j.address, j.seed, j.prompt, "", 0.5, 2, 5.0)
                                 for j in jobs()], context)
    zero = engine.tiles(inits, jobs(ip_adapter_scale=0.0), context)
    assert calls == [3]  # three tiles, two pipeline calls, one vision call
    guided = engine.tiles(inits, jobs(), context)
    assert calls == [3, 3]
    assert np.array_equal(zero, plain)  # diffusers skips an adapter at scale 0
    assert all(not np.array_equal(g, p) for g, p in zip(guided, plain, strict=True))
    again = engine.tiles(inits, [TileJob(j.address, j.seed, j.prompt, "", 0.5, 2, 5.0)
                                 for j in jobs()], context)
    assert np.array_equal(again, plain)  # the adapter is swapped out after its calls


@pytest.mark.slow
def test_a_build_with_an_ip_adapter_changes_tiles_and_scale_zero_does_not(
    tiny_dir: Path, vision_dir: Path, adapter_dir: Path, tmp_path: Path,
    local_client, plain_nodes: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hypermosaic.build.fingerprint import fingerprints

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    built = {}
    for scale in (0.0, 1.0):
        guided = diffusion_config(tiny_dir, tmp_path / str(scale),
                        settings(adapter_dir, vision_dir, ip_adapter_scale=scale))
        assert build_mosaic(guided, client=local_client, publish=False).ok
        built[scale] = node_bytes(guided.out), fingerprints(guided)
    assert built[0.0][0] == plain_nodes
    nodes = built[1.0][0]
    assert nodes["root.png"] == plain_nodes["root.png"]  # the primary is not guided
    assert all(nodes[name] != plain_nodes[name] for name in nodes if name != "root.png")
    assert built[0.0][1]["1"] != built[1.0][1]["1"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"ip_adapter": None}, 'image_prompt.ip_adapter: missing; method = "ip_adapter" needs'),
    ({"ip_adapter": "{tmp}/nowhere"}, "image_prompt.ip_adapter: {tmp}/nowhere: no such file"),
    ({"ip_adapter_weight_name": "absent.safetensors"},
     "image_prompt.ip_adapter: {adapter}: no file models/absent.safetensors"),
    ({"ip_adapter_weight_name": "model.bin"},
     "image_prompt.ip_adapter: model.bin: only .safetensors weights are loaded"),
    ({"ip_adapter_weight_name": "short.safetensors"},
     "image_prompt.ip_adapter: short.safetensors does not fit this model's UNet"),
    ({"ip_adapter_weight_name": "narrow.safetensors"},
     "image_prompt.vision_model: {vision} projects images to 32 values but the IP-Adapter "
     "narrow.safetensors takes 16"),
])
def test_bad_ip_adapters_exit_2_naming_the_key_before_any_work(
    extra: dict[str, str | None], message: str, tiny_dir: Path,
    vision_dir: Path, adapter_dir: Path, tmp_path: Path,
) -> None:
    from safetensors.torch import load_file, save_file

    from tests.build.test_image_prompt import _cli_config

    models = adapter_dir / "models"
    (models / "model.bin").touch()
    whole = load_file(models / WEIGHTS)
    save_file({k: v for k, v in whole.items() if not k.startswith("ip_adapter.11.")},
              models / "short.safetensors")
    names = {"tmp": tmp_path, "adapter": adapter_dir, "vision": vision_dir}
    given = {key: value for key, value in {**settings(adapter_dir, vision_dir), **extra}.items()
             if value is not None}
    given = {key: value.format(**names) for key, value in given.items()}
    result = CliRunner().invoke(cli, ["build", str(_cli_config(tmp_path, tiny_dir, given))])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message.format(**names) in result.output
    assert not (tmp_path / "out").exists()
