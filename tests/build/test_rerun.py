"""A re-run of a finished build does no work; any change since makes it work again."""

from __future__ import annotations

from pathlib import Path

from hypermosaic.build import build_mosaic
from hypermosaic.store import LOCK_NAME, Store
from tests.helpers import make_config


def stamp(path: Path) -> tuple[int, int]:
    """A file's ``(inode, mtime_ns)``: either changes when it is written again."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """`stamp` of every file under ``out`` but the run lock (each run takes it)."""
    return {str(path.relative_to(out)): stamp(path)
            for path in out.rglob("*") if path.is_file() and path.name != LOCK_NAME}


def test_rerun_of_a_finished_build_computes_and_writes_nothing(examples_dir, tmp_path,
                                                               dask_client):
    config = make_config(examples_dir, tmp_path / "b")
    first = build_mosaic(config, client=dask_client)
    assert first.ok and first.computed == first.total
    before = snapshot(tmp_path / "b")

    again = build_mosaic(config, client=dask_client)
    assert again.ok and again.computed == 0 and again.reused == again.total
    assert again.outputs == first.outputs
    assert snapshot(tmp_path / "b") == before
    assert build_mosaic(config, client=dask_client, publish=False).computed == 0
    assert snapshot(tmp_path / "b") == before


def test_rerun_after_a_change_republishes(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "b")
    build_mosaic(config, client=dask_client)
    dzi = tmp_path / "b" / "mosaic.dzi"
    before = stamp(dzi)

    store = Store(config.out)
    store.node_path(((1, 0), (0, 1))).unlink()  # a node lost: made again, published again
    again = build_mosaic(config, client=dask_client)
    assert again.ok and again.computed == 1
    assert stamp(dzi) != before

    before = stamp(dzi)  # the publish settings changed: published again, no node made
    bigger = config.model_copy(update={"publish": config.publish.model_copy(
        update={"preview": 512})})
    again = build_mosaic(bigger, client=dask_client)
    assert again.ok and again.computed == 0
    assert stamp(dzi) != before
