"""Model loading: every source of a pipeline gives the same weights, offline; failures are clear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hypermosaic.errors import InputError
from hypermosaic.identity import SCHEDULER_NAMES
from hypermosaic.pipelines.models import (
    SCHEDULERS,
    ModelSource,
    img2img_pipeline,
    load_canvas_pipeline,
    load_pipeline,
    locate_model,
    make_scheduler,
    native_size,
    resolve_device_dtype,
)
from tests.helpers import cache_model
from tests.tiny import (
    save_tiny_single_file,
    tiny_pipeline,
    tiny_tokenizer,
)

torch.set_num_threads(1)

REPO_ID = "hm-test/tiny-sd"
PROMPT = "a turtle made of turtles"


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """Two DDIM steps of the in-memory tiny pipeline: what every loaded copy must reproduce."""
    return _generate(tiny_pipeline())


@pytest.fixture(scope="module")
def scheduler_config(tiny_dir: Path) -> dict:
    """A scheduler config as saved (with ``_class_name``), not the live object's."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.load_config(tiny_dir / "scheduler")






def _generate(pipe) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(7)
    return pipe(
        PROMPT, height=64, width=64, num_inference_steps=2, generator=generator, output_type="np"
    ).images


def test_resolve_device_dtype_auto_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(InputError, match="diffusion.device: 'cuda' but CUDA is not available"):
        resolve_device_dtype("cuda")
    with pytest.raises(InputError, match="diffusion.device: unknown device 'gpu0'"):
        resolve_device_dtype("gpu0")
    with pytest.raises(InputError, match="diffusion.dtype: unknown dtype 'fp8'"):
        resolve_device_dtype("cpu", "fp8")


def test_tokenizer_round_trips_through_save(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    text = "Turtles, all the way down! ünïcode"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert loaded.model_max_length == 77
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.replace(" ", "") == text.lower().replace(" ", "")  # CLIP lowercases


def test_load_from_directory_matches_in_memory(tiny_dir: Path, reference: np.ndarray) -> None:
    pipe = load_pipeline(str(tiny_dir), device="cpu", dtype=torch.float32)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.dtype == torch.float32
    np.testing.assert_array_equal(_generate(pipe), reference)


def test_load_canvas_pipeline_resolves_then_loads(tiny_dir: Path, reference: np.ndarray) -> None:
    """What a canvas worker loads: the same pipeline, ``auto`` or named device and dtype."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_warning()  # as in a fresh worker
    pipe = load_canvas_pipeline(str(tiny_dir), "cpu", "float32")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.device == torch.device("cpu") and pipe.unet.dtype == torch.float32
    assert diffusers_logging.get_verbosity() == diffusers_logging.ERROR  # quiet_libraries ran
    np.testing.assert_array_equal(_generate(pipe), reference)
    with pytest.raises(InputError, match="diffusion.dtype: unknown dtype 'fp8'"):
        load_canvas_pipeline(str(tiny_dir), "cpu", "fp8")
    with pytest.raises(InputError, match="diffusion.device: unknown device 'gpu0'"):
        load_canvas_pipeline(str(tiny_dir), "gpu0", "auto")


def test_load_from_hf_cache_offline(tiny_dir: Path, reference: np.ndarray, hf_cache: Path) -> None:
    cache_model(hf_cache, REPO_ID, tiny_dir)
    pipe = load_pipeline(REPO_ID, device="cpu", dtype=torch.float32)
    np.testing.assert_array_equal(_generate(pipe), reference)


def test_missing_hf_model_names_it_and_how_to_get_it(hf_cache: Path) -> None:
    with pytest.raises(InputError) as error:
        load_pipeline("hm-test/not-downloaded", device="cpu", dtype=torch.float32)
    message = str(error.value)
    assert message.startswith("diffusion.model: 'hm-test/not-downloaded'")
    assert "hf download hm-test/not-downloaded" in message
    assert str(hf_cache) in message


def test_missing_or_unusable_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        load_pipeline(str(tmp_path / "nowhere"), device="cpu", dtype=torch.float32)
    with pytest.raises(InputError, match="no model_index.json"):
        load_pipeline(str(tmp_path), device="cpu", dtype=torch.float32)
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(InputError, match="only .safetensors"):
        load_pipeline(str(pickle), device="cpu", dtype=torch.float32)


def test_single_file_with_local_config(
    tiny_dir: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    checkpoint = save_tiny_single_file(tmp_path / "tiny.safetensors")
    pipe = load_pipeline(str(checkpoint), device="cpu", dtype=torch.float32, config=str(tiny_dir))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    np.testing.assert_array_equal(_generate(pipe), reference)


def test_single_file_with_config_from_hf_cache(
    tiny_dir: Path, reference: np.ndarray, hf_cache: Path, tmp_path: Path
) -> None:
    cache_model(hf_cache, REPO_ID, tiny_dir)
    checkpoint = save_tiny_single_file(tmp_path / "tiny.safetensors")
    pipe = load_pipeline(str(checkpoint), device="cpu", dtype=torch.float32, config=REPO_ID)
    np.testing.assert_array_equal(_generate(pipe), reference)


def test_single_file_without_config_offline_says_what_to_provide(
    hf_cache: Path, tmp_path: Path
) -> None:
    checkpoint = save_tiny_single_file(tmp_path / "tiny.safetensors")
    with pytest.raises(InputError) as error:
        load_pipeline(str(checkpoint), device="cpu", dtype=torch.float32)
    message = str(error.value)
    assert "single-file checkpoint" in message
    assert "set diffusion.config" in message
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message


def test_locate_model_checks_sources_without_torch(
    tiny_dir: Path, hf_cache: Path, tmp_path: Path
) -> None:
    """The build client checks the model before writing anything, without importing torch."""
    code = (
        "import sys; from hypermosaic.pipelines.models import locate_model; "
        f"print(locate_model({str(tiny_dir)!r}).folder); print('torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == [str(tiny_dir), "False"]
    snapshot = cache_model(hf_cache, REPO_ID, tiny_dir) / "snapshots"
    assert locate_model(REPO_ID).folder.parent == snapshot
    checkpoint = save_tiny_single_file(tmp_path / "tiny.safetensors")
    assert locate_model(str(checkpoint), config=REPO_ID) == ModelSource(
        folder=locate_model(REPO_ID).folder, checkpoint=checkpoint
    )
    with pytest.raises(InputError, match="diffusion.config: 'hm-test/absent' is neither"):
        locate_model(str(checkpoint), config="hm-test/absent")
    with pytest.raises(InputError, match="diffusion.config: .*no model_index.json"):
        locate_model(str(checkpoint), config=str(tmp_path))


def test_locate_model_names_the_given_key_and_reads_the_native_size(
    tiny_dir: Path, hf_cache: Path, tmp_path: Path
) -> None:
    assert native_size(locate_model(str(tiny_dir), key="model")) == 64  # 32 latents x 2
    assert native_size(ModelSource(tmp_path)) is None
    with pytest.raises(InputError, match=r"^model: .*nowhere: no such file or directory$"):
        locate_model(str(tmp_path / "nowhere"), key="model")
    with pytest.raises(InputError) as error:
        locate_model("hm-test/absent", key="model")
    message = str(error.value)
    assert message.startswith("model: 'hm-test/absent' is neither")
    assert "point model to a local diffusers directory" in message
    assert "diffusion.model" not in message


def test_schedulers_map_exactly_the_identity_names() -> None:
    """Configs check scheduler names torch-free (`hypermosaic.identity`); each must map here."""
    assert tuple(SCHEDULERS) == SCHEDULER_NAMES


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_make_scheduler(name: str, scheduler_config: dict) -> None:
    scheduler = make_scheduler(name, scheduler_config)
    expected = SCHEDULERS[name][0] or "DDIMScheduler"
    assert type(scheduler).__name__ == expected
    assert scheduler.config.beta_schedule == "scaled_linear"
    live = make_scheduler(name, tiny_pipeline().scheduler)
    assert type(live).__name__ == expected


def test_unknown_scheduler(scheduler_config: dict) -> None:
    with pytest.raises(InputError, match="diffusion.scheduler: unknown scheduler 'dpm_fast'"):
        make_scheduler("dpm_fast", scheduler_config)


def test_scheduler_option_and_img2img_view_share_components(tiny_dir: Path) -> None:
    pipe = load_pipeline(str(tiny_dir), device="cpu", dtype=torch.float32, scheduler="euler")
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    view = img2img_pipeline(pipe)
    assert type(view).__name__ == "StableDiffusionImg2ImgPipeline"
    assert view.unet is pipe.unet and view.vae is pipe.vae
    assert view.text_encoder is pipe.text_encoder
    assert type(view.scheduler).__name__ == "EulerDiscreteScheduler"
