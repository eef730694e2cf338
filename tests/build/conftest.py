"""Fixtures of the build command's diffusion tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypermosaic.build import build_mosaic
from tests.helpers import diffusion_config, node_bytes


@pytest.fixture(scope="module")
def local_client():
    """One worker thread in this process: torch and the model are imported once, here."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def plain_nodes(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                local_client) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("plain") / "b"
    assert build_mosaic(diffusion_config(tiny_dir, out), client=local_client, publish=False).ok
    return node_bytes(out)
