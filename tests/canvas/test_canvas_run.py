"""`run_canvases` around its workers: output folders locked, a full disk and Ctrl-C as one
line, errors naming the config's file. Workers are threads of this process rendering a stub
(no model), so these run in about a second."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

import hypermosaic.canvas.run as canvas_run
from hypermosaic.canvas import CanvasJob, canvas_config_from_dict
from hypermosaic.canvas.outputs import write_image
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.errors import BuildError, InputError, Interrupted
from hypermosaic.executor import WorkerState
from hypermosaic.store import LOCK_NAME, folder_lock


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=":0") as local:
        yield local


RENDERED: list[int] = []  # module level: tasks are pickled by reference, run in this process


def render_stub(state, key, plan, upscale_model, topic, index):
    RENDERED.append(index)
    return np.full((plan.height, plan.width, 3), 128, np.uint8), None


@pytest.fixture
def stub_worker(monkeypatch):
    """Workers that paint a grey canvas per plan (and count them), torch threads untouched."""
    RENDERED.clear()
    monkeypatch.setattr(canvas_run, "render_task", render_stub)
    monkeypatch.setattr(canvas_run, "canvas_state",
                        lambda name, threads, keys: WorkerState(name))
    return RENDERED


def jobs(tmp_path: Path, *outs: str, seed: int = 0) -> list[CanvasJob]:
    """One 16 px canvas per output folder; Dask keys differ by ``seed`` (a key is what the
    task computes, and the stub workers compute differently from test to test)."""
    made = []
    for index, out in enumerate(outs):
        config = canvas_config_from_dict(
            {"name": f"c{index}", "seed": seed, "width": 16, "height": 16, "out": out, "model": "m",
             "regions": [{"top": 0, "bottom": 16, "left": 0, "right": 16, "prompt": "p"}]},
            base=tmp_path, source=f"c{index}.toml")
        made.append(CanvasJob(config, plan_canvas(config)))
    return made


def test_canvases_are_written_and_their_folders_locked_meanwhile(tmp_path, client, stub_worker,
                                                                 monkeypatch):
    locked: list[bool] = []
    write = canvas_run.write_outputs

    def probing_write(job, image, upscaled):
        with pytest.raises(InputError, match="in use by another hypermosaic run"):
            with folder_lock(job.config.out):
                pass
        locked.append(True)
        return write(job, image, upscaled)

    monkeypatch.setattr(canvas_run, "write_outputs", probing_write)
    results = canvas_run.run_canvases(jobs(tmp_path, "a", "b", "a"), client=client)
    assert [r.outputs["image"].name for r in results] == ["c0-0.png", "c1-0.png", "c2-0.png"]
    assert sorted(stub_worker) == [0, 1, 2]
    assert locked == [True] * 3
    for folder in ("a", "b"):
        with folder_lock(tmp_path / folder):  # released
            pass


def test_a_folder_in_use_is_refused_before_any_work(tmp_path, client, stub_worker):
    with folder_lock(tmp_path / "b"), pytest.raises(InputError) as info:
        canvas_run.run_canvases(jobs(tmp_path, "a", "b"), client=client)
    assert str(info.value).startswith(f"{tmp_path / 'b'}: in use by another hypermosaic run")
    assert stub_worker == []
    assert [p.name for p in (tmp_path / "a").iterdir()] == [LOCK_NAME]


def test_a_full_disk_is_one_line_and_other_os_errors_stay(tmp_path, client, stub_worker,
                                                          monkeypatch):
    def full(job, image, upscaled):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(canvas_run, "write_outputs", full)
    with pytest.raises(InputError) as info:
        canvas_run.run_canvases(jobs(tmp_path, "a"), client=client)
    assert str(info.value).startswith(f"{tmp_path / 'a'}: the disk is full (")
    assert "run the same command again" in str(info.value)

    def denied(job, image, upscaled):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(canvas_run, "write_outputs", denied)
    with pytest.raises(PermissionError):
        canvas_run.run_canvases(jobs(tmp_path, "a"), client=client)


def test_libvips_full_disk_is_the_os_error_it_is(tmp_path, monkeypatch):
    import pyvips

    def refuse(self, *args, **kwargs):
        raise pyvips.Error("unable to call pngsave\n  x.png: write error\nsystem error: No "
                           "space left on device")

    monkeypatch.setattr(pyvips.Image, "pngsave", refuse)
    job = jobs(tmp_path, "a")[0]
    with pytest.raises(OSError) as info:
        canvas_run.write_outputs(job, np.zeros((16, 16, 3), np.uint8), None)
    assert info.value.errno == errno.ENOSPC
    assert list((tmp_path / "a").iterdir()) == []  # no temporary file left
    monkeypatch.setattr(pyvips.Image, "pngsave", lambda *a, **k: (_ for _ in ()).throw(
        pyvips.Error("unable to call pngsave: some other trouble")))
    with pytest.raises(pyvips.Error):
        write_image(np.zeros((16, 16, 3), np.uint8), tmp_path / "x")


def test_ctrl_c_says_where_finished_canvases_are(tmp_path, client, stub_worker, monkeypatch):
    write = canvas_run.write_outputs
    written: list[str] = []

    def interrupted_after_one(job, image, upscaled):
        if written:
            raise KeyboardInterrupt
        written.append(job.stem)
        return write(job, image, upscaled)

    monkeypatch.setattr(canvas_run, "write_outputs", interrupted_after_one)
    with pytest.raises(Interrupted) as info:
        canvas_run.run_canvases(jobs(tmp_path, "a", "b"), client=client)
    assert str(info.value).startswith(
        f"finished canvases are kept in {tmp_path / 'a'}, {tmp_path / 'b'}; ")
    assert info.value.exit_code == 130
    for folder in ("a", "b"):
        with folder_lock(tmp_path / folder):
            pass


def test_worker_errors_name_the_config_file(tmp_path, client, monkeypatch):
    def fails(state, key, plan, upscale_model, topic, index):
        raise BuildError("canvas: the latents hold NaN or infinite values after step 1 of 2")

    monkeypatch.setattr(canvas_run, "render_task", fails)
    monkeypatch.setattr(canvas_run, "canvas_state",
                        lambda name, threads, keys: WorkerState(name))
    with pytest.raises(BuildError, match=r"^c0.toml: canvas: the latents hold NaN"):
        canvas_run.run_canvases(jobs(tmp_path, "a", seed=1), client=client)
