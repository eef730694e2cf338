"""The recolor engine with a folder of source images, through a whole build."""

from __future__ import annotations

import numpy as np

from hypermosaic.build import build_mosaic
from hypermosaic.build.engines import TileJob
from hypermosaic.build.recolor import srgb_to_lab
from hypermosaic.build.tasks import cut_tiles
from hypermosaic.images import decode, encode
from hypermosaic.store import Store
from tests.helpers import make_config

SIZE, GRID = 64, 4


def _patterns() -> list[np.ndarray]:
    """Six 64 px sources, each a distinct texture of mid-grey stripes or checks in a colour."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    waves = [np.sin(x / 3), np.sin(y / 3), np.sin((x + y) / 4), np.sin((x - y) / 4),
             np.sign(np.sin(x / 5)) * np.sign(np.sin(y / 5)), np.sin(np.hypot(x - 32, y - 32) / 3)]
    tints = [(200, 80, 60), (60, 160, 90), (70, 90, 200), (180, 170, 60), (150, 70, 170),
             (90, 170, 180)]
    return [np.clip(np.array(tint) + 50 * wave[..., None], 0, 255).astype(np.uint8)
            for wave, tint in zip(waves, tints, strict=True)]


def _lightness(image: np.ndarray) -> np.ndarray:
    values = srgb_to_lab(image)[..., 0].ravel()
    return (values - values.mean()) / (values.std() + 1e-6)


def test_folder_sources_differ_among_neighbours_and_keep_the_tile_colour(
    examples_dir, tmp_path, dask_client
):
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = _patterns()
    for index, image in enumerate(sources):
        (folder / f"{index}.png").write_bytes(encode(image))
    config = make_config(examples_dir, tmp_path / "b", size=SIZE, grid=GRID, depth=1,
                         tiles={"strength": 1.0}, recolor={"source": str(folder)})
    result = build_mosaic(config, client=dask_client, publish=False)
    assert result.ok and result.computed == 1 + GRID * GRID

    store = Store(config.out)
    root = decode(store.read_node(()))
    keys = [_lightness(image) for image in sources]
    used = np.zeros((GRID, GRID), np.int64)
    node_means = np.zeros((GRID, GRID, 3), np.float32)
    for row in range(GRID):
        for col in range(GRID):
            node = decode(store.read_node(((row, col),)))
            # the source is recognisable by its texture: the recolouring is affine in Lab
            scores = [float(np.mean(_lightness(node) * key)) for key in keys]
            used[row, col] = int(np.argmax(scores))
            assert max(scores) > 0.9 and sorted(scores)[-2] < 0.5
            node_means[row, col] = srgb_to_lab(node).reshape(-1, 3).mean(0)
    # strength 1: all content is the source's, the colour its tile's (up to gamut clipping)
    tiles = cut_tiles(root, GRID, SIZE, [TileJob(((r, c),), 0, "", "", 1.0, 1, 1.0)
                                        for r in range(GRID) for c in range(GRID)])
    tile_means = srgb_to_lab(tiles).reshape(GRID, GRID, -1, 3).mean(axis=2)
    assert np.abs(node_means - tile_means).max() < 6
    assert np.abs(node_means - tile_means).mean() < 0.5
    for row in range(GRID):
        for col in range(GRID):
            for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
                r, c = row + dr, col + dc
                if 0 <= r < GRID and 0 <= c < GRID:
                    assert used[row, col] != used[r, c], (row, col, r, c)
    assert len(set(used.ravel())) >= 4
