"""Model identity (`hypermosaic.identity`): names and files checked without torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypermosaic.errors import InputError
from hypermosaic.identity import (
    BICUBIC,
    ESRGAN_MODELS,
    check_device,
    check_dtype,
    check_upscaler,
    file_digest,
    model_file_digest,
)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_devices_any_torch_could_mean_are_accepted(device: str) -> None:
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["gpu0", "cuda:", "cuda:x", "CPU", "", "cuda:0 "])
def test_other_devices_are_refused_naming_the_choices(device: str) -> None:
    with pytest.raises(ValueError) as error:
        check_device(device)
    assert str(error.value) == f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)"


def test_dtypes() -> None:
    assert check_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="unknown dtype 'half' "
                       r"\(use auto, float16, bfloat16, float32\)"):
        check_dtype("half")


def test_upscalers_are_registry_names_or_weights_files(tmp_path: Path) -> None:
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"")
    assert [check_upscaler(name) for name in ESRGAN_MODELS] == list(ESRGAN_MODELS)
    assert check_upscaler(str(weights)) == str(weights)
    assert check_upscaler(BICUBIC, bicubic=True) == BICUBIC
    with pytest.raises(ValueError) as error:
        check_upscaler(BICUBIC)
    assert str(error.value) == ("'bicubic' is neither one of x4plus, anime, fast, nor a "
                                "Real-ESRGAN weights file (.pth, .pt, .ckpt, .safetensors)")
    with pytest.raises(ValueError, match=r"'x8' is neither bicubic, one of x4plus"):
        check_upscaler("x8", bicubic=True)
    with pytest.raises(ValueError, match="no such weights file: .*absent.pth"):
        check_upscaler(str(tmp_path / "absent.pth"))


def test_digests_follow_the_content(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"a" * 3_000_000)
    first = model_file_digest(str(model), "diffusion.model")
    assert first is not None and first.startswith("3000000:")
    model.write_bytes(b"a" * 2_999_999 + b"b")  # the last MiB is read too
    assert model_file_digest(str(model), "diffusion.model") != first
    assert model_file_digest(str(tmp_path), "diffusion.model") is None  # a folder: not hashed
    assert model_file_digest("org/model", "diffusion.model") is None  # a hub id
    assert file_digest(model, "primary.image") != file_digest(Path(__file__), "primary.image")
    with pytest.raises(InputError, match=r"^primary\.image: cannot read .*absent\.png"):
        file_digest(tmp_path / "absent.png", "primary.image")
