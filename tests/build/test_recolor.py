from __future__ import annotations

import numpy as np

from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.build.recolor import RecolorEngine, assign_sources, lab_to_srgb, srgb_to_lab


def _photo(size=64, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                      np.full((size, size), 90.0)], axis=-1)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def test_lab_round_trip_is_exact_to_one_level():
    image = _photo()
    back = lab_to_srgb(srgb_to_lab(image))
    assert np.abs(back.astype(int) - image).max() <= 1
    white = srgb_to_lab(np.full((1, 1, 3), 255, np.uint8))[0, 0]
    assert abs(white[0] - 100) < 0.01 and abs(white[1]) < 0.01 and abs(white[2]) < 0.01


def test_recolored_tile_takes_the_tile_mean_colour():
    engine = RecolorEngine("primary")
    primary = _photo(64)
    flat = np.zeros((1, 64, 64, 3), np.uint8)
    flat[...] = (200, 40, 60)
    job = TileJob(((0, 0),), 1, "", "", 1.0, 1, 1.0)
    (out,) = engine.tiles(flat, [job], TileContext(primary, 2, primary))
    assert np.abs(out.reshape(-1, 3).mean(0) - (200, 40, 60)).max() < 4
    (kept,) = engine.tiles(flat, [TileJob(((0, 0),), 1, "", "", 0.0, 1, 1.0)],
                           TileContext(primary, 2, primary))
    assert np.array_equal(kept, flat[0])


def test_batch_does_not_change_a_tile():
    engine = RecolorEngine("parent")
    parent = _photo(64, 1)
    inits = np.stack([_photo(64, s) for s in range(3)])
    jobs = [TileJob(((0, i),), i, "", "", 0.5, 1, 1.0) for i in range(3)]
    together = engine.tiles(inits, jobs, TileContext(parent, 4, parent))
    alone = engine.tiles(inits[1:2], jobs[1:2], TileContext(parent, 4, parent))
    assert np.array_equal(together[1], alone[0])


def test_folder_sources_closest_colour_without_neighbour_repeats():
    sources = np.array([[10, 0, 0], [12, 0, 0], [50, 0, 0], [90, 0, 0]], np.float32)
    tiles = np.full((3, 3, 3), 11, np.float32)
    tiles[..., 1:] = 0
    chosen = assign_sources(tiles, sources)
    assert chosen[0, 0] in (0, 1)
    for r in range(3):
        for c in range(3):
            for dr, dc in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
                if 0 <= r + dr < 3 and 0 <= c + dc < 3:
                    assert chosen[r, c] != chosen[r + dr, c + dc]
