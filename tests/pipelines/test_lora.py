"""LoRAs: loaded with the pipeline at their scale (0 changes nothing, fused equals unfused),
checked against the model before any work, and part of a build's fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.cli import cli
from hypermosaic.errors import InputError
from hypermosaic.lora import LoraSetting
from hypermosaic.pipelines.lora import check_loras
from hypermosaic.pipelines.models import load_pipeline, locate_model
from tests.helpers import diffusion_config
from tests.tiny import TEXT_HIDDEN, save_tiny_lora

PROMPT = "a turtle made of turtles"


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lora(tmp_path_factory.mktemp("lora") / "tiny-lora.safetensors")


@pytest.fixture(scope="module")
def wrong_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA for a UNet whose cross-attention is wider: another base model."""
    return save_tiny_lora(tmp_path_factory.mktemp("lora") / "other-model.safetensors",
                          cross_attention_dim=2 * TEXT_HIDDEN)


def _image(tiny_dir: Path, loras: tuple[LoraSetting, ...] = ()) -> np.ndarray:
    pipe = load_pipeline(str(tiny_dir), device="cpu", dtype=torch.float32, lora=loras)
    with torch.no_grad():
        result = pipe(PROMPT, num_inference_steps=2, height=64, width=64, output_type="np",
                      generator=torch.Generator("cpu").manual_seed(3))
    image: np.ndarray = result.images[0]
    return image


@pytest.fixture(scope="module")
def plain(tiny_dir: Path) -> np.ndarray:
    return _image(tiny_dir)


def test_scale_zero_is_byte_identical_to_no_lora(tiny_dir: Path, lora: Path,
                                                 plain: np.ndarray) -> None:
    assert _image(tiny_dir, ((str(lora), 0.0, False),)).tobytes() == plain.tobytes()
    assert _image(tiny_dir, ((str(lora), 0.0, True),)).tobytes() == plain.tobytes()


def test_scale_one_changes_the_image_and_fused_equals_unfused(tiny_dir: Path, lora: Path,
                                                              plain: np.ndarray) -> None:
    live = _image(tiny_dir, ((str(lora), 1.0, False),))
    assert np.abs(live - plain).max() > 0.05
    fused = _image(tiny_dir, ((str(lora), 1.0, True),))
    np.testing.assert_allclose(fused, live, atol=1e-4)


def test_the_text_encoder_part_is_loaded_and_removed_when_fused(tiny_dir: Path,
                                                                lora: Path) -> None:
    def states(loras: tuple[LoraSetting, ...]) -> tuple[torch.Tensor, object]:
        pipe = load_pipeline(str(tiny_dir), device="cpu", dtype=torch.float32, lora=loras)
        ids = pipe.tokenizer(PROMPT, return_tensors="pt").input_ids
        with torch.no_grad():
            return pipe.text_encoder(ids)[0], pipe.text_encoder

    plain, _ = states(())
    live, _ = states(((str(lora), 1.0, False),))
    fused, encoder = states(((str(lora), 1.0, True),))
    assert not torch.allclose(plain, live)
    torch.testing.assert_close(fused, live, atol=1e-4, rtol=1e-4)
    assert not any("lora_" in name for name, _ in encoder.named_parameters())


def test_two_loras_add_up_like_one_at_twice_the_scale(tiny_dir: Path, lora: Path) -> None:
    twice = _image(tiny_dir, ((str(lora), 2.0, False),))
    both = _image(tiny_dir, ((str(lora), 1.0, True), (str(lora), 1.0, False)))
    # float rounding, grown through two steps of a random model (the LoRA moves pixels by 0.6)
    np.testing.assert_allclose(both, twice, atol=1e-2)


def test_a_kohya_lora_gives_the_image_of_the_same_lora_in_diffusers_layout(
    tiny_dir: Path, lora: Path, tmp_path: Path
) -> None:
    """The layout A1111 and kohya's trainer write (``lora_unet_*``, ``lora_te_*``, alphas)."""
    from safetensors.torch import load_file, save_file

    kohya = {}
    for key, value in load_file(lora).items():
        part, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora", 1)
        name = ("lora_unet_" + module if part == "unet" else "lora_te_text_model." + module)
        name = name.replace(".", "_")
        down = "down" in kind or "lora_A" in kind
        kohya[f"{name}.lora_{'down' if down else 'up'}.weight"] = value
        if down:
            kohya[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
    save_file(kohya, tmp_path / "kohya.safetensors")
    theirs = _image(tiny_dir, ((str(tmp_path / "kohya.safetensors"), 1.0, False),))
    assert np.array_equal(theirs, _image(tiny_dir, ((str(lora), 1.0, False),)))


def test_check_accepts_a_fitting_lora_and_names_the_key_of_one_that_does_not(
    tiny_dir: Path, lora: Path, wrong_lora: Path, tmp_path: Path
) -> None:
    source = locate_model(str(tiny_dir))
    check_loras(source, ((str(lora), 0.8, False),))
    with pytest.raises(InputError) as error:
        check_loras(source, ((str(lora), 1.0, False), (str(wrong_lora), 1.0, False)))
    message = str(error.value)
    assert message.startswith(f"diffusion.lora.1.path: {wrong_lora} does not fit the model")
    assert "\n" not in message
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"lora\.0\.path: .*junk.safetensors: not a readable"):
        check_loras(source, ((str(junk), 1.0, False),), key="lora")


def test_the_worker_refuses_a_lora_that_does_not_fit(tiny_dir: Path, wrong_lora: Path) -> None:
    with pytest.raises(InputError, match=r"^diffusion\.lora\.0\.path: .* does not fit"):
        load_pipeline(str(tiny_dir), device="cpu", dtype=torch.float32,
                      lora=((str(wrong_lora), 1.0, False),))


def test_config_paths_are_relative_to_the_file_and_must_be_safetensors(
    tiny_dir: Path, lora: Path, tmp_path: Path
) -> None:
    config = diffusion_config(tiny_dir, tmp_path / "b", diffusion={
        "model": str(tiny_dir), "device": "cpu", "lora": [{"path": str(lora), "scale": 0.5}]})
    assert config.diffusion.lora[0].path == str(lora)
    for entry, message in (({"path": "x.pt"}, "diffusion.lora.0.path: .*x.pt: a LoRA must be "
                            "a .safetensors file"),
                           ({"path": "absent.safetensors"}, "no such file"),
                           ({"path": str(lora), "weight": 1}, "diffusion.lora.0.weight")):
        with pytest.raises(InputError, match=message):
            diffusion_config(tiny_dir, tmp_path / "b", diffusion={
                "model": str(tiny_dir), "lora": [entry]})


def test_a_lora_file_and_scale_are_in_the_fingerprints(tiny_dir: Path, lora: Path,
                                                       tmp_path: Path) -> None:
    def prints(loras: list[dict]) -> dict[str, str]:
        return fingerprints(diffusion_config(tiny_dir, tmp_path / "b", diffusion={
            "model": str(tiny_dir), "device": "cpu", "batch_size": 4, "lora": loras}))

    plain = fingerprints(diffusion_config(tiny_dir, tmp_path / "b"))
    assert prints([]) == plain  # builds made before LoRAs existed still resume
    half = prints([{"path": str(lora), "scale": 0.5}])
    assert half != plain
    assert prints([{"path": str(lora), "scale": 1.0}])["0"] != half["0"]
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(lora.read_bytes())
    assert prints([{"path": str(copy), "scale": 0.5}]) == half  # by content, not by path
    save_tiny_lora(copy, seed=2)
    assert prints([{"path": str(copy), "scale": 0.5}]) != half


def test_a_lora_for_another_model_exits_2_before_any_work(tiny_dir: Path, wrong_lora: Path,
                                                           tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'engine = "diffusion"\nsize = 64\ngrid = 2\ndepth = 1\n[primary]\nprompt = "a turtle"\n'
        f'[diffusion]\nmodel = "{tiny_dir}"\ndevice = "cpu"\n'
        f'lora = [{{ path = "{wrong_lora}", scale = 0.8 }}]\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "diffusion.lora.0.path" in lines[0], result.output
    assert str(wrong_lora) in lines[0] and "does not fit the model" in lines[0]
    assert not out.exists()


@pytest.mark.slow  # a canvas command on a worker: about 15 s
def test_a_canvas_checks_its_loras_and_paints_with_them(tiny_dir: Path, lora: Path,
                                                        wrong_lora: Path, tmp_path: Path) -> None:
    """Planning names ``lora.N.path`` of a LoRA that does not fit; a canvas painted by the
    command equals one rendered here with the same LoRA loaded."""
    from PIL import Image

    from hypermosaic.canvas.config import canvas_config_from_dict
    from hypermosaic.canvas.jobs import plan_jobs
    from hypermosaic.canvas.plan import plan_canvas
    from hypermosaic.executor import cpu_count
    from hypermosaic.pipelines.canvas import render_canvas
    from hypermosaic.pipelines.runtime import torch_threads

    raw = {"name": "moss", "steps": 2, "seed": 4, "model": str(tiny_dir), "device": "cpu",
           "grid": {"prompt": [["moss", "stone"]], "tile_height": 32, "tile_width": 32,
                    "tile_row_overlap": 16, "tile_col_overlap": 16},
           "lora": [{"path": "tiny-lora.safetensors", "scale": 0.7}]}
    config = canvas_config_from_dict(raw, base=lora.parent, source="c.toml")
    assert config.lora[0].path == str(lora)
    wrong = config.model_copy(update={"lora": [*config.lora, *canvas_config_from_dict(
        {**raw, "lora": [{"path": str(wrong_lora)}]}, base=tmp_path, source="c.toml").lora]})
    with pytest.raises(InputError, match=r"^c\.toml: lora\.1\.path: .* does not fit the model"):
        plan_jobs([wrong])
    toml = tmp_path / "moss.toml"
    toml.write_text(
        f'name = "moss"\nsteps = 2\nseed = 4\nmodel = "{tiny_dir}"\ndevice = "cpu"\n'
        f'lora = [{{ path = "{lora}", scale = 0.7 }}]\n[grid]\nprompt = [["moss", "stone"]]\n'
        "tile_height = 32\ntile_width = 32\ntile_row_overlap = 16\ntile_col_overlap = 16\n")
    result = CliRunner().invoke(cli, ["canvas", str(toml), "--out", str(tmp_path / "out"),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    painted = np.asarray(Image.open(tmp_path / "out" / "moss-4.png"))
    pipe = load_pipeline(str(tiny_dir), device="cpu", dtype=torch.float32,
                         lora=((str(lora), 0.7, False),))
    with torch_threads(cpu_count()):  # the worker's: float sums follow the thread count
        assert np.array_equal(painted, render_canvas(pipe, plan_canvas(config), None))
        assert not np.array_equal(painted, render_canvas(load_pipeline(
            str(tiny_dir), device="cpu", dtype=torch.float32), plan_canvas(config), None))
