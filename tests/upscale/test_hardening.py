"""`hypermosaic upscale` as a demanding user meets it: foreign weights files, an --out that
names a format we do not write, folders that cannot be written or are in use, a full disk,
settings changed between runs, Ctrl-C. Each gets one line and its exit status, and nothing
partial is left."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from click.testing import CliRunner, Result
from safetensors.torch import save_file

from hypermosaic import registry
from hypermosaic.cli import cli
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.pipelines.esrgan import upscaler as esrgan
from hypermosaic.pipelines.esrgan.tiled import upscale_array
from hypermosaic.progress import Progress
from hypermosaic.store import LOCK_NAME, folder_lock
from hypermosaic.upscale import plan_jobs, upscale_images
from hypermosaic.upscale import record as records
from tests.helpers import astronaut, save_srvgg

pytestmark = pytest.mark.usefixtures("hypermosaic_cache", "one_torch_thread")

SUPPORTED = ".tif, .tiff, .png, .jpg, .jpeg, .dzi"


def _save(image: np.ndarray, path: Path) -> Path:
    pyvips.Image.new_from_array(image, interpretation="srgb").write_to_file(str(path))
    return path


def _read(path: Path) -> np.ndarray:
    """The pixels of an image file as they are now (libvips caches loads by file name)."""
    return pyvips.Image.new_from_buffer(path.read_bytes(), "").numpy()


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, ["upscale", *map(str, args)])


def _one_line(result: Result, status: int = 2) -> str:
    """The single line a failed run prints besides its progress bars (no traceback, nothing
    else)."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines()
             if not re.match(r"(tiles|weights) .* \d+/\d+ ", line)]
    assert len(lines) == 1, result.output
    return lines[0]


def _files(folder: Path) -> list[str]:
    """What a folder holds, the lock file aside (the OS's lock, kept for the next run)."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    return save_srvgg(tmp_path / "tiny.safetensors", 2)


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    return _save(astronaut(30, 50), tmp_path / "in.png")


# 1. Weights files that are not Real-ESRGAN checkpoints -----------------------------------

def _zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _other_network(path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3))
    torch.save(net.state_dict(), path)


BAD_WEIGHTS = {
    "text.pth": (lambda p: p.write_text("hello\n"), "not a PyTorch checkpoint"),
    "byte.pth": (lambda p: p.write_bytes(b"\x80"), "not a readable PyTorch checkpoint"),
    "zip.pth": (_zip_of_text, "not a readable PyTorch checkpoint (a zip archive"),
    "numbers.pth": (lambda p: torch.save({"a": 1, "b": "x"}, p),
                    "not a state dict of tensors ('a': int, not a tensor)"),
    "other.pth": (_other_network, "not a Real-ESRGAN RRDBNet or SRVGGNetCompact state dict"),
    "shapes.safetensors": (
        lambda p: save_file({"conv_first.weight": torch.zeros(8, 3),
                             "body.0.rdb1.conv1.weight": torch.zeros(4)}, p),
        "conv_first.weight is of shape (8, 3), not a convolution weight"),
}


@pytest.mark.parametrize("name", BAD_WEIGHTS)
def test_a_file_that_is_not_weights_is_one_line_naming_it(name: str, photo: Path,
                                                           tmp_path: Path) -> None:
    """Before: IndexError / KeyError / ValueError tracebacks from torch.load or the
    architecture guess."""
    write, message = BAD_WEIGHTS[name]
    weights = tmp_path / name
    write(weights)
    before = _files(tmp_path)
    line = _one_line(_invoke(photo, "--model", weights, "--out", tmp_path / "out.png"))
    assert line.startswith(f"Error: {weights}: ") and message in line, line
    assert _files(tmp_path) == before


# 2. An --out that names a file of a format we do not write -------------------------------

@pytest.mark.parametrize("suffix", [".bmp", ".gif", ".webp", ".jxl", ".BMP"])
def test_an_out_with_an_unsupported_image_suffix_is_refused(suffix: str, photo: Path,
                                                            tmp_path: Path) -> None:
    """Before: a folder named ``x.bmp`` was made and filled."""
    out = tmp_path / f"x{suffix}"
    for inputs in ([photo], [tmp_path]):  # one file, and a folder of inputs
        line = _one_line(_invoke(*inputs, "--model", "fast", "--out", out))
        assert line == (f"Error: --out {out}: {suffix.lower()} is not an output format; an "
                        f"output file ends in {SUPPORTED} (any other name is a folder)")
        assert not out.exists()


def test_folders_with_dots_in_their_names_stay_folders(photo: Path, tmp_path: Path) -> None:
    (job,) = plan_jobs([photo], tmp_path / "scans.v2", "fast")
    assert job.dst == tmp_path / "scans.v2" / "in.tif"
    (tmp_path / "old.webp").mkdir()  # an existing folder is one, whatever its name
    (job,) = plan_jobs([photo], tmp_path / "old.webp", "fast", fmt="png")
    assert job.dst == tmp_path / "old.webp" / "in.png"


# 3. Folders that cannot be written, folders in use, a full disk --------------------------

@pytest.fixture()
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a model is loaded or a tile upscaled."""

    def computed(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(registry, "load_upscaler", computed)
    monkeypatch.setattr(registry, "upscale_bands", computed)


@pytest.fixture()
def unwritable(tmp_path: Path) -> Path:
    """A folder no file can be made in (root may write anywhere but in /proc)."""
    if os.geteuid() == 0:
        return Path("/proc/self/upscaled")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return folder


@pytest.mark.usefixtures("no_work")
def test_an_unwritable_output_folder_is_refused_before_any_work(
    photo: Path, tiny_model: Path, unwritable: Path
) -> None:
    """Before: about 20 s of upscaling, then a traceback."""
    line = _one_line(_invoke(photo, "--model", tiny_model, "--out", unwritable / "x.png"))
    assert line.startswith(f"Error: --out {unwritable}: cannot write here ("), line


@pytest.mark.usefixtures("no_work")
def test_a_folder_in_use_by_another_run_is_refused_before_any_work(
    photo: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with folder_lock(out):  # as another run would hold it
        line = _one_line(_invoke(photo, "--model", tiny_model, "--out", out / "x.png"))
    assert line == (f"Error: {out}: in use by another hypermosaic run (pid {os.getpid()}); "
                    "wait for it to finish or choose another --out")
    assert _files(out) == []


def _no_space(*args: object, **kwargs: object) -> None:
    """A libvips saver on a full disk: part of a file written, then libvips' error."""
    for arg in args[1:]:
        Path(str(arg)).write_bytes(b"partial")
    raise pyvips.Error("unable to call pngsave",
                       "out.png: write error\nsystem error: No space left on device\n")


@pytest.mark.parametrize("fmt", ["png", "dzi"])
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    fmt: str, photo: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a traceback (libvips' error), or the bare libvips words."""
    saver = {"png": "pngsave", "dzi": "dzsave"}[fmt]
    monkeypatch.setattr(pyvips.Image, saver, _no_space, raising=False)
    out = tmp_path / "out"
    line = _one_line(_invoke(photo, "--model", tiny_model, "--out", out / f"x.{fmt}"))
    assert line.startswith(f"Error: {out}: the disk is full (") and line.endswith(
        "free some space and run the same command again to resume"), line
    assert _files(out) == []


def test_a_full_disk_when_recording_is_one_line(
    photo: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError of the writer's own (not libvips') goes through the same line; any other
    OSError is not dressed up as a full disk."""
    for code in (errno.ENOSPC, errno.EIO):
        def fail(path: Path, data: bytes, code: int = code) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(records, "atomic_write", fail)
        out = tmp_path / f"out-{code}"
        if code == errno.ENOSPC:
            line = _one_line(_invoke(photo, "--model", tiny_model, "--out", out / "x.png"))
            assert line.startswith(f"Error: {out}: the disk is full ("), line
        else:
            with pytest.raises(OSError, match=os.strerror(errno.EIO)):
                upscale_images([photo], out / "x.png", model=str(tiny_model))


# 4. Resuming by settings: skip only what the same settings made -------------------------

def test_outputs_made_with_other_settings_are_refused_then_redone_with_force(
    photo: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Before: "1 of 1 outputs exist already, skipped", a 1x result kept after asking for 2x."""
    out = tmp_path / "out" / "x.png"
    run = ("--model", tiny_model, "--out", out, "--tile", 48)
    assert _invoke(photo, *run, "--scale", 1).exit_code == 0
    assert _read(out).shape == (30, 50, 3)
    before = out.read_bytes()
    line = _one_line(_invoke(photo, *run))
    assert line == (f"Error: {out}: made with other settings (scale 1, now 2); use --force to "
                    "upscale again, or choose another --out")
    assert out.read_bytes() == before
    result = _invoke(photo, *run, "--force")
    assert result.exit_code == 0, result.output
    assert _read(out).shape == (60, 100, 3)
    assert "1 of 1 outputs written; " in result.output
    written = out.stat().st_mtime_ns
    result = _invoke(photo, *run)  # same settings: done
    assert result.exit_code == 0, result.output
    assert "0 of 1 outputs written, 1 skipped (done with these settings)" in result.output
    assert out.stat().st_mtime_ns == written
    # Every setting that decides the pixels counts; the input's time alone does not.
    os.utime(photo, ns=(1, 1))
    assert _invoke(photo, *run).exit_code == 0 and out.stat().st_mtime_ns == written
    changes = {
        ("--tile", 64): "tile 48, now 64",
        ("--dtype", "bfloat16"): "dtype auto, now bfloat16",
    }
    for (option, value), change in changes.items():
        args = [photo, "--model", tiny_model, "--out", out, "--tile", 48, option, value]
        assert f"({change})" in _one_line(_invoke(*args))
    save_srvgg(tiny_model, 2, seed=1)  # the same file name, other weights
    assert "(the weights file's content changed)" in _one_line(_invoke(photo, *run))
    _save(astronaut(30, 50, top=100), photo)  # another picture under the same name
    assert f"input {photo} changed" in _one_line(_invoke(photo, *run))
    assert out.read_bytes() != before and out.stat().st_mtime_ns == written


def test_an_output_without_a_record_is_refused_unless_forced(
    photo: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """An older hypermosaic's output, or some other file: its settings are unknown."""
    out = tmp_path / "x.png"
    out.write_bytes(b"someone's file")
    run = (photo, "--model", tiny_model, "--out", out, "--tile", 48)
    line = _one_line(_invoke(*run))
    assert line == (f"Error: {out}: exists, with no record of the settings that made it "
                    "(written by an older hypermosaic, or another file); use --force to upscale "
                    "again, or choose another --out")
    assert out.read_bytes() == b"someone's file"
    assert _invoke(*run, "--force").exit_code == 0
    upscaler = esrgan.load_upscaler(tiny_model, device="cpu", dtype="auto")
    np.testing.assert_array_equal(_read(out), upscale_array(upscaler, _read(photo), tile=48))
    assert records.read_record(out)["settings"]["tile"] == 48
    assert _files(tmp_path) == sorted([".x.png.upscale.json", "in.png", "tiny.safetensors",
                                       "x.png"])


# 5. Progress: converting weights gets a bar, the summary counts the bar's unit ----------

def test_converting_registry_weights_has_a_bar_and_a_note(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: silence while the weights converted, then the tiles bar."""
    monkeypatch.setenv("HYPERMOSAIC_CACHE", str(tmp_path / "cache"))
    seen: list[Progress] = []
    upscale_images([photo], tmp_path / "a.png", model="fast", progress=seen.append)
    weights = [event for event in seen if event.unit == "weights"]
    assert weights[0].note == ("converting realesr-animevideov3-x4 weights from ncnn, once "
                               "(they are cached for later runs)")
    assert [e.done for e in weights] == list(range(54)) and {e.total for e in weights} == {53}
    assert all(event.note is None for event in weights[1:])
    assert [event.unit for event in seen] == ["weights"] * 54 + ["tiles"] * 2
    seen.clear()  # cached: no weights bar the second time
    upscale_images([photo], tmp_path / "b.png", model="fast", progress=seen.append)
    assert [event.unit for event in seen] == ["tiles"] * 2


def test_the_summary_counts_outputs_and_tiles(photo: Path, tiny_model: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    other = _save(astronaut(96, 96, left=200), tmp_path / "other.png")
    args = ("--model", tiny_model, "--out", out, "--tile", 64, "--format", "png")
    assert _invoke(photo, *args).exit_code == 0
    result = _invoke(photo, other, *args)  # one left to do: in this process
    assert result.exit_code == 0, result.output
    summary = [line for line in result.output.splitlines() if "outputs written" in line]
    assert len(summary) == 1
    assert summary[0].startswith("1 of 2 outputs written, 1 skipped (done with these "
                                 "settings); 4 tiles in "), summary  # 96 px: 2 x 2 tiles
    assert summary[0].endswith(" tiles/s")
    assert result.output.strip().splitlines()[-1] == str(out / "other.png")


# 6. --device -----------------------------------------------------------------------------

@pytest.mark.usefixtures("no_work")
def test_a_bad_or_absent_device_is_refused_before_any_work(
    photo: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out" / "x.png"
    result = _invoke(photo, "--model", tiny_model, "--out", out, "--device", "gpu0")
    assert result.exit_code == 2
    assert ("Invalid value for '--device': unknown device 'gpu0' (use auto, cpu, cuda, cuda:N "
            "or mps)") in result.output
    with pytest.raises(InputError, match=r"^--device: unknown device 'gpu0'"):
        upscale_images([photo], out, model=str(tiny_model), device="gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _one_line(_invoke(photo, "--model", tiny_model, "--out", out, "--device", "cuda:1"))
    assert line == "Error: --device: 'cuda:1' but CUDA is not available here"
    assert not out.parent.exists()


def test_device_cpu_runs_on_the_cpu(photo: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    result = _invoke(photo, "--model", tiny_model, "--out", out, "--device", "cpu",
                     "--dtype", "float32")
    assert result.exit_code == 0, result.output
    upscaler = esrgan.load_upscaler(tiny_model, device="cpu", dtype="float32")
    np.testing.assert_array_equal(_read(out), upscale_array(upscaler, _read(photo)))


# 7. Ctrl-C ------------------------------------------------------------------------------

def _interrupt_after(tiles: int):
    """A progress callback that presses Ctrl-C once ``tiles`` tiles are done."""

    def on_progress(event: Progress) -> None:
        if event.unit == "tiles" and event.done >= tiles:
            raise KeyboardInterrupt

    return on_progress


def test_ctrl_c_keeps_finished_outputs_and_leaves_no_partial_file(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Before: a bare KeyboardInterrupt (the CLI said "nothing was written")."""
    images = tmp_path / "images"
    images.mkdir()
    first = _save(astronaut(96, 96), images / "a.png")
    _save(astronaut(96, 96, left=100), images / "b.png")
    out = tmp_path / "out"
    options = {"model": str(tiny_model), "tile": 64, "fmt": "png"}
    upscale_images([first], out, **options)  # a.png is finished
    message = f"finished outputs are kept in {out}; run the same command again to resume"
    with pytest.raises(Interrupted, match=f"^{message}$"):
        upscale_images([images], out, progress=_interrupt_after(2), **options)
    assert _files(out) == [".a.png.upscale.json", "a.png"]  # b.png: no output, no temporary
    result = upscale_images([images], out, **options)
    assert [p.name for p in result.written] == ["b.png"] and result.skipped == 1
    with pytest.raises(InputError, match=(  # the first output is named, the others counted
            rf"^{out / 'a.png'}: made with other settings \(tile 64, now 96\) \(and 1 more\); "
            "use --force")):
        upscale_images([images], out, **{**options, "tile": 96})


def test_ctrl_c_in_the_cli_is_one_line_and_status_130(
    photo: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "upscale_bands", interrupted)
    out = tmp_path / "out"
    line = _one_line(_invoke(photo, "--model", tiny_model, "--out", out / "x.tif"), 130)
    assert line == (f"interrupted: finished outputs are kept in {out}; run the same command "
                    "again to resume")
    assert _files(out) == []


@pytest.mark.slow
def test_a_real_ctrl_c_stops_the_upscale_with_one_line(tiny_model: Path,
                                                       tmp_path: Path) -> None:
    """SIGINT to the process group, while libvips pulls tiles from its own threads."""
    src = tmp_path / "big.png"
    pyvips.Image.new_from_array(astronaut(512, 512), interpretation="srgb").replicate(
        4, 4).pngsave(str(src), compression=1)
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "hypermosaic", "upscale", str(src), "--model", str(tiny_model),
         "--tile", "64", "--out", str(out / "big.png")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    for _ in range(600):  # at most 60 s, until the output is being written
        if run.poll() is not None or list(out.glob(".big.png.*.tmp")):
            break
        time.sleep(0.1)
    assert run.poll() is None, run.communicate()
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.rstrip().splitlines()[-1] == (
        f"interrupted: finished outputs are kept in {out}; run the same command again to resume")
    assert _files(out) == []


def test_temporaries_of_a_killed_run_are_swept(photo: Path, tiny_model: Path,
                                               tmp_path: Path) -> None:
    """kill -9 skips every cleanup: the next run in the folder removes what it left."""
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / ".x.png.12345.tmp", out / "..x.png.upscale.json.12345.tmp",
                 out / ".deep.999.dz"]
    for path in leftovers[:2]:
        path.write_bytes(b"partial")
    leftovers[2].mkdir()
    (out / ".other.png.1.tmp").write_bytes(b"not ours")
    _save(astronaut(8, 8), out / "deep.png")
    assert _invoke(photo, "--model", tiny_model, "--out", out / "x.png").exit_code == 0
    assert _invoke(out / "deep.png", "--model", tiny_model, "--out", out / "deep.dzi"
                   ).exit_code == 0
    assert [path for path in leftovers if path.exists()] == []
    assert (out / ".other.png.1.tmp").exists()


def test_records_are_small_json_beside_the_output(photo: Path, tiny_model: Path,
                                                  tmp_path: Path) -> None:
    (job,) = plan_jobs([photo], tmp_path / "x.png", str(tiny_model))
    assert records.record_path(job.dst) == tmp_path / ".x.png.upscale.json"
    upscale_images([photo], job.dst, model=str(tiny_model), tile=48)
    record = records.read_record(job.dst)
    assert record is not None and record["version"] == records.RECORD_VERSION
    assert record["settings"] == {"model": f"weights {_digest(tiny_model)}", "scale": 2.0,
                                  "tile": 48, "overlap": 32, "dtype": "auto"}
    assert record["input"]["size"] == photo.stat().st_size
    assert len(record["input"]["sha256"]) == 64
    records.record_path(job.dst).write_text("{not json")  # damaged: unknown settings
    with pytest.raises(InputError, match="no record of the settings"):
        upscale_images([photo], job.dst, model=str(tiny_model), tile=48)


def _digest(path: Path) -> str:
    from hypermosaic.identity import model_file_digest

    digest = model_file_digest(str(path), "--model")
    assert digest is not None
    return digest
