"""`hypermosaic upscale --refine`: the plan of bands, the settings' checks, the command, resume
after a kill and memory that does not grow with the image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips
from click.testing import CliRunner

from hypermosaic import registry
from hypermosaic.cli import cli
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.upscale import refine_config, upscale_images
from hypermosaic.upscale.detail import work_folder
from hypermosaic.upscale.record import read_record
from hypermosaic.upscale.strips import plan_refine
from tests.helpers import astronaut, save_srvgg

pytestmark = pytest.mark.usefixtures("hypermosaic_cache", "one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    pyvips.Image.new_from_array(astronaut(60, 50), interpretation="srgb").write_to_file(
        str(path))
    return path


def test_bands_cover_the_image_once_and_hold_what_they_share() -> None:
    refine = refine_config({"prompt": "p", "model": "m"})
    assert refine is not None
    plan = plan_refine(300, 170, 8, 64, refine)  # windows of 8 latents, overlapping by 4
    assert plan.latent_size == (38, 22)
    emitted = [row for band in plan.bands for row in range(*band.emit)]
    assert emitted == list(range(300))
    for before, band in zip(plan.bands, plan.bands[1:], strict=False):
        assert band.hold == before.bottom - band.top > 0
        assert 0 < band.fade <= band.emit[1] - band.emit[0]
    assert plan.bands[0].hold == 0 and plan.bands[-1].bottom == 38
    assert [r for left, right in plan.bands[0].columns for r in (left, right)][-1] == 22


def test_a_grid_gives_each_window_its_cell_prompt(tmp_path: Path) -> None:
    assert refine_config({"prompt": None, "strength": None}) is None  # no pass asked for
    toml = tmp_path / "grid.toml"
    toml.write_text('[refine]\nmodel = "m"\ngrid = [["sky", "cloud"], ["sea", "boat"]]\n')
    config = refine_config({}, config=toml)
    assert config is not None
    plan = plan_refine(128, 128, 8, 64, config)
    assert plan.bands[0].prompts[0] == "sky" and plan.bands[0].prompts[-1] == "cloud"
    assert plan.bands[-1].prompts == ("sea", "boat", "boat")  # a centre on the line: right


@pytest.mark.parametrize(("options", "named"), [
    (["--refine-strength", "1.5"], "--refine-strength"),
    (["--refine-strength", "0"], "--refine-strength"),
    (["--refine-steps", "0"], "--refine-steps"),
])
def test_bad_refine_options_exit_2_naming_the_option(tiny: Path, photo: Path, tmp_path: Path,
                                                     options: list[str], named: str) -> None:
    result = CliRunner().invoke(cli, ["upscale", str(photo), "--out", str(tmp_path / "o.png"),
                                      "--refine", "a house", "--refine-model", str(tiny),
                                      *options])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.output
    assert not (tmp_path / "o.png").exists()


def test_bad_refine_config_and_model_exit_2(photo: Path, tmp_path: Path) -> None:
    config = tmp_path / "refine.toml"
    config.write_text('[refine]\nprompt = "x"\nmodel = "m"\nstrength = 2.0\n')
    out = str(tmp_path / "o.png")
    for args, named in ((["--refine-config", str(config)], "refine.strength"),
                        (["--refine", "x"], "--refine-model"),
                        (["--refine", "x", "--refine-model", str(tmp_path / "none")],
                         "refine.model"),
                        (["--refine-strength", "0.3"], "--refine-strength")):
        result = CliRunner().invoke(cli, ["upscale", str(photo), "--out", out, *args])
        assert result.exit_code == 2, result.output
        assert named in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(InputError, match="--workers"):
        upscale_images([photo], out, refine=refine_config({"prompt": "x", "model": "m"}),
                       workers=2)


def _run(photo: Path, out: Path, tiny: Path, esrgan: Path, **extra: object) -> Path:
    refine = refine_config({"prompt": "a house", "model": str(tiny), "steps": 2,
                            "strength": 0.5, **extra})
    upscale_images([photo], out, model=str(esrgan), device="cpu", dtype="float32",
                   refine=refine)
    return out


def test_resume_after_a_kill_gives_the_same_bytes(tiny: Path, photo: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    esrgan = save_srvgg(tmp_path / "x2.safetensors", 2)
    whole = _run(photo, tmp_path / "whole" / "out.png", tiny, esrgan)
    assert not work_folder(whole).exists() and read_record(whole) is not None
    real, calls = registry.refine_band, []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    out = tmp_path / "resumed" / "out.png"
    monkeypatch.setattr(registry, "refine_band", killed_after_one)
    with pytest.raises(Interrupted):
        _run(photo, out, tiny, esrgan)
    assert not out.exists()
    kept = sorted(p.name for p in work_folder(out).iterdir())
    assert kept == ["band-00000.latents.npy", "band-00000.pixels.npy", "enlarged.tif",
                    "work.json"]
    monkeypatch.setattr(registry, "refine_band", real)
    _run(photo, out, tiny, esrgan)
    assert out.read_bytes() == whole.read_bytes()
    assert pyvips.Image.new_from_file(str(out)).height == 120
    with pytest.raises(InputError, match="detail pass"):  # the record knows the pass
        upscale_images([photo], out, model=str(esrgan), device="cpu", dtype="float32")


@pytest.mark.slow
def test_a_controlnet_at_scale_0_is_none_and_is_in_the_record(tiny: Path, photo: Path,
                                                               tmp_path: Path) -> None:
    """ControlNet Tile at scale 0 gives the bytes of no ControlNet; at scale 1 it changes them,
    and an output made with another ControlNet setting is refused (its record knows)."""
    from tests.tiny import save_tiny_controlnet

    esrgan = save_srvgg(tmp_path / "x2.safetensors", 2)
    control = str(save_tiny_controlnet(tmp_path / "controlnet"))
    plain = _run(photo, tmp_path / "plain" / "out.png", tiny, esrgan).read_bytes()
    zero = _run(photo, tmp_path / "zero" / "out.png", tiny, esrgan,
                **{"controlnet.model": control, "controlnet.scale": 0.0})
    assert zero.read_bytes() == plain
    one = _run(photo, tmp_path / "one" / "out.png", tiny, esrgan,
               **{"controlnet.model": control})
    assert one.read_bytes() != plain
    with pytest.raises(InputError, match="detail pass"):
        _run(photo, zero, tiny, esrgan, **{"controlnet.model": control})


def test_a_controlnet_of_another_model_exits_2_before_any_work(tiny: Path, photo: Path,
                                                               tmp_path: Path) -> None:
    from tests.tiny import save_tiny_controlnet

    other = save_tiny_controlnet(tmp_path / "other", cross_attention_dim=48)
    out = tmp_path / "o.png"
    for args in (["--refine", "a house", "--refine-model", str(tiny), "--refine-controlnet",
                  str(other)],
                 ["--refine-config", str(_config(tmp_path, tiny, "other"))]):
        result = CliRunner().invoke(cli, ["upscale", str(photo), "--out", str(out), *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "refine.controlnet.model" in lines[0], result.output
        assert "cross_attention_dim" in lines[0]
        assert not out.exists() and not work_folder(out).exists()
    result = CliRunner().invoke(cli, ["upscale", str(photo), "--out", str(out), "--refine",
                                      "x", "--refine-model", str(tiny), "--refine-controlnet",
                                      str(other), "--refine-controlnet-scale", "5"])
    assert result.exit_code == 2 and "--refine-controlnet-scale" in result.output


def _config(folder: Path, tiny: Path, controlnet: str) -> Path:
    """A ``[refine]`` file with a ControlNet given relative to the file's folder."""
    path = folder / "refine.toml"
    path.write_text(f'[refine]\nprompt = "a house"\nmodel = "{tiny}"\n'
                    f'controlnet = {{ model = "{controlnet}", scale = 0.5 }}\n')
    return path


_RSS_CHILD = """
import sys, resource
from pathlib import Path
import numpy as np, pyvips, torch
torch.set_num_threads(1)
from hypermosaic.upscale import refine_config, upscale_images
tiny, esrgan, folder = map(Path, sys.argv[1:4])
height = int(sys.argv[4])
refine = refine_config({"prompt": "a house", "model": str(tiny), "steps": 1, "strength": 1.0,
                        "guidance": 1.0, "batch_size": 16})
src = folder / f"in{height}.png"
pixels = (np.random.default_rng(0).random((height, 128, 3)) * 255).astype(np.uint8)
pyvips.Image.new_from_array(pixels, interpretation="srgb").write_to_file(str(src))
upscale_images([src], folder / f"out{height}.tif", model=str(esrgan), device="cpu",
               dtype="float32", refine=refine)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_rss_is_flat_as_the_image_grows(tiny: Path, tmp_path: Path) -> None:
    """Refining a 3072 x 256 output rather than a 128 x 256 one (24 times the rows, ESRGAN x2
    then the tiny model) raises the peak RSS by less than 16 MiB (it rose 44 MiB, and 114 MiB
    at twice the width, before glibc's mmap threshold was pinned: see
    `hypermosaic.upscale.detail`). Each size in its own process, both at once."""
    esrgan = save_srvgg(tmp_path / "x2.safetensors", 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = []
    for height in (64, 1536):  # each in its own folder: an output folder is locked
        folder = tmp_path / str(height)
        folder.mkdir()
        runs.append(subprocess.Popen([sys.executable, "-c", _RSS_CHILD, str(tiny), str(esrgan),
                                      str(folder), str(height)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env))
    peaks = []
    for run in runs:
        stdout, stderr = run.communicate()
        assert run.returncode == 0, stderr[-2000:]
        peaks.append(int(stdout.split()[-1]) / 1024)
    small, large = peaks
    assert large - small < 16, f"peak RSS {small:.0f} MiB, then {large:.0f} MiB"
