from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import pyvips

from hypermosaic.build import build_mosaic
from hypermosaic.errors import InputError
from hypermosaic.images import decode
from hypermosaic.publish import PublishConfig, canvas_image, read_dzi, write_viewer
from hypermosaic.publish.descriptor import DisplayRect, display_rects, dzi_xml
from hypermosaic.publish.run import write_deepzoom
from hypermosaic.store import Store
from hypermosaic.tree import parse_address
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


def osd_rects_from_xml(dzi: Path) -> list[dict[str, dict[str, int]]]:
    """The rects as OpenSeadragon 6.1.1's ``configureFromXML`` reads a ``.dzi``: every
    ``DisplayRect`` element, its first ``Rect`` child, each attribute through ``parseInt``."""
    rects = []
    for node in ET.parse(dzi).getroot().iter(f"{NS}DisplayRect"):
        rect = node.find(f"{NS}Rect")
        rects.append({"Rect": {**{k: int(rect.get(k)) for k in ("X", "Y", "Width", "Height")},
                               **{k: int(node.get(k)) for k in ("MinLevel", "MaxLevel")}}})
    return rects


def osd_existing_tiles(image: dict) -> dict[int, np.ndarray]:
    """Per level, which tiles OpenSeadragon 6.1.1's ``DziTileSource.tileExists`` says exist
    (``[y, x]``), for the inline descriptor ``image``; its arithmetic to the letter:

        scale = 1 / Math.pow(2, maxLevel - level)     // TileSource.getLevelScale
        xMin = Math.floor(rect.x * scale / tileSize)  // likewise y
        xMax = Math.ceil((rect.x * scale + rect.width * scale) / tileSize)
        exists = no rect names the level || some rect has xMin <= x < xMax && yMin <= y < yMax

    (the last line as slices of a grid of tiles per level, sized as ``getNumTiles`` does).
    """
    width, height = image["Size"]["Width"], image["Size"]["Height"]
    tile = image["TileSize"]
    max_level = math.ceil(math.log(max(width, height)) / math.log(2))
    rects = [entry["Rect"] for entry in image.get("DisplayRect", [])]
    levels = {}
    for level in range(max_level + 1):
        scale = 1 / math.pow(2, max_level - level)
        cols, rows = math.ceil(scale * width / tile), math.ceil(scale * height / tile)
        named = [r for r in rects if r["MinLevel"] <= level <= r["MaxLevel"]]
        exists = np.zeros((rows, cols), bool) if named else np.ones((rows, cols), bool)
        for r in named:
            x_min, y_min = r["X"] * scale, r["Y"] * scale
            x_max, y_max = x_min + r["Width"] * scale, y_min + r["Height"] * scale
            exists[max(0, math.floor(y_min / tile)):math.ceil(y_max / tile),
                   max(0, math.floor(x_min / tile)):math.ceil(x_max / tile)] = True
        levels[level] = exists
    return levels


def written_tiles(files: Path, level: int, shape: tuple[int, int], ext: str) -> np.ndarray:
    """Which tiles of ``level`` have a file (``[y, x]``)."""
    written = np.zeros(shape, bool)
    for path in (files / str(level)).glob(f"*.{ext}") if (files / str(level)).is_dir() else []:
        x, y = map(int, path.stem.split("_"))
        written[y, x] = True
    return written


def assert_viewer_asks_only_for_written_tiles(out: Path) -> list[dict[str, dict[str, int]]]:
    """The page's inline rects are the ``.dzi``'s, and on every level the tiles OpenSeadragon
    takes to exist are exactly the tiles written. Returns the rects."""
    page = (out / "index.html").read_text()
    image = json.loads(re.search(r"tileSources: (\{.*?\n\})", page, re.S).group(1))["Image"]
    assert image.get("DisplayRect", []) == osd_rects_from_xml(out / "mosaic.dzi")
    for level, exists in osd_existing_tiles(image).items():
        written = written_tiles(out / "mosaic_files", level, exists.shape, image["Format"])
        assert (exists == written).all(), (level, np.argwhere(exists != written)[:5])
    return image.get("DisplayRect", [])


@pytest.mark.parametrize(("raw", "count"), [
    # examples/turtle.toml's shape (193 nodes): one rect per level of the tree
    ({"size": 16, "grid": 8, "depth": 3, "focus": {"path": [[3, 4], [2, 5]]}}, 3),
    # the same with one neighbour (1,052 nodes, ~5 s): 3x3 blocks off the quadtree's boundaries
    pytest.param({"size": 16, "grid": 8, "depth": 3,
                  "focus": {"path": [[3, 4], [2, 5]], "neighbours": 1}}, 14,
                 marks=pytest.mark.slow),
    # a 3x3 grid (a 1296 px canvas, edge tiles cut) with the path at a corner and neighbours
    ({"size": 48, "grid": 3, "depth": 3, "focus": {"path": [[0, 2], [2, 2]], "neighbours": 1}},
     4),
])
def test_a_focus_builds_viewer_asks_only_for_written_tiles(examples_dir, tmp_path, dask_client,
                                                           raw, count):
    config = make_config(examples_dir, tmp_path / "focus", **raw)
    result = build_mosaic(config, client=dask_client)
    assert result.ok
    rects = assert_viewer_asks_only_for_written_tiles(config.out)
    assert len(rects) == count
    top = math.ceil(math.log2(config.plan().canvas_size))
    assert rects[0]["Rect"]["Width"] == config.plan().canvas_size  # all coarse levels exist
    assert max(r["Rect"]["MaxLevel"] for r in rects) == top


def republish(config, drop) -> None:
    """Remove the nodes for which ``drop(address)`` holds, as if they had failed, and publish
    the pyramid and its viewer again (in this process, without Dask)."""
    store = Store(config.out)
    for path in list(store.nodes_dir.rglob("*.png")):
        if drop(parse_address(str(path.relative_to(store.nodes_dir).with_suffix("")))):
            path.unlink()
    write_deepzoom(store, config.plan(), PublishConfig(tile_format="png"))
    write_viewer(config.out)


@pytest.fixture()
def full_build(examples_dir, tmp_path, dask_client):
    """A complete 3x3 build of depth 2 (48 px nodes, a 432 px canvas)."""
    config = make_config(examples_dir, tmp_path / "full", size=48, grid=3, depth=2)
    assert build_mosaic(config, client=dask_client).ok
    return config


def test_a_complete_pyramid_keeps_the_plain_descriptor(full_build):
    assert (full_build.out / "mosaic.dzi").read_text() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="png" Overlap="0" '
        'TileSize="48">\n  <Size Height="432" Width="432"/>\n</Image>\n'
    )
    assert "DisplayRect" not in read_dzi(full_build.out / "mosaic.dzi")["Image"]
    assert assert_viewer_asks_only_for_written_tiles(full_build.out) == []


def test_failed_nodes_viewer_asks_only_for_written_tiles(full_build):
    """A failed depth-1 node (its children never made) and a failed leaf: the pyramid stops in
    the first one's area, and the leaf's own tile is its parent's crop scaled up."""
    republish(full_build, lambda a: a[:1] == ((1, 2),) or a == ((0, 0), (2, 2)))
    rects = assert_viewer_asks_only_for_written_tiles(full_build.out)
    assert [r["Rect"]["MaxLevel"] for r in rects] == [8, 9, 9, 9]
    assert (full_build.out / "mosaic_files" / "9" / "2_2.png").is_file()  # the failed leaf's


def test_only_the_primary_left_names_every_finer_level_with_an_empty_rect(full_build):
    republish(full_build, lambda a: len(a) > 0)
    rects = assert_viewer_asks_only_for_written_tiles(full_build.out)
    assert [r["Rect"] for r in rects] == [
        {"X": 0, "Y": 0, "Width": 432, "Height": 432, "MinLevel": 0, "MaxLevel": 6},
        {"X": 0, "Y": 0, "Width": 0, "Height": 0, "MinLevel": 7, "MaxLevel": 9},
    ]


def test_display_rects_travel_through_the_descriptor(tmp_path):
    rects = [DisplayRect(0, 0, 432, 432, 0, 7), DisplayRect(144, 0, 288, 96, 0, 9)]
    dzi = tmp_path / "mosaic.dzi"
    dzi.write_text(dzi_xml(432, 432, 48, "png", rects))
    assert read_dzi(dzi)["Image"]["DisplayRect"] == osd_rects_from_xml(dzi) == [
        {"Rect": {"X": r.x, "Y": r.y, "Width": r.width, "Height": r.height,
                  "MinLevel": r.min_level, "MaxLevel": r.max_level}} for r in rects
    ]
    assert display_rects([], 432, 48) == []
    assert dzi_xml(432, 432, 48, "png", []) == dzi_xml(432, 432, 48, "png")


def test_read_dzi_refuses_a_display_rect_without_its_rect(tmp_path):
    dzi = tmp_path / "mosaic.dzi"
    dzi.write_text(dzi_xml(432, 432, 48, "png", [DisplayRect(0, 0, 432, 432, 0, 7)])
                   .replace('<Rect X="0" Y="0" Width="432" Height="432"/>', ""))
    with pytest.raises(InputError, match="bad DeepZoom descriptor attribute 'Rect'"):
        read_dzi(dzi)
