"""The output folder across rebuilds: --force, stale outputs, changed inputs, tile quality."""

from __future__ import annotations

import numpy as np
import pytest

from hypermosaic.build import build_mosaic
from hypermosaic.errors import InputError
from hypermosaic.images import decode, encode
from hypermosaic.store import LOCK_NAME, MANIFEST_NAME, PUBLISHED_NAMES, Store
from tests.helpers import make_config, node_files


def test_force_with_nodes_but_no_manifest_rebuilds(examples_dir, tmp_path, dask_client):
    out = tmp_path / "b"
    build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client, publish=False)
    (out / MANIFEST_NAME).unlink()
    stale = Store(out).node_path(((0, 0),))
    stale.write_bytes(encode(np.zeros((64, 64, 3), np.uint8)))
    with pytest.raises(InputError, match="holds node images but no manifest; use --force"):
        build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client, publish=False)
    forced = build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client, force=True,
                       publish=False)
    assert forced.ok and forced.computed == 5 and forced.reused == 0
    reference = build_mosaic(make_config(examples_dir, tmp_path / "ref", depth=1),
                          client=dask_client, publish=False)
    assert reference.computed == 5
    assert node_files(out) == node_files(tmp_path / "ref")


def test_force_removes_the_stale_outputs_even_without_publishing(examples_dir, tmp_path,
                                                                 dask_client):
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    build_mosaic(make_config(examples_dir, out, depth=1, publish={"tiff": True}),
              client=dask_client)
    written = {p.name for p in out.iterdir()} - {"nodes", MANIFEST_NAME, LOCK_NAME, "notes.txt"}
    assert written and written <= set(PUBLISHED_NAMES)  # clear() knows all a build writes
    changed = make_config(examples_dir, out, depth=1, tiles={"strength": 0.2})
    build_mosaic(changed, client=dask_client, force=True, publish=False)
    assert {p.name for p in out.iterdir()} == {"nodes", MANIFEST_NAME, LOCK_NAME, "notes.txt"}
    assert (out / "notes.txt").read_text() == "mine"


def test_a_changed_primary_image_is_refused_unless_forced(examples_dir, tmp_path, dask_client):
    image = tmp_path / "primary.png"
    image.write_bytes((examples_dir / "images" / "chelsea.png").read_bytes())
    out = tmp_path / "b"
    config = make_config(examples_dir, out, depth=1, primary={"image": str(image)})
    build_mosaic(config, client=dask_client, publish=False)
    before = node_files(out)
    image.write_bytes((examples_dir / "images" / "coffee.png").read_bytes())
    with pytest.raises(InputError, match="different settings \\(the primary image or the "
                       "global settings changed\\)"):
        build_mosaic(config, client=dask_client, publish=False)
    assert node_files(out) == before
    forced = build_mosaic(config, client=dask_client, force=True, publish=False)
    assert forced.computed == 5 and node_files(out) != before


def test_a_forced_rebuild_never_renders_from_the_old_nodes(examples_dir, tmp_path, dask_client):
    """The sparse pyramid's coarse tiles are rendered on the (persistent) workers."""
    out = tmp_path / "focus"
    settings = {"grid": [4, 2], "focus": {"path": [[1, 2]]}, "publish": {"tile_format": "png"}}
    build_mosaic(make_config(examples_dir, out, **settings), client=dask_client)
    build_mosaic(make_config(examples_dir, out, tiles={"strength": 0.9}, **settings),
              client=dask_client, force=True)
    store, level8 = Store(out), out / "mosaic_files" / "8"
    for row in range(4):
        for col in range(4):
            if (row, col) != (1, 2):  # unexpanded depth-1 nodes show at native resolution
                tile = decode((level8 / f"{col}_{row}.png").read_bytes())
                assert np.array_equal(tile, decode(store.read_node(((row, col),))))


def test_deepzoom_tiles_use_the_config_quality(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "q", depth=1, quality=30,
                         publish={"tile_format": "jpeg"})
    build_mosaic(config, client=dask_client)
    store, deepest = Store(config.out), config.out / "mosaic_files" / "7"
    for row in range(2):
        for col in range(2):
            node = decode(store.read_node(((row, col),)))
            assert (deepest / f"{col}_{row}.jpg").read_bytes() == encode(node, "jpeg", 30)
