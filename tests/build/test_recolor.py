from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_recolor import box, detail_correlation, psnr
from hypermosaic.build import build_mosaic, regenerate_node
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.build.recolor import (
    RecolorEngine,
    assign_sources,
    detail_blend,
    highpass,
    lab_to_srgb,
    lowpass,
    srgb_to_lab,
)
from hypermosaic.build.tasks import cut_tiles
from hypermosaic.errors import InputError
from hypermosaic.images import load_image, resize, square_crop
from hypermosaic.store import Store
from tests.helpers import make_config, node_files


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


# The detail blend: the tile's low frequencies under the source's high ones.

GRID = 4


@pytest.fixture(scope="module")
def cat(examples_dir):
    """The demo's primary at 128 px and its 16 tiles upsampled into inits, as a build cuts them."""
    primary = resize(square_crop(load_image(examples_dir / "images/chelsea.png")), 128, 128)
    jobs = [TileJob(((r, c),), 0, "", "", 1.0, 1, 1.0) for r in range(GRID) for c in range(GRID)]
    return primary, cut_tiles(primary, GRID, 128, jobs), TileContext(primary, GRID, primary)


def _tiles(blend, strength, cat, engine=None):
    primary, inits, context = cat
    jobs = [TileJob(((i // GRID, i % GRID),), 0, "", "", strength, 1, 1.0)
            for i in range(len(inits))]
    return (engine or RecolorEngine("primary", blend=blend)).tiles(inits, jobs, context)


def _from_afar(subs, inits):
    """PSNR of the sub-images against their tiles, all shrunk to 8 px (box): does the tile
    still show through when the mosaic is seen whole?"""
    return psnr(np.stack([box(s.astype(float), 8) for s in subs]),
                np.stack([box(t.astype(float), 8) for t in inits]))


def _detail(subs, primary):
    return float(np.mean([detail_correlation(s, primary) for s in subs]))


def test_lowpass_keeps_a_flat_image_and_highpass_is_the_rest():
    flat = np.full((40, 24, 3), 17.5, np.float32)
    assert np.array_equal(lowpass(flat, 4), flat)
    photo = srgb_to_lab(_photo(64))
    assert np.allclose(lowpass(photo, 8) + highpass(photo, 8), photo, atol=1e-4)
    assert np.array_equal(lowpass(photo, 64), photo)  # nothing below 64 px to take away
    noise = np.random.default_rng(0).normal(50, 10, (64, 64, 3)).astype(np.float32)
    assert lowpass(noise, 8).std() < 0.2 * noise.std()  # fine detail is taken away


def test_detail_blend_keeps_each_tile_mean_colour(cat):
    primary, inits, _ = cat
    subs = _tiles("detail", 1.0, cat)
    means = subs.reshape(len(subs), -1, 3).mean(1)
    assert np.abs(means - inits.reshape(len(inits), -1, 3).mean(1)).max() < 3.5
    # exact in the working space (CIE Lab) before rounding to uint8
    tile, detail = srgb_to_lab(inits[5]), highpass(srgb_to_lab(primary), 8)
    assert np.allclose(detail_blend(tile, detail).mean((0, 1)), tile.mean((0, 1)), atol=1e-3)


def test_detail_blend_keeps_the_tile_from_afar_and_the_source_detail_close_up(cat):
    primary, inits, _ = cat
    transfer, detail = _tiles("transfer", 0.6, cat), _tiles("detail", 0.6, cat)
    # same strength: the tiles show through far better, nearly all the source's detail stays
    assert _from_afar(detail, inits) > _from_afar(transfer, inits) + 4
    assert _detail(detail, primary) > _detail(transfer, primary) - 0.05
    # the new demo's strength against the old demo's: better on both counts
    stronger = _tiles("detail", 0.8, cat)
    assert _from_afar(stronger, inits) > _from_afar(transfer, inits) + 2
    assert _detail(stronger, primary) > _detail(transfer, primary) + 0.02
    assert _detail(_tiles("detail", 1.0, cat), primary) > 0.95


def test_detail_blend_is_exact_whatever_the_engine_has_seen(cat):
    warm = RecolorEngine("primary", blend="detail")
    first = _tiles("detail", 0.8, cat, warm)
    again = _tiles("detail", 0.8, cat, warm)  # the source's high frequencies now cached
    fresh = _tiles("detail", 0.8, cat)
    assert np.array_equal(first, again) and np.array_equal(first, fresh)
    primary, inits, context = cat
    alone = warm.tiles(inits[7:8], [TileJob(((1, 3),), 0, "", "", 0.8, 1, 1.0)], context)
    assert np.array_equal(alone[0], first[7])
    with pytest.raises(ValueError, match="recolor.blend"):
        RecolorEngine("primary", blend="overlay")


def test_a_detail_build_on_two_workers_matches_this_process(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "d", recolor={"blend": "detail"})
    assert build_mosaic(config, client=dask_client, publish=False).ok
    store, files = Store(config.out), node_files(tmp_path / "d")
    assert len(files) == 21
    for address in [((1, 0),), ((0, 1), (1, 1)), ((1, 1), (0, 0))]:
        assert regenerate_node(config, address) == store.read_node(address)
    plain = make_config(examples_dir, tmp_path / "t")
    assert fingerprints(config)["0"] != fingerprints(plain)["0"]


def test_the_default_blend_leaves_fingerprints_as_they_were(examples_dir):
    """``blend`` is left out of what is fingerprinted while it is the default: every config
    written before it existed (the old demo's prints below) resumes without --force."""
    raw = {"seed": 7, "size": 256, "grid": 8, "depth": 2, "engine": "recolor",
           "primary": {"image": "images/chelsea.png"}, "tiles": {"strength": 0.6},
           "levels": {"2": {"strength": 0.5}}, "recolor": {"source": "primary"}}
    old = build_config_from_dict(raw, base=examples_dir, source="demo.toml")
    assert old.recolor.model_dump() == {"source": "primary", "colour_space": "lab",
                                        "min_contrast": 0.35}
    assert fingerprints(old) == {
        "0": "45bc028c85a87189", "1": "13345f6d73906729", "2": "e3a55933d49fae07"}
    raw["recolor"] = {"source": "primary", "blend": "transfer"}
    explicit = build_config_from_dict(raw, base=examples_dir, source="demo.toml")
    assert fingerprints(explicit) == fingerprints(old)
    raw["recolor"] = {"blend": "overlay"}
    with pytest.raises(InputError, match=r"recolor\.blend"):
        build_config_from_dict(raw, base=examples_dir, source="demo.toml")
