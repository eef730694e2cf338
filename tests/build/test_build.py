from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from hypermosaic.build import build_mosaic, regenerate_node
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.errors import InputError
from hypermosaic.images import decode, load_image, resize, square_crop
from hypermosaic.publish.assemble import canvas_image
from hypermosaic.store import Store
from hypermosaic.tree import ROOT
from tests.helpers import make_config, node_files


def test_one_worker_and_two_workers_give_identical_nodes(examples_dir, tmp_path, dask_client):
    two = build_mosaic(make_config(examples_dir, tmp_path / "two"), client=dask_client,
                    publish=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        one = build_mosaic(make_config(examples_dir, tmp_path / "one"), client=client,
                        publish=False)
    assert one.ok and two.ok and one.total == two.total == 21
    files = node_files(tmp_path / "one")
    assert len(files) == 21
    assert files == node_files(tmp_path / "two")


def test_one_node_regenerated_alone_matches(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "b")
    build_mosaic(config, client=dask_client, publish=False)
    store = Store(config.out)
    for address in [((1, 0),), ((0, 1), (1, 1))]:
        assert regenerate_node(config, address) == store.read_node(address)


def test_canvas_geometry_and_colours(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "g", grid=[4, 2])
    build_mosaic(config, client=dask_client, publish=False)
    store, plan = Store(config.out), config.plan()
    canvas = canvas_image(store, plan)
    assert (canvas.width, canvas.height) == (64 * 8, 64 * 8)
    pixels = canvas.numpy()
    for address in [((0, 0), (0, 0)), ((2, 3), (1, 0)), ((3, 3), (1, 1))]:
        x, y = plan.origin(address)
        assert np.array_equal(pixels[y:y + 64, x:x + 64], decode(store.read_node(address)))
    primary = resize(square_crop(load_image(config.primary.image)), 64, 64).astype(float)
    shrunk = resize(pixels, 64, 64).astype(float)
    assert np.abs(shrunk - primary).mean() < 20

    def block_means(image):  # one mean colour per leaf tile (8 x 8 leaves)
        return image.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))

    assert np.abs(block_means(shrunk) - block_means(primary)).mean() < 8


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_output_is_identical(examples_dir, tmp_path, dask_client):
    reference = build_mosaic(make_config(examples_dir, tmp_path / "ref", grid=4),
                             client=dask_client, publish=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        killed = []

        def kill_one(event):
            if event.done >= 40 and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        result = build_mosaic(make_config(examples_dir, tmp_path / "k", grid=4), client=client,
                           progress=kill_one, publish=False)
    assert killed and result.ok and result.total == reference.total == 273
    assert node_files(tmp_path / "k") == node_files(tmp_path / "ref")


@pytest.mark.slow
def test_resume_after_the_build_process_is_killed(examples_dir, tmp_path, dask_client):
    config_path = tmp_path / "b.toml"
    config_path.write_text(
        f'seed = 3\nsize = 64\ngrid = 4\ndepth = 2\n[primary]\nimage = "{examples_dir}/images/'
        'chelsea.png"\n[tiles]\nstrength = 0.6\n'
    )
    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "hypermosaic", "build", str(config_path), "--out", str(out),
               "--no-publish", "--workers", "1"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(6000):  # wait (up to about two minutes) until some nodes are written
        if len(list(out.rglob("*.png"))) >= 30 or process.poll() is not None:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survivors = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert 30 <= len(survivors) < 273
    interrupted_write = out / "nodes" / ".0_0.png.1.tmp"  # as a write cut short by SIGKILL
    interrupted_write.write_bytes(b"\x89PNG partial")

    config = build_config_from_dict(
        {"seed": 3, "size": 64, "grid": 4, "depth": 2, "out": str(out),
         "primary": {"image": f"{examples_dir}/images/chelsea.png"}, "tiles": {"strength": 0.6}},
        base=tmp_path, source="b.toml",
    )
    resumed = build_mosaic(config, client=dask_client, publish=False)
    assert resumed.ok and resumed.reused == len(survivors)
    assert resumed.computed == 273 - len(survivors)
    assert all(p.stat().st_mtime_ns == t for p, t in survivors.items())
    reference = build_mosaic(make_config(examples_dir, tmp_path / "ref", grid=4),
                             client=dask_client, publish=False)
    assert reference.computed == 273
    assert node_files(out) == node_files(tmp_path / "ref")
    assert not list(out.rglob("*.tmp"))


def test_changed_settings_are_refused_unless_forced(examples_dir, tmp_path, dask_client):
    out = tmp_path / "c"
    build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client, publish=False)
    deeper = build_mosaic(make_config(examples_dir, out), client=dask_client, publish=False)
    assert deeper.reused == 5 and deeper.computed == 16
    before = node_files(out)
    with pytest.raises(InputError, match=r"different settings \(the level-1 settings changed\)"):
        build_mosaic(make_config(examples_dir, out, tiles={"strength": 0.2}), client=dask_client,
                     publish=False)
    assert node_files(out) == before
    forced = build_mosaic(make_config(examples_dir, out, tiles={"strength": 0.2}),
                       client=dask_client, force=True, publish=False)
    assert forced.computed == 21 and node_files(out) != before


def test_a_tile_that_keeps_failing_is_reported_and_the_rest_kept(examples_dir, tmp_path,
                                                                 dask_client):
    out = tmp_path / "f"
    build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client, publish=False)
    broken = Store(out).node_path(((0, 1),))
    broken.write_bytes(b"\x89PNG not really")
    result = build_mosaic(make_config(examples_dir, out), client=dask_client, publish=False)
    assert set(result.failed) == {((0, 1), (r, c)) for r in range(2) for c in range(2)}
    assert result.computed == 12 and not result.ok
    assert Store(out).has(((1, 1), (1, 1))) and Store(out).has(ROOT)


def test_a_failing_recolor_tile_costs_only_itself(examples_dir, tmp_path, monkeypatch):
    """Recolor tiles do not depend on their batch-mates: a failed batch is retried tile by tile."""
    from hypermosaic.build.recolor import RecolorEngine

    tiles = RecolorEngine.tiles

    def fail_on_0_1(self, inits, jobs, context):
        if any(job.address == ((0, 1),) for job in jobs):
            raise RuntimeError("this tile is cursed")
        return tiles(self, inits, jobs, context)

    monkeypatch.setattr(RecolorEngine, "tiles", fail_on_0_1)
    with (LocalCluster(n_workers=1, processes=False, dashboard_address=":0",
                       silence_logs=50) as cluster, Client(cluster) as client):
        result = build_mosaic(make_config(examples_dir, tmp_path / "one", depth=1), client=client,
                           publish=False)
    assert set(result.failed) == {((0, 1),)} and "cursed" in result.failed[((0, 1),)]
    assert result.computed == 4  # the root and three tiles
    assert all(Store(tmp_path / "one").has(((r, c),)) for r, c in [(0, 0), (1, 0), (1, 1)])
