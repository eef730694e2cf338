"""ESRGAN init upscaling in the build: each tile's crop enlarged by a model instead of bicubic."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hypermosaic.build import build_mosaic, regenerate_node
from hypermosaic.build.checks import check_init_upscalers
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.build.engines import TileJob
from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.build.tasks import Encoding, EngineSpec, cut_tiles, make_tiles
from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.executor import ModelCache
from hypermosaic.images import decode, encode, resize
from hypermosaic.pipelines.esrgan import upscaler as esrgan
from hypermosaic.pipelines.esrgan.tiled import enlarge, upscale_array
from hypermosaic.store import Store
from tests.helpers import astronaut, make_config, save_srvgg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def x2(tmp_path: Path) -> Path:
    return save_srvgg(tmp_path / "x2.safetensors", 2)


def _photo(side: int) -> np.ndarray:
    return astronaut(side, side, top=180, left=200)


def _config(examples_dir: Path, out: Path, **raw):
    """`make_config` at 32 px nodes: grid-2 crops of 16 px, which a 2x model takes to 32."""
    return make_config(examples_dir, out, size=32, **raw)


def test_enlarge_runs_the_model_while_it_fits_then_resizes(x2: Path) -> None:
    upscaler = esrgan.load_upscaler(x2, device="cpu", dtype="float32")
    crop = _photo(8)
    twice = upscale_array(upscaler, upscale_array(upscaler, crop))
    assert np.array_equal(enlarge(upscaler, crop, 32), twice)  # 8 -> 16 -> 32
    once = upscale_array(upscaler, crop)
    assert np.array_equal(enlarge(upscaler, crop, 24), resize(once, 24, 24))  # 8 -> 16, 24
    assert not np.array_equal(twice, resize(crop, 32, 32))


def test_scale_one_weights_are_refused(tmp_path: Path, examples_dir: Path) -> None:
    same = save_srvgg(tmp_path / "x1.safetensors", 1)
    with pytest.raises(InputError, match="does not enlarge"):
        enlarge(esrgan.load_upscaler(same, device="cpu"), _photo(8), 32)
    config = _config(examples_dir, tmp_path / "out", tiles={"init_upscale": str(same)})
    with pytest.raises(InputError, match=r"tiles\.init_upscale: .*x1\.safetensors \(scale 1\)"):
        build_mosaic(config, publish=False)
    assert not (tmp_path / "out").exists()


def test_tiles_get_the_models_init_each_on_its_own(x2: Path) -> None:
    """`make_tiles` hands the engine the ESRGAN-enlarged crops, the same as one at a time."""
    parent = _photo(32)
    jobs = [TileJob(((r, c),), 0, "", "", 0.5, 10, 7.5, init_upscale=str(x2))
            for r in range(2) for c in range(2)]
    upscalers = EngineSpec("recolor", ()).upscalers(ModelCache())
    inits = cut_tiles(parent, 2, 32, jobs, upscalers)
    model = upscalers(str(x2))
    for (r, c), init in zip([(0, 0), (0, 1), (1, 0), (1, 1)], inits, strict=True):
        crop = parent[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
        assert np.array_equal(init, enlarge(model, crop, 32))
    assert np.array_equal(cut_tiles(parent, 2, 32, jobs[2:3], upscalers)[0], inits[2])

    class Echo:
        def tiles(self, inits, jobs, context):
            return inits

    encoded = make_tiles(Echo(), encode(parent), encode(parent), 2, jobs, Encoding(),
                         upscalers)
    assert all(np.array_equal(decode(data), init) for data, init in zip(encoded, inits,
                                                                         strict=True))
    with pytest.raises(ValueError, match="no upscalers"):
        cut_tiles(parent, 2, 32, jobs)


def test_config_names_levels_and_resolves_weights(examples_dir: Path, tmp_path: Path,
                                                  x2: Path) -> None:
    plain = _config(examples_dir, tmp_path / "a")
    config = _config(examples_dir, tmp_path / "a", levels={2: {"init_upscale": "fast"}})
    assert [config.level(d).init_upscale for d in (1, 2)] == ["bicubic", "fast"]
    assert config.init_upscalers == ("fast",) and config.uses_torch
    assert plain.init_upscalers == () and not plain.uses_torch
    before, after = fingerprints(plain), fingerprints(config)
    assert before["1"] == after["1"] and before["2"] != after["2"]
    relative = build_config_from_dict(
        {"size": 32, "grid": 2, "depth": 1, "primary": {"image": str(examples_dir /
         "images/chelsea.png")}, "tiles": {"init_upscale": "x2.safetensors"}},
        base=tmp_path, source="t.toml")
    assert relative.level(1).init_upscale == str(tmp_path / "x2.safetensors")
    printed = fingerprints(relative)["1"]
    save_srvgg(x2, 4)  # other weights under the same name
    assert fingerprints(relative)["1"] != printed
    with pytest.raises(InputError, match=r"tiles\.init_upscale: .*'bilinear' is neither"):
        _config(examples_dir, tmp_path / "b", tiles={"init_upscale": "bilinear"})
    with pytest.raises(InputError, match=r"levels\.2\.init_upscale: no such weights file: "
                       + re.escape(str(examples_dir / "missing.pth"))):
        _config(examples_dir, tmp_path / "b", levels={2: {"init_upscale": "missing.pth"}})
    float32 = _config(examples_dir, tmp_path / "a", levels={2: {"init_upscale": "fast"}},
                      diffusion={"dtype": "float32"})
    assert fingerprints(float32)["2"] != after["2"]  # the dtype the model runs in counts


def test_weights_beside_the_config_not_the_working_directory(tmp_path: Path, monkeypatch,
                                                             examples_dir: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    save_srvgg(tmp_path / "w.safetensors", 2)  # only in the working directory
    raw = {"size": 32, "grid": 2, "depth": 1, "tiles": {"init_upscale": "w.safetensors"},
           "primary": {"image": str(examples_dir / "images/chelsea.png")}}
    with pytest.raises(InputError, match="no such weights file: " + re.escape(str(folder))):
        build_config_from_dict(raw, base=folder, source="t.toml")


def test_default_fingerprints_are_those_of_builds_made_before_init_upscale(
    examples_dir: Path,
) -> None:
    """The demo's prints, pinned. The demo as it was before ``recolor.blend`` (whose prints
    the release before ``init_upscale`` computed, so old stores resume without --force) is
    pinned in test_recolor.py."""
    from hypermosaic.build.config import load_build_config

    assert fingerprints(load_build_config(examples_dir / "demo.toml")) == {
        "0": "26253e51115824d2", "1": "69a35ed0694a4f4b", "2": "2ae7e9e7e4113ce9"}


def test_a_model_that_could_never_run_is_refused_naming_its_level(
    examples_dir: Path, tmp_path: Path, x2: Path
) -> None:
    """grid 2 with a 4x model: the 16 px crops of a 32 px node cannot take one 4x pass."""
    config = _config(examples_dir, tmp_path / "out", depth=1,
                     levels={1: {"init_upscale": "fast"}})
    with pytest.raises(InputError, match=r"levels\.1\.init_upscale: fast \(scale 4\) cannot "
                       r"enlarge the 16 px tiles of level 1 within size 32"):
        build_mosaic(config, publish=False)
    assert not (tmp_path / "out").exists()
    fine = _config(examples_dir, tmp_path / "ok", depth=1, grid=4, tiles={"init_upscale": "fast"})
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(x2.read_bytes()[:200])
    broken = _config(examples_dir, tmp_path / "out", depth=1, tiles={"init_upscale": str(damaged)})
    with pytest.raises(InputError, match=r"tiles\.init_upscale: .*damaged\.safetensors"):
        build_mosaic(broken, publish=False)
    check_init_upscalers(fine)  # grid 4: 8 px crops, one 4x pass to 32 px: accepted


def test_cli_refuses_a_bad_init_upscale_with_exit_2(examples_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'size = 32\ngrid = 2\ndepth = 1\nout = "{tmp_path / "out"}"\n'
                      f'[primary]\nimage = "{examples_dir / "images/chelsea.png"}"\n'
                      '[tiles]\ninit_upscale = "esrgan"\n')
    result = CliRunner().invoke(cli, ["build", str(config)])
    assert result.exit_code == 2
    assert "tiles.init_upscale" in result.output and "'esrgan' is neither" in result.output
    assert not (tmp_path / "out").exists()


def test_build_with_model_inits_is_reproducible(examples_dir: Path, tmp_path: Path, x2: Path,
                                                dask_client) -> None:
    """On the pool (two workers) and regenerated alone in this process, a node made from an
    ESRGAN init has the same bytes; and the init shows in the nodes."""
    config = _config(examples_dir, tmp_path / "esrgan", tiles={"init_upscale": str(x2)})
    result = build_mosaic(config, client=dask_client, publish=False)
    assert result.ok and result.computed == 21
    store = Store(config.out)
    for address in [((1, 0),), ((0, 1), (1, 1))]:
        assert regenerate_node(config, address) == store.read_node(address)
    plain = _config(examples_dir, tmp_path / "plain")
    build_mosaic(plain, client=dask_client, publish=False)
    assert store.read_node(((1, 0),)) != Store(plain.out).read_node(((1, 0),))
