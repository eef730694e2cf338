"""An end-to-end build with the diffusion engine, the tiny model loaded from a saved directory."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.build import run_build
from hypermosaic.config import build_config_from_dict
from hypermosaic.pipelines.tiny import save_tiny_pipeline
from hypermosaic.store import Store
from hypermosaic.tree import ROOT


@pytest.fixture(scope="module")
def local_client():
    """One worker thread in this process: torch and the model are imported once, here."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")


def config(tiny_dir: Path, out: Path):
    raw = {
        "engine": "diffusion",
        "size": 64,
        "grid": 2,
        "depth": 1,
        "seed": 11,
        "out": str(out),
        "primary": {"prompt": "a turtle", "steps": 2, "guidance": 7.5},
        "tiles": {"prompt": "shell {row} {col}", "strength": 0.6, "steps": 3, "guidance": 5.0},
        "diffusion": {"model": str(tiny_dir), "batch_size": 3, "device": "cpu"},
    }
    return build_config_from_dict(raw, base=out.parent, source="test.toml")


def node_bytes(out: Path) -> dict[str, bytes]:
    nodes = Store(out, "png").nodes_dir
    return {str(p.relative_to(nodes)): p.read_bytes() for p in sorted(nodes.rglob("*.png"))}


def test_diffusion_build_offline_is_deterministic(
    tiny_dir: Path, tmp_path: Path, local_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds through Dask and the real loading path give the same node bytes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = config(tiny_dir, tmp_path / "first")
    result = run_build(first, client=local_client, publish=False)
    assert result.ok and result.computed == 5 and result.total == 5

    store = Store(first.out, "png")
    plan = first.plan()
    for address in plan.nodes():
        image = Image.open(io.BytesIO(store.read_node(address)))
        assert image.size == (64, 64) and image.mode == "RGB"
    root = np.asarray(Image.open(io.BytesIO(store.read_node(ROOT))))
    assert root.std() > 5  # generated, not a flat fill

    second = config(tiny_dir, tmp_path / "second")
    assert run_build(second, client=local_client, publish=False).ok
    first_nodes, second_nodes = node_bytes(first.out), node_bytes(second.out)
    assert len(first_nodes) == 5
    assert first_nodes == second_nodes
