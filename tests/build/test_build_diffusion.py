"""An end-to-end build with the diffusion engine, the tiny model loaded from a saved directory."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.build import build_mosaic, regenerate_node
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.errors import InputError
from hypermosaic.registry import torch_threads
from hypermosaic.store import Store
from hypermosaic.tree import ROOT
from tests.helpers import node_bytes


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


@pytest.mark.slow
def test_diffusion_build_offline_is_deterministic(
    tiny_dir: Path, tmp_path: Path, local_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds through Dask and the real loading path give the same node bytes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = config(tiny_dir, tmp_path / "first")
    result = build_mosaic(first, client=local_client, publish=False)
    assert result.ok and result.computed == 5 and result.total == 5

    store = Store(first.out, "png")
    plan = first.plan()
    for address in plan.nodes():
        image = Image.open(io.BytesIO(store.read_node(address)))
        assert image.size == (64, 64) and image.mode == "RGB"
    root = np.asarray(Image.open(io.BytesIO(store.read_node(ROOT))))
    assert root.std() > 5  # generated, not a flat fill

    second = config(tiny_dir, tmp_path / "second")
    assert build_mosaic(second, client=local_client, publish=False).ok
    first_nodes, second_nodes = node_bytes(first.out), node_bytes(second.out)
    assert len(first_nodes) == 5
    assert first_nodes == second_nodes


@pytest.mark.slow
def test_resumed_and_regenerated_diffusion_nodes_equal_the_uninterrupted_build(
    tiny_dir: Path, tmp_path: Path, local_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch-mates change diffusion bytes by a level, so batches are fixed by the plan.

    With ``batch_size = 3`` the four tiles run as [0_0, 0_1, 1_0] and [1_1]. A build that lost
    0_1 re-runs its whole batch and writes 0_1 alone; regenerating 1_0 does the same.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = config(tiny_dir, tmp_path / "reference")
    assert build_mosaic(reference, client=local_client, publish=False).ok
    expected = node_bytes(reference.out)

    interrupted = config(tiny_dir, tmp_path / "interrupted")
    assert build_mosaic(interrupted, client=local_client, publish=False).ok
    store = Store(interrupted.out, "png")
    store.node_path(((0, 1),)).unlink()
    survivors = {p: p.stat().st_mtime_ns for p in store.nodes_dir.rglob("*.png")}
    resumed = build_mosaic(interrupted, client=local_client, publish=False)
    assert resumed.ok and resumed.computed == 1 and resumed.reused == 4
    assert all(p.stat().st_mtime_ns == t for p, t in survivors.items())
    assert node_bytes(interrupted.out) == expected

    # the workers ran with one torch thread per core; this process's own count must not matter
    with torch_threads(1):
        for address in [((1, 0),), ((1, 1),)]:
            stored = Store(reference.out, "png").read_node(address)
            assert regenerate_node(reference, address) == stored


def test_a_changed_diffusion_batch_size_is_refused(
    tiny_dir: Path, tmp_path: Path, local_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = config(tiny_dir, tmp_path / "b")
    assert build_mosaic(first, client=local_client, publish=False).ok
    other = first.model_copy(update={"diffusion": first.diffusion.model_copy(
        update={"batch_size": 2})})
    with pytest.raises(InputError, match="different settings \\(the primary image or the "
                       "global settings changed\\)"):
        build_mosaic(other, client=local_client, publish=False)
