"""A ready Real-ESRGAN model: its device, compute dtype and tile side, and how to load it.

`load_upscaler` returns an `Upscaler`, the callable every tiling routine
(`hypermosaic.pipelines.esrgan.tiled`) works with; `describe_upscaler` answers what the core
must know before any work (scale and default tile) without running a model. Two dtype rules
exist on purpose: the upscale command's own (`resolve_dtype`: bfloat16 on a CPU that has it
natively, for speed) and, for a build's init upscalers (``init``), the diffusion engine's
(`hypermosaic.pipelines.models.resolve_device_dtype`: float32 on any CPU, so a build's tile
inits do not change between machines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hypermosaic.errors import InputError
from hypermosaic.identity import ESRGAN_MODELS, check_dtype
from hypermosaic.pipelines.esrgan.networks import ARCHITECTURES, RRDBNet
from hypermosaic.pipelines.esrgan.weights import (
    WeightsProgress,
    convert_registry_weights,
    load_model,
    model_scale,
    ncnn_model_files,
)
from hypermosaic.pipelines.models import resolve_device_dtype

__all__ = [
    "Upscaler",
    "default_tile",
    "describe_upscaler",
    "load_upscaler",
    "native_bf16",
    "resolve_device",
    "resolve_dtype",
]


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
            out: torch.Tensor = self.model(x).clamp_(0.0, 1.0).to("cpu", torch.float32)
            return out


def resolve_device(device: str | torch.device = "auto", key: str = "--device") -> torch.device:
    """The torch device for ``device``: ``auto`` is CUDA if present, else the CPU (Real-ESRGAN's
    own rule: MPS convolutions do not give the CPU's bytes), any other as
    `resolve_device_dtype` checks it; `InputError` naming ``key`` for an unknown or absent
    one."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved, _ = resolve_device_dtype(str(device))
    except InputError as exc:  # worded for the diffusion config's key
        raise InputError(f"{key}: {str(exc).removeprefix('diffusion.device: ')}") from None
    return resolved


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere oneDNN
    emulates it, no faster than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_dtype(dtype: str, device: torch.device, bf16: bool | None = None) -> torch.dtype:
    """The compute dtype for ``--dtype`` on ``device``; `InputError` naming ``--dtype`` for a
    name not in `hypermosaic.identity.DTYPES`.

    ``auto``: float16 on CUDA (as Real-ESRGAN's own inference), bfloat16 on a CPU that has it
    natively (``bf16``, default `native_bf16`): twice as fast as float32 there and 53-55 dB
    PSNR from it, 0.4 of a uint8 level on average (`benchmarks/bench_upscale.py`); float32
    otherwise. ``float32`` gives the exact path (the ncnn reference test uses it).
    """
    try:
        check_dtype(dtype)
    except ValueError as exc:
        raise InputError(f"--dtype: {exc}") from None
    if dtype != "auto":
        result: torch.dtype = getattr(torch, dtype)
        return result
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (native_bf16() if bf16 is None else bf16):
        return torch.bfloat16
    return torch.float32


def default_tile(name_or_path: str | Path, device: str | torch.device = "auto") -> int:
    """Tile side (input px) for a model on a device: 256 off CUDA, where larger tiles gain
    little; on CUDA, what half the card's memory holds. A weights file is assumed to be the
    heavier RRDBNet."""
    model = ESRGAN_MODELS.get(str(name_or_path))
    per_pixel = (ARCHITECTURES[model.arch][0] if model else RRDBNet).bytes_per_pixel
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if dev.type != "cuda":
        return 256
    total = torch.cuda.get_device_properties(dev).total_memory
    side = int((total / 2 / per_pixel) ** 0.5)
    return max(64, min(2048, side // 32 * 32))


def load_upscaler(
    name: str | Path,
    *,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    tile: int | None = None,
    init: bool = False,
    on_weights: WeightsProgress | None = None,
) -> Upscaler:
    """Load a registry model or weights file onto ``device`` (`resolve_device`).

    The compute dtype is `resolve_dtype`'s for ``dtype``, or with ``init`` (a build's init
    upscalers, on ``diffusion.device`` and ``diffusion.dtype``) `resolve_device_dtype`'s.
    Channels-last memory format, in which x4plus ran about 1.5x faster than in NCHW on CPU
    (`benchmarks/bench_upscale.py`; the fast model about even). ``tile`` defaults to what the
    device can hold (`default_tile`). Registry weights used for the first time are converted
    from ncnn, reported to ``on_weights(done, total)``. Raises `InputError` for an unknown
    device or dtype and for missing or damaged weights.
    """
    if init:
        dev, compute = resolve_device_dtype(str(device), dtype)
    else:
        dev = resolve_device(device)
        compute = resolve_dtype(dtype, dev)
    model = load_model(name, on_weights)
    model = model.to(dev, compute).to(memory_format=torch.channels_last)
    return Upscaler(
        model=model,
        scale=model.scale,
        device=dev,
        dtype=compute,
        tile=tile or default_tile(name, dev),
        name=str(name),
    )


def describe_upscaler(
    name: str | Path,
    device: str | torch.device = "auto",
    on_weights: WeightsProgress | None = None,
) -> tuple[int, int]:
    """``(scale, default tile side on ``device``)`` of a registry model or weights file, its
    weights checked without running it: a registry model's ncnn files must be there, a
    weights file must fit its architecture (`model_scale`, on the meta device). With
    ``on_weights``, a registry model's weights not converted yet are converted now, reported
    to it (``(done, total)`` weight arrays), so that no load later converts them in silence.
    Raises `InputError` for missing or damaged weights and an unknown or absent device."""
    model = ESRGAN_MODELS.get(str(name))
    if model is not None:
        ncnn_model_files(model.ncnn_stem)
        if on_weights is not None:
            convert_registry_weights(str(name), on_weights)
        scale = model.scale
    else:
        scale = model_scale(name)
    return scale, default_tile(name, device)
