"""The CLIP vision model that turns images into embeddings for image prompts (issue 13).

An image prompt compares a picture's CLIP embeddings with the prompt's token embeddings, so the
vision tower must be the one paired with the Stable Diffusion text encoder (SD 1.x: OpenAI's
ViT-L/14, ``openai/clip-vit-large-patch14``). It is loaded offline, like every other model
here, from a local folder saved by transformers (a ``CLIPVisionModelWithProjection`` or a whole
``CLIPModel``), a Hugging Face id already in the local cache, or a ``.safetensors`` file plus a
config (a folder or a cached id holding its ``config.json``).

API:

- `locate_vision_model(model, config=None) -> VisionSource`: where its files are, checked
  without loading weights or torch, so a missing model fails before any work.
- `load_vision_model(model, device="auto", dtype="auto", config=None) -> VisionModel`: the model
  on ``device`` in ``dtype`` (names as ``diffusion.device`` / ``diffusion.dtype``), eval mode,
  no gradients; hashable string arguments, so a worker can cache it by them.
- `check_projection(vision, text_encoder)`: the image embeddings' width must be that of the
  prompt embeddings they are compared with and written into.
- `pixel_values(images, preprocessing, device)`: CLIP's preprocessing in torch, batched.
- `image_embeddings(vision, images, device, dtype) -> (N, P)`: one pooled embedding per image.
- `image_token_embeddings(vision, images, device, dtype) -> (N, 1 + patches, P)`: every vision
  token through the final layer norm and the projection, as the seed (tim-speed/flexdiffuse,
  ``encode/clip.py``) maps them onto prompt tokens; token 0 is the pooled embedding.

What the user can fix raises `hypermosaic.errors.InputError` with one line naming
``image_prompt.vision_model`` (or ``image_prompt.vision_config``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hypermosaic.errors import InputError
from hypermosaic.pipelines.models import (
    cached_snapshot,
    looks_like_path,
    quiet_libraries,
    resolve_device_dtype,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CONFIG_KEY",
    "DEFAULT_VISION_MODEL",
    "KEY",
    "Preprocessing",
    "VisionModel",
    "VisionSource",
    "check_projection",
    "image_embeddings",
    "image_token_embeddings",
    "load_vision_model",
    "locate_vision_model",
    "pixel_values",
    "read_preprocessing",
]

KEY = "image_prompt.vision_model"
CONFIG_KEY = "image_prompt.vision_config"
DEFAULT_VISION_MODEL = "openai/clip-vit-large-patch14"  # SD 1.x's text encoder is its text half
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's (and OpenCLIP's) pixel statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_TYPES = ("clip", "clip_vision_model")  # a whole CLIPModel, or its vision tower alone
WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
HINT = (
    "download it on a connected machine with `hf download {id}` (`huggingface-cli download "
    "{id}` on older huggingface_hub) and copy the Hugging Face cache here, or point "
    f"{KEY} to a local folder saved by transformers (a CLIPVisionModelWithProjection or a "
    "CLIPModel)"
)


@dataclass(frozen=True)
class Preprocessing:
    """CLIP's image preprocessing: resize the shortest side to ``size`` (bicubic), crop the
    centre ``crop`` square, scale to [0, 1], normalise with ``mean`` and ``std`` per channel."""

    size: int
    crop: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


@dataclass(frozen=True)
class VisionSource:
    """A vision model's files: ``folder`` holds ``config.json`` (and, without ``checkpoint``,
    the weights); ``checkpoint`` is a single ``.safetensors`` file described by that config."""

    folder: Path
    checkpoint: Path | None = None


@dataclass(frozen=True)
class VisionModel:
    """A loaded ``CLIPVisionModelWithProjection`` (eval, no gradients) and its preprocessing."""

    model: Any
    preprocessing: Preprocessing
    name: str

    @property
    def projection_dim(self) -> int:
        """The width of its embeddings."""
        return int(self.model.config.projection_dim)


def locate_vision_model(model: str, config: str | None = None) -> VisionSource:
    """Where the vision model ``model`` (and a single file's ``config``) are, without loading
    weights. Raises `InputError` naming `KEY` (or `CONFIG_KEY`) and how to provide it."""
    path = Path(model).expanduser()
    if path.is_dir():
        return VisionSource(_model_folder(path, KEY, model, weights=True))
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(
                f"{KEY}: {model}: only .safetensors weight files are supported (pickled "
                "weights are not loaded; convert it to safetensors)"
            )
        if config is None:
            raise InputError(
                f"{KEY}: {model} is a single weights file; set {CONFIG_KEY} to the folder (or "
                f"cached Hugging Face id, e.g. {DEFAULT_VISION_MODEL}) holding its config.json"
            )
        return VisionSource(_config_folder(config), checkpoint=path)
    if looks_like_path(model):
        raise InputError(f"{KEY}: {model}: no such file or directory")
    return VisionSource(_model_folder(_snapshot(model, KEY), KEY, model, weights=True))


def load_vision_model(
    model: str, device: str = "auto", dtype: str = "auto", config: str | None = None
) -> VisionModel:
    """The CLIP vision model with projection ``model`` on ``device`` in ``dtype``, offline.

    Sources as `locate_vision_model`; safetensors weights are preferred (a folder with only
    ``pytorch_model.bin`` is read by transformers with ``weights_only=True``). Libraries are
    quietened (`quiet_libraries`). Raises `InputError` for a missing model, bad device or dtype,
    or weights that do not fit the config.
    """
    quiet_libraries()
    torch_device, torch_dtype = resolve_device_dtype(device, dtype)
    source = locate_vision_model(model, config)
    network = _load(source, model, torch_dtype).to(torch_device).eval().requires_grad_(False)
    return VisionModel(network, read_preprocessing(source.folder, network.config.image_size), model)


def read_preprocessing(folder: Path, image_size: int) -> Preprocessing:
    """The sizes, mean and std of ``folder``'s ``preprocessor_config.json`` (either of its
    formats: ``224`` or ``{"shortest_edge": 224}``); CLIP's own for ``image_size`` when it has
    none or it is not CLIP's kind."""
    default = Preprocessing(image_size, image_size)
    try:
        saved = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        size, crop = saved.get("size", image_size), saved.get("crop_size", image_size)
        size = size["shortest_edge"] if isinstance(size, dict) else size
        if isinstance(crop, dict):
            crop = crop["height"] if crop["height"] == crop["width"] else None
        mean = tuple(float(v) for v in saved.get("image_mean", CLIP_MEAN))
        std = tuple(float(v) for v in saved.get("image_std", CLIP_STD))
    except (OSError, ValueError, KeyError, TypeError):
        return default
    if not (isinstance(size, int) and isinstance(crop, int) and 0 < crop <= size):
        return default
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        return default
    return Preprocessing(size, crop, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def check_projection(vision: VisionModel, text_encoder: Any) -> None:
    """`InputError` unless the image embeddings are as wide as the prompt embeddings.

    ``text_encoder`` is the pipeline's text encoder (or its config). Image tokens are compared
    with, and written into, the prompt's hidden states (the text model's last hidden state, what
    the UNet reads), so the width that must match is the text encoder's ``hidden_size``; the
    seed compares them the same way and never applies the text projection. (Every released
    CLIP's text projection is as wide as its hidden state, so this is also its projection dim.)
    """
    config = getattr(text_encoder, "config", text_encoder)
    width = getattr(config, "hidden_size", None)
    if width is None:
        raise InputError(f"{KEY}: the text encoder has no hidden_size to check its width against")
    if vision.projection_dim != int(width):
        raise InputError(
            f"{KEY}: {vision.name} projects images to {vision.projection_dim} values but the "
            f"text encoder's prompt embeddings have {int(width)}; use the CLIP vision model "
            f"paired with this model's text encoder (SD 1.x: {DEFAULT_VISION_MODEL})"
        )


def pixel_values(
    images: torch.Tensor | np.ndarray, preprocessing: Preprocessing, device: torch.device | str
) -> torch.Tensor:
    """CLIP's preprocessing of RGB uint8 ``images`` (N, H, W, 3), batched, on ``device``:
    float32 (N, 3, crop, crop).

    As CLIP's image processor (transformers' PIL backend) does it: the shortest side resized to
    ``size`` (the longest to ``int(size * long / short)``) with antialiased bicubic, one axis at
    a time (width, then height) and rounded to 8 bits after each (as PIL resamples), the centre
    square cropped, scaled to [0, 1] and normalised. Raises `ValueError` for another layout.
    """
    import torch
    from torch.nn.functional import interpolate

    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(
            f"images: expected uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}"
        )
    height, width = x.shape[1:3]
    size, crop = preprocessing.size, preprocessing.crop
    if width <= height:
        new_height, new_width = int(size * height / width), size
    else:
        new_height, new_width = size, int(size * width / height)
    x = x.to(device).permute(0, 3, 1, 2).float()
    for target in ((height, new_width), (new_height, new_width)):
        if target != tuple(x.shape[-2:]):
            x = interpolate(x, size=target, mode="bicubic", antialias=True, align_corners=False)
            x = x.round().clamp(0, 255)
    top, left = (new_height - crop) // 2, (new_width - crop) // 2
    x = x[..., top : top + crop, left : left + crop] / 255
    mean = torch.tensor(preprocessing.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def image_embeddings(
    vision: VisionModel,
    images: torch.Tensor | np.ndarray,
    device: torch.device | str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One CLIP embedding per image (``image_embeds``): RGB uint8 (N, H, W, 3) -> (N, P) in
    ``dtype``, one model call for the batch."""
    return image_token_embeddings(vision, images, device, dtype)[:, 0]


def image_token_embeddings(
    vision: VisionModel,
    images: torch.Tensor | np.ndarray,
    device: torch.device | str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Every vision token's embedding: RGB uint8 (N, H, W, 3) -> (N, 1 + patches, P) in
    ``dtype``, one model call for the batch.

    The last hidden state through the post layer norm and the visual projection, as the seed's
    ``CLIPEncoder.image`` computes it; token 0 (the class token) is `image_embeddings`.
    """
    import torch

    pixels = pixel_values(images, vision.preprocessing, device).to(dtype)
    network = vision.model
    with torch.no_grad():  # not inference_mode: callers may edit the result in place
        hidden = network.vision_model(pixel_values=pixels).last_hidden_state
        tokens = network.visual_projection(network.vision_model.post_layernorm(hidden))
    return tokens.to(dtype)


def _snapshot(repo_id: str, key: str) -> Path:
    """The cached snapshot of ``repo_id`` (`cached_snapshot`), its error worded for a
    transformers model rather than a diffusers pipeline."""
    try:
        return cached_snapshot(repo_id, key)
    except InputError:
        from huggingface_hub import constants

        raise InputError(
            f"{key}: {repo_id!r} is neither a local folder, nor a .safetensors file, nor a model "
            f"in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
            + HINT.format(id=repo_id)
        ) from None


def _model_folder(folder: Path, key: str, name: str, *, weights: bool) -> Path:
    """``folder`` if its ``config.json`` is a CLIP (vision) model's and, with ``weights``, it
    holds weights; else `InputError` naming ``key``."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(
            f"{key}: {name}: not a transformers model folder (no readable config.json)"
        ) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        raise InputError(
            f"{key}: {name}: a {model_type!r} model, not a CLIP vision model (model_type "
            f"{' or '.join(map(repr, MODEL_TYPES))})"
        )
    if weights and not any(any(folder.glob(pattern)) for pattern in WEIGHTS):
        raise InputError(f"{key}: {name}: no weights (*.safetensors) in {folder}")
    return folder


def _config_folder(config: str) -> Path:
    """The folder holding a single file's ``config.json``: local, or a cached Hugging Face id."""
    folder = Path(config).expanduser()
    if folder.is_dir():
        return _model_folder(folder, CONFIG_KEY, config, weights=False)
    if looks_like_path(config):
        raise InputError(f"{CONFIG_KEY}: {config}: no such directory")
    return _model_folder(_snapshot(config, CONFIG_KEY), CONFIG_KEY, config, weights=False)


def _vision_config(folder: Path) -> Any:
    """The ``CLIPVisionConfig`` in ``folder``; for a whole CLIP model its vision half, with the
    model's projection width (a ``CLIPModel`` keeps it at the top level, not in the half)."""
    from transformers import CLIPConfig, CLIPVisionConfig

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "clip":
        whole = CLIPConfig.from_pretrained(folder, local_files_only=True)
        vision: Any = whole.vision_config
        vision.projection_dim = whole.projection_dim
        return vision
    return CLIPVisionConfig.from_pretrained(folder, local_files_only=True)


def _load(source: VisionSource, name: str, dtype: torch.dtype) -> Any:
    """``CLIPVisionModelWithProjection`` from ``source``; `InputError` if weights are missing
    or do not fit the config (never silently random)."""
    from transformers import CLIPVisionModelWithProjection

    loaded: Any  # (model, loading info), as output_loading_info asks
    try:
        config = _vision_config(source.folder)
        if source.checkpoint is None:
            safetensors = any(source.folder.glob("*.safetensors"))
            loaded = CLIPVisionModelWithProjection.from_pretrained(
                source.folder,
                config=config,
                dtype=dtype,
                use_safetensors=True if safetensors else None,
                local_files_only=True,
                output_loading_info=True,
            )
        else:
            from safetensors.torch import load_file

            loaded = CLIPVisionModelWithProjection.from_pretrained(
                None,
                config=config,
                state_dict=load_file(source.checkpoint),
                dtype=dtype,
                local_files_only=True,
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{KEY}: {name}: cannot load it: {first}") from None
    network, info = loaded
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"{KEY}: {name}: not a CLIP vision model with projection (missing "
            f"{', '.join(missing[:3])}{more})"
        )
    return network
