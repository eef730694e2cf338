from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Stable Diffusion saved once as a diffusers folder (read only)."""
    from tests.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")


@pytest.fixture(scope="session")
def dask_client():
    """One in-process-started cluster of two worker processes, shared by the build tests."""
    from distributed import Client, LocalCluster

    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=":0", silence_logs=50) as cluster,
          Client(cluster) as client):
        yield client


@pytest.fixture(scope="session")
def _esrgan_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypermosaic-cache")


@pytest.fixture(scope="module")
def hypermosaic_cache(_esrgan_cache_root: Path) -> Iterator[Path]:
    """HYPERMOSAIC_CACHE set to one folder for the session (weights are converted once) while
    a module runs, then restored: tests never write to the user's cache."""
    import os

    old = os.environ.get("HYPERMOSAIC_CACHE")
    os.environ["HYPERMOSAIC_CACHE"] = str(_esrgan_cache_root)
    yield _esrgan_cache_root
    if old is None:
        del os.environ["HYPERMOSAIC_CACHE"]
    else:
        os.environ["HYPERMOSAIC_CACHE"] = old


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread while a module runs: on a shared, loaded machine OpenMP
    spin-waiting makes two threads several times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP vision model (projection as wide as the tiny text encoder), saved."""
    from tests.tiny import tiny_vision_model

    folder = tmp_path_factory.mktemp("vision") / "tiny-clip"
    tiny_vision_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def narrow_vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny vision model projecting to 16 values, for a text encoder 32 wide."""
    from tests.tiny import tiny_vision_model

    folder = tmp_path_factory.mktemp("vision") / "narrow-clip"
    tiny_vision_model(projection_dim=16).save_pretrained(folder)
    return folder
