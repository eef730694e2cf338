from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import pyvips

from hypermosaic.build import build_mosaic
from hypermosaic.images import decode
from hypermosaic.publish import PublishConfig, canvas_image
from hypermosaic.publish.run import write_deepzoom
from hypermosaic.store import Store
from tests.helpers import make_config

NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture(scope="module")
def built(examples_dir, tmp_path_factory, dask_client):
    out = tmp_path_factory.mktemp("dz") / "b"
    config = make_config(examples_dir, out, grid=[4, 2], publish={"tile_format": "png"})
    result = build_mosaic(config, client=dask_client)
    return config, result


def _dzi(path):
    root = ET.parse(path).getroot()
    size = root.find(f"{NS}Size")
    return root, int(size.get("Width")), int(size.get("Height"))


def test_dzi_levels_and_tile_counts_match_the_canvas(built):
    config, result = built
    root, width, height = _dzi(result.outputs["deepzoom"])
    assert (width, height) == (512, 512)
    assert root.get("TileSize") == "64" and root.get("Overlap") == "0"
    files = config.out / "mosaic_files"
    levels = sorted(int(p.name) for p in files.iterdir())
    assert levels == list(range(math.ceil(math.log2(512)) + 1))
    for level in levels:
        side = math.ceil(512 / 2 ** (levels[-1] - level))
        tiles = math.ceil(side / 64)
        assert len(list((files / str(level)).iterdir())) == tiles * tiles
        last = tiles - 1
        corner = pyvips.Image.new_from_file(str(files / str(level) / f"{last}_{last}.png"))
        assert corner.width == side - (tiles - 1) * 64


def test_deepest_tiles_equal_their_node_images(built):
    config, _ = built
    store, plan = Store(config.out), config.plan()
    deepest = config.out / "mosaic_files" / "9"
    for address in [((0, 0), (0, 0)), ((1, 3), (1, 0)), ((3, 2), (0, 1))]:
        x, y = plan.origin(address)
        tile = decode((deepest / f"{x // 64}_{y // 64}.png").read_bytes())
        assert np.array_equal(tile, decode(store.read_node(address)))


def test_pyramid_matches_the_canvas_shrunk_by_box_filter(built):
    config, _ = built
    canvas = canvas_image(Store(config.out), config.plan()).numpy().astype(float)
    level8 = decode((config.out / "mosaic_files" / "8" / "1_2.png").read_bytes()).astype(float)
    halved = canvas.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(level8 - halved[128:192, 64:128]).max() <= 1


def test_preview_and_viewer_are_written(built):
    config, result = built
    preview = pyvips.Image.new_from_file(str(result.outputs["preview"]))
    assert (preview.width, preview.height) == (512, 512)
    assert result.outputs["viewer"].is_file()


def test_other_tile_sizes_go_through_dzsave(built, tmp_path):
    config, _ = built
    store = Store(config.out)
    dzi = write_deepzoom(store, config.plan(), PublishConfig(tile_size=100, tile_format="png"))
    root, width, _ = _dzi(dzi)
    assert root.get("TileSize") == "100" and width == 512
    top = max(int(p.name) for p in (config.out / "mosaic_files").iterdir() if p.name.isdigit())
    assert len(list((config.out / "mosaic_files" / str(top)).iterdir())) == 36
    assert not (config.out / "mosaic_files" / "vips-properties.xml").exists()  # dzsave's own


def test_focus_build_writes_a_sparse_pyramid(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "focus", grid=[4, 2], focus={"path": [[1, 2]]},
                         publish={"tile_format": "png"})
    result = build_mosaic(config, client=dask_client)
    assert result.ok and result.total == 1 + 16 + 4
    files = config.out / "mosaic_files"
    assert sorted(p.name for p in (files / "9").iterdir()) == [
        "4_2.png", "4_3.png", "5_2.png", "5_3.png"
    ]
    assert len(list((files / "8").iterdir())) == 16
    store = Store(config.out)
    # a depth-1 node is shown at its native resolution on level 8
    level8 = decode((files / "8" / "3_0.png").read_bytes())
    assert np.array_equal(level8, decode(store.read_node(((0, 3),))))
    # the focused tile on level 8 is the box-filtered mosaic of its four children
    focused = decode((files / "8" / "2_1.png").read_bytes()).astype(float)
    leaves = np.concatenate([
        np.concatenate([decode(store.read_node(((1, 2), (r, c)))) for c in range(2)], axis=1)
        for r in range(2)
    ]).astype(float)
    assert np.abs(focused - leaves.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))).max() <= 1


def test_bigtiff_pyramid_is_readable_and_matches_the_canvas(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "tiff", depth=1, publish={"tiff": True})
    result = build_mosaic(config, client=dask_client)
    tiff = pyvips.Image.new_from_file(str(result.outputs["tiff"]))
    assert (tiff.width, tiff.height) == (128, 128)
    canvas = canvas_image(Store(config.out), config.plan()).numpy().astype(float)
    assert np.abs(tiff.numpy()[..., :3].astype(float) - canvas).mean() < 3
