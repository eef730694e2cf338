"""A diffusion build with LoRAs and a Karras schedule, through the workers' model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypermosaic.build import build_mosaic
from tests.helpers import diffusion_config, node_bytes
from tests.tiny import save_tiny_lora


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lora(tmp_path_factory.mktemp("lora") / "tiny-lora.safetensors")


def _build(tiny_dir: Path, out: Path, client, **diffusion) -> dict[str, bytes]:
    config = diffusion_config(tiny_dir, out, diffusion={
        "model": str(tiny_dir), "batch_size": 4, "device": "cpu", **diffusion})
    assert build_mosaic(config, client=client, publish=False).ok
    return node_bytes(out)


def test_a_lora_at_scale_zero_builds_the_same_bytes(tiny_dir: Path, tmp_path: Path, lora: Path,
                                                    local_client, plain_nodes) -> None:
    nodes = _build(tiny_dir, tmp_path / "b", local_client,
                   lora=[{"path": str(lora), "scale": 0.0}])
    assert nodes == plain_nodes


def test_a_fused_lora_and_a_karras_schedule_change_the_nodes(
    tiny_dir: Path, tmp_path: Path, lora: Path, local_client, plain_nodes
) -> None:
    karras = _build(tiny_dir, tmp_path / "k", local_client, scheduler="dpm++2m_karras")
    assert karras.keys() == plain_nodes.keys() and karras != plain_nodes
    both = _build(tiny_dir, tmp_path / "kl", local_client, scheduler="dpm++2m_karras",
                  lora=[{"path": str(lora), "scale": 1.0, "fuse": True}])
    assert all(both[name] != karras[name] for name in karras)


def test_an_lcm_lora_is_a_lora_with_the_lcm_scheduler(tiny_dir: Path, tmp_path: Path,
                                                      lora: Path, local_client,
                                                      plain_nodes) -> None:
    """What docs/diffusion.md says of LCM-LoRA: an SD model, a LoRA and ``scheduler = "lcm"``."""
    nodes = _build(tiny_dir, tmp_path / "lcm", local_client, scheduler="lcm",
                   lora=[{"path": str(lora), "fuse": True}])
    assert nodes.keys() == plain_nodes.keys() and nodes != plain_nodes
