"""Nodes made on demand below the built depth equal a batch build's, and the store stays one."""

from __future__ import annotations

import pytest

from hypermosaic.build import NodeMaker, build_mosaic, check_inputs, node_batch
from hypermosaic.errors import InputError
from hypermosaic.store import Store
from hypermosaic.tree import parse_address
from tests.helpers import make_config, node_files

DEEP = parse_address("1_2/3_0/0_3/2_2")


def test_node_batch_is_the_unfocused_builds_fixed_batch(examples_dir, tmp_path):
    config = make_config(examples_dir, tmp_path, grid=[4, 2], depth=1)
    batch = node_batch(config, parse_address("1_2/1_1/0_1"))  # below depth: grid 2 repeats
    assert batch.parent == parse_address("1_2/1_1")
    assert batch.children == tuple(parse_address(f"1_2/1_1/{r}_{c}")
                                   for r in range(2) for c in range(2))
    with pytest.raises(ValueError, match="root"):
        node_batch(config, ())


def test_deep_nodes_equal_a_batch_build_and_a_deeper_build_reuses_them(
        examples_dir, tmp_path, dask_client):
    live = make_config(examples_dir, tmp_path / "live", grid=4, depth=1)
    build_mosaic(live, client=dask_client, publish=False)
    store = Store(live.out)
    maker = NodeMaker(live, store, dask_client, None)
    try:
        written = maker.make([DEEP])
    finally:
        maker.close()
    # one batch (16 siblings) per level below the build: in proportion to the depth
    assert len(written) == 3 * 16 and DEEP in written
    assert set(store.load_manifest()["fingerprints"]) == {"0", "1", "2", "3", "4"}

    batch = make_config(examples_dir, tmp_path / "batch", grid=4, depth=4,
                        focus={"path": [list(step) for step in DEEP]})
    build_mosaic(batch, client=dask_client, publish=False)
    made, built = node_files(live.out), node_files(batch.out)
    shared = made.keys() & built.keys()
    assert {f"nodes/{'/'.join(f'{r}_{c}' for r, c in DEEP)}.png"} <= shared
    assert {key: made[key] for key in shared} == {key: built[key] for key in shared}

    # a full depth-2 build of the same config reuses the live nodes at depth 2
    deeper = make_config(examples_dir, tmp_path / "live", grid=4, depth=2)
    result = build_mosaic(deeper, client=dask_client, publish=False)
    assert result.reused == 1 + 16 + 16 and result.ok
    assert node_files(live.out) | made == node_files(live.out)  # nothing made live was replaced
    assert set(store.load_manifest()["fingerprints"]) == {"0", "1", "2", "3", "4"}


def test_a_session_with_other_deep_settings_is_refused(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path, grid=4, depth=1)
    maker = NodeMaker(config, Store(config.out), dask_client, check_inputs(config))
    maker.make([parse_address("0_0/0_0")])
    maker.close()
    changed = make_config(examples_dir, tmp_path, grid=4, depth=1,
                          levels={"2": {"strength": 0.2}})
    with pytest.raises(InputError, match="level-2 settings"):
        NodeMaker(changed, Store(changed.out), dask_client, check_inputs(changed))
