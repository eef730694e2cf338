"""What a build refuses or survives: a folder in use, a full disk, a build too big for the
machine, Ctrl-C, and a manifest that is never wrong."""

from __future__ import annotations

import errno
import json

import pytest
from distributed import Client, LocalCluster

from hypermosaic.build import build_mosaic
from hypermosaic.build.estimate import estimate
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.store import Store, folder_lock
from tests.helpers import make_config, node_files


def test_a_folder_another_run_holds_is_refused_naming_it(examples_dir, tmp_path, dask_client):
    out = tmp_path / "b"
    with folder_lock(out), pytest.raises(InputError) as error:
        build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client)
    assert str(error.value).startswith(f"{out}: in use by another hypermosaic run (pid ")
    assert not (out / "manifest.json").exists() and not (out / "nodes").exists()
    assert build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client,
                        publish=False).ok  # released with the first run


def test_a_full_disk_is_one_line_and_the_build_resumes(examples_dir, tmp_path, dask_client,
                                                       monkeypatch):
    out = tmp_path / "b"
    written = []
    real = Store.write_node

    def fill_up(self, address, data):
        if len(written) == 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(address)
        return real(self, address, data)

    monkeypatch.setattr(Store, "write_node", fill_up)
    with pytest.raises(InputError, match=rf"^{out}: the disk is full \(.* MiB free; about "
                       r".* GiB more is needed\); free some space and run the same command"):
        build_mosaic(make_config(examples_dir, out), client=dask_client)
    assert not list(out.rglob("*.tmp")) and not list(out.glob(".*staging*"))
    monkeypatch.undo()
    resumed = build_mosaic(make_config(examples_dir, out), client=dask_client)
    assert resumed.ok and resumed.reused == 7
    build_mosaic(make_config(examples_dir, tmp_path / "ref"), client=dask_client)
    assert node_files(out) == node_files(tmp_path / "ref")


def test_a_build_no_disk_can_hold_is_refused_with_its_estimate(examples_dir, tmp_path):
    config = make_config(examples_dir, tmp_path / "huge", size=8192, grid=256, depth=16)
    assert estimate(config).nodes == sum(256 ** (2 * d) for d in range(17))
    with pytest.raises(InputError, match=r"this build needs 1.16e\+77 nodes, "
                       r"about 1.41e\+73 TiB on disk .* but the disk has .* free; .* --yes"):
        build_mosaic(config)
    assert not (tmp_path / "huge").exists()


def test_the_estimate_is_the_first_progress_note(examples_dir, tmp_path, dask_client):
    events = []
    build_mosaic(make_config(examples_dir, tmp_path / "b", depth=1), client=dask_client,
                 publish=False, progress=events.append)
    notes = [event.note for event in events if event.note]
    assert len(notes) == 1 and events[0].note == notes[0]
    assert notes[0].startswith("5 nodes, about ") and "of memory per worker" in notes[0]


def test_the_manifest_never_claims_what_is_not_there(examples_dir, tmp_path, dask_client,
                                                     monkeypatch):
    """Killed while publishing, the manifest says the nodes are complete and nothing is
    published; an interrupted extension removes the previous depth's pyramid, which no
    longer shows the build, and says so."""
    out = tmp_path / "b"
    import hypermosaic.publish.run as publish_run

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(publish_run, "write_viewer", crash)
    with pytest.raises(Interrupted, match=f"finished nodes are kept in {out}"):
        build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and not manifest["published"] and manifest["outputs"] == {}
    monkeypatch.undo()
    build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["published"] and set(manifest["outputs"]) == {"preview", "deepzoom",
                                                                   "viewer"}

    def interrupt(event):
        if event.done > 8:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        build_mosaic(make_config(examples_dir, out), client=dask_client, progress=interrupt)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and not manifest["published"]
    assert not any((out / name).exists() for name in ("index.html", "preview.png",
                                                      "mosaic.dzi", "mosaic_files"))


def test_an_engine_that_cannot_load_stops_the_build_once(examples_dir, tmp_path, monkeypatch):
    """The engine loads when the build's state is registered: its error ends the build
    there, loaded once per worker, instead of failing every batch and retrying it."""
    import hypermosaic.build.tasks as tasks

    loads = []

    def broken(name, settings):
        loads.append(name)
        raise RuntimeError("weights are damaged")

    monkeypatch.setattr(tasks, "create_engine", broken)
    with (LocalCluster(n_workers=1, processes=False, dashboard_address=":0",
                       silence_logs=50) as cluster, Client(cluster) as client,
          pytest.raises(RuntimeError, match="weights are damaged")):
        build_mosaic(make_config(examples_dir, tmp_path / "b"), client=client)
    assert loads == ["recolor"]
    assert not (tmp_path / "b" / "nodes").exists()


def test_a_disk_that_fills_while_publishing_is_one_line_and_leaves_no_staging(
        examples_dir, tmp_path, dask_client, monkeypatch):
    """Python's own writes fail with ENOSPC, libvips' with its message: both are one line."""
    import pyvips

    import hypermosaic.publish.deepzoom as deepzoom
    import hypermosaic.publish.run as publish_run

    out = tmp_path / "b"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deepzoom, "atomic_write", no_space)
    with pytest.raises(InputError, match=rf"^{out}: the disk is full"):
        build_mosaic(make_config(examples_dir, out, depth=1), client=dask_client)
    monkeypatch.undo()

    def vips_no_space(*args, **kwargs):
        raise pyvips.Error("unable to write", "tiffsave: No space left on device")

    monkeypatch.setattr(publish_run, "canvas_image", lambda *a, **k: type(
        "Canvas", (), {"tiffsave": vips_no_space, "width": 128,
                       "resize": lambda self, *a, **k: self,
                       "pngsave_buffer": lambda self: b""})())
    with pytest.raises(InputError, match=rf"^{out}: the disk is full"):
        build_mosaic(make_config(examples_dir, out, depth=1, publish={"tiff": True}),
                     client=dask_client)
    assert not list(out.glob(".*staging*")) and not list(out.glob(".*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and not manifest["published"]
