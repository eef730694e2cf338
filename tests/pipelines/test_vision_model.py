"""The CLIP vision model of image prompts: every source loads the same weights offline, batches
give what single images give, preprocessing is CLIP's, and what the user can fix fails clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hypermosaic.errors import InputError
from hypermosaic.pipelines.image_prompt.vision import (
    CONFIG_KEY,
    KEY,
    Preprocessing,
    VisionModel,
    VisionSource,
    check_projection,
    image_embeddings,
    image_token_embeddings,
    load_vision_model,
    locate_vision_model,
    pixel_values,
    read_preprocessing,
)
from tests.helpers import cache_model
from tests.tiny import TEXT_HIDDEN, tiny_vision_model

REPO_ID = "hm-test/tiny-clip-vision"
SIZE, CROP = 36, 32  # a saved preprocessor that resizes past the crop, as CLIP's own may


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One torch thread (conftest's `one_torch_thread`) for every test here."""


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny vision model as transformers saves it, with a CLIP preprocessor config."""
    from transformers import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("vision") / "tiny-clip-vision"
    tiny_vision_model().save_pretrained(folder)
    CLIPImageProcessorPil(
        size={"shortest_edge": SIZE}, crop_size={"height": CROP, "width": CROP}
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four RGB uint8 45x61 images: not square, so both the resize and the crop act."""
    rng = np.random.default_rng(13)
    return rng.integers(0, 256, (4, 45, 61, 3), dtype=np.uint8)






def _embed(vision: VisionModel, images: np.ndarray) -> torch.Tensor:
    return image_embeddings(vision, images, "cpu", torch.float32)


def _text_config(hidden: int = TEXT_HIDDEN, projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=1, vocab_size=99, projection_dim=projection or hidden)


def test_every_source_gives_identical_embeddings(
    vision_dir: Path, images: np.ndarray, hf_cache: Path, tmp_path: Path
) -> None:
    """A folder, a cached Hugging Face id, and a .safetensors file with a folder's or a cached
    id's config: the same weights, preprocessing and embeddings."""
    cache_model(hf_cache, REPO_ID, vision_dir)
    single = shutil.copy(vision_dir / "model.safetensors", tmp_path / "vision.safetensors")
    folder = load_vision_model(str(vision_dir), "cpu", "float32")
    assert folder.preprocessing == Preprocessing(SIZE, CROP)
    assert folder.projection_dim == TEXT_HIDDEN
    reference = _embed(folder, images)
    assert reference.shape == (4, TEXT_HIDDEN) and reference.dtype == torch.float32
    for model, config in ((REPO_ID, None), (str(single), str(vision_dir)), (str(single), REPO_ID)):
        vision = load_vision_model(model, "cpu", "float32", config=config)
        assert vision.preprocessing == folder.preprocessing
        assert torch.equal(_embed(vision, images), reference), (model, config)


def test_whole_clip_model_gives_its_vision_half(
    vision_dir: Path, images: np.ndarray, tmp_path: Path
) -> None:
    """A saved ``CLIPModel`` (like ``openai/clip-vit-large-patch14``) loads as its vision tower
    and projection, with the model's projection width (kept at the top of its config)."""
    from transformers import CLIPConfig, CLIPModel

    vision_half = tiny_vision_model()
    vision_config = vision_half.config.to_dict()
    del vision_config["projection_dim"]  # a CLIPModel's vision half defaults to 512
    whole = CLIPModel(CLIPConfig(text_config=_text_config().to_dict(),
                                 vision_config=vision_config, projection_dim=TEXT_HIDDEN))
    whole.vision_model.load_state_dict(vision_half.vision_model.state_dict())
    whole.visual_projection.load_state_dict(vision_half.visual_projection.state_dict())
    whole.save_pretrained(tmp_path / "clip")
    shutil.copy(vision_dir / "preprocessor_config.json", tmp_path / "clip")
    vision = load_vision_model(str(tmp_path / "clip"), "cpu", "float32")
    assert vision.projection_dim == TEXT_HIDDEN
    reference = load_vision_model(str(vision_dir), "cpu", "float32")
    assert torch.equal(_embed(vision, images), _embed(reference, images))


def test_batched_equals_one_at_a_time(vision_dir: Path, images: np.ndarray) -> None:
    vision = load_vision_model(str(vision_dir), "cpu", "float32")
    batched = _embed(vision, images)
    single = torch.cat([_embed(vision, images[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert torch.equal(_embed(vision, images), batched)  # deterministic
    tokens = image_token_embeddings(vision, torch.from_numpy(images), "cpu", torch.float32)
    one = torch.cat([image_token_embeddings(vision, images[i : i + 1], "cpu", torch.float32)
                     for i in range(len(images))])
    torch.testing.assert_close(tokens, one, atol=1e-5, rtol=0)


def test_token_embeddings_are_the_seeds_and_token_zero_is_clips(
    vision_dir: Path, images: np.ndarray
) -> None:
    """(N, 1 + patches, P); the class token is transformers' own ``image_embeds``."""
    vision = load_vision_model(str(vision_dir), "cpu", "float32")
    tokens = image_token_embeddings(vision, images, "cpu", torch.float32)
    assert tokens.shape == (4, 1 + (CROP // 8) ** 2, TEXT_HIDDEN)
    assert torch.equal(tokens[:, 0], _embed(vision, images))
    with torch.no_grad():
        ours = vision.model(pixel_values=pixel_values(images, vision.preprocessing, "cpu"))
    torch.testing.assert_close(tokens[:, 0], ours.image_embeds, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("height", "width", "size", "crop"),
    [(45, 61, 32, 32), (61, 45, 36, 32), (20, 27, 224, 224), (300, 200, 224, 224),
     (64, 64, 224, 224)],
)
def test_preprocessing_matches_clip_image_processor(
    height: int, width: int, size: int, crop: int
) -> None:
    """Within two 8-bit levels (nearly all equal) of transformers' CLIP image processor (PIL
    backend), resizing up and down."""
    from transformers import CLIPImageProcessorPil

    rng = np.random.default_rng(height * width)
    batch = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": crop, "width": crop}
    )
    expected = torch.from_numpy(
        np.asarray(processor(images=list(batch), return_tensors="np")["pixel_values"])
    )
    ours = pixel_values(batch, Preprocessing(size, crop), "cpu")
    assert ours.shape == expected.shape == (2, 3, crop, crop) and ours.dtype == torch.float32
    difference = (ours - expected).abs()
    assert difference.max() <= 2.01 / 255 / min(Preprocessing(size, crop).std)  # PIL: fixed point
    assert (difference < 1e-5).float().mean() > 0.99


def test_read_preprocessing_formats(tmp_path: Path) -> None:
    assert read_preprocessing(tmp_path, 224) == Preprocessing(224, 224)
    saved = tmp_path / "preprocessor_config.json"
    saved.write_text(json.dumps({"size": 224, "crop_size": 224}))  # the older format
    assert read_preprocessing(tmp_path, 32) == Preprocessing(224, 224)
    saved.write_text(json.dumps({"size": {"shortest_edge": 256}, "crop_size": {"height": 224,
                                 "width": 224}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    assert read_preprocessing(tmp_path, 32) == Preprocessing(256, 224, (0.5,) * 3, (0.5,) * 3)
    saved.write_text("{not json")
    assert read_preprocessing(tmp_path, 32) == Preprocessing(32, 32)


def test_dtype_and_bad_images(vision_dir: Path, images: np.ndarray) -> None:
    vision = load_vision_model(str(vision_dir), "cpu", "bfloat16")
    assert vision.model.dtype == torch.bfloat16
    assert image_embeddings(vision, images, "cpu", torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"images: expected uint8 \(N, H, W, 3\)"):
        pixel_values(images[0], vision.preprocessing, "cpu")
    with pytest.raises(ValueError, match="torch.float32"):
        pixel_values(torch.zeros(1, 8, 8, 3), vision.preprocessing, "cpu")


def test_missing_model_is_one_clear_line(hf_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        load_vision_model("hm-test/no-clip", "cpu", "float32")
    assert str(error.value) == (
        f"{KEY}: 'hm-test/no-clip' is neither a local folder, nor a .safetensors file, nor a "
        f"model in the local Hugging Face cache ({hf_cache}); download it on a connected "
        "machine with `hf download hm-test/no-clip` (`huggingface-cli download hm-test/no-clip` "
        "on older huggingface_hub) and copy the Hugging Face cache here, or point "
        f"{KEY} to a local folder saved by transformers (a CLIPVisionModelWithProjection or a "
        "CLIPModel)"
    )
    with pytest.raises(InputError, match=rf"^{CONFIG_KEY}: 'hm-test/no-config' is neither"):
        (tmp_path / "vision.safetensors").write_bytes(b"")
        locate_vision_model(str(tmp_path / "vision.safetensors"), "hm-test/no-config")


def test_unusable_sources_fail_before_loading(vision_dir: Path, tmp_path: Path) -> None:
    """Each names the key and says what is wrong, in one line, without loading weights."""
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    assert locate_vision_model(str(vision_dir)) == VisionSource(vision_dir)
    (tmp_path / "model.bin").write_bytes(b"pickle")
    (tmp_path / "single.safetensors").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "text"
    CLIPTextModel(_text_config()).save_pretrained(text)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(vision_dir / "config.json", no_weights)
    cases = [
        ((str(tmp_path / "nope"),), f"{KEY}: {tmp_path / 'nope'}: no such file or directory"),
        ((str(tmp_path / "model.bin"),), f"{KEY}: {tmp_path / 'model.bin'}: only .safetensors"),
        ((str(tmp_path / "single.safetensors"),), f"set {CONFIG_KEY} to the folder"),
        ((str(tmp_path / "single.safetensors"), "./nope"), f"{CONFIG_KEY}: ./nope: no such"),
        ((str(empty),), f"{KEY}: {empty}: not a transformers model folder"),
        ((str(text),), f"{KEY}: {text}: a 'clip_text_model' model, not a CLIP vision model"),
        ((str(no_weights),), f"{KEY}: {no_weights}: no weights"),
    ]
    for arguments, start in cases:
        with pytest.raises(InputError) as error:
            locate_vision_model(*arguments)
        assert start in str(error.value) and "\n" not in str(error.value), arguments
    # weights that are not this config's: missing ones, or the wrong projection width
    save_file({"weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(InputError, match=rf"^{KEY}: .*: not a CLIP vision model with projection"):
        load_vision_model(str(tmp_path / "other.safetensors"), "cpu", "float32",
                          config=str(vision_dir))
    narrow = tmp_path / "narrow.safetensors"
    save_file(tiny_vision_model(projection_dim=16).state_dict(), narrow)
    with pytest.raises(InputError, match=rf"^{KEY}: .*narrow.safetensors: cannot load it"):
        load_vision_model(str(narrow), "cpu", "float32", config=str(vision_dir))


def test_projection_must_match_the_text_encoder(vision_dir: Path, tmp_path: Path) -> None:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    vision = load_vision_model(str(vision_dir), "cpu", "float32")
    check_projection(vision, CLIPTextModel(_text_config()))
    check_projection(vision, CLIPTextModelWithProjection(_text_config()))
    check_projection(vision, _text_config())
    tiny_vision_model(projection_dim=16).save_pretrained(tmp_path / "narrow")
    narrow = load_vision_model(str(tmp_path / "narrow"), "cpu", "float32")
    with pytest.raises(InputError) as error:
        check_projection(narrow, CLIPTextModel(_text_config()))
    assert str(error.value).startswith(
        f"{KEY}: {tmp_path / 'narrow'} projects images to 16 values but the text encoder's "
        f"prompt embeddings have {TEXT_HIDDEN}; "
    )
    with pytest.raises(InputError, match="projects images to 32 values but .* have 48"):
        check_projection(vision, _text_config(hidden=48))
