"""Loading Stable Diffusion pipelines, offline, from wherever the user keeps them.

The one place that turns a ``diffusion.model`` string into a ready diffusers pipeline; the tile
engine (`hypermosaic.pipelines.img2img`) and the canvas (`hypermosaic.pipelines.canvas`) both
use it. The dtype names are the torch-free `hypermosaic.identity.DTYPES` and `SCHEDULERS` maps
exactly its `SCHEDULER_NAMES`, so configs check both without torch.

API:

- `resolve_device_dtype(device="auto", dtype="auto") -> (torch.device, torch.dtype)`:
  ``auto`` means CUDA if present (else MPS, else CPU), float16 on CUDA and float32 elsewhere.
- `locate_model(model, config=None, *, key="diffusion.model") -> ModelSource`: where the
  model's files are, checked without loading anything (and without torch, except for a single
  file without ``config``): call it before writing any output so a missing model fails first.
  ``key`` is the config key its errors name (``model`` for `hypermosaic canvas`).
- `native_size(source) -> int | None`: the model's native image side in pixels, from its
  configs (no weights).
- `load_pipeline(model, *, device, dtype, scheduler="default", config=None, lora=())`: a
  text-to-image pipeline (`StableDiffusionPipeline`, `StableDiffusionXLPipeline`,
  `LatentConsistencyModelPipeline` ..., whichever the model is), on ``device`` in ``dtype``,
  with its LoRAs, progress bars off. ``model`` is a local diffusers directory, a single
  ``.safetensors`` checkpoint, or a Hugging Face id already in the local cache. Never touches
  the network (``local_files_only=True``).
- `load_canvas_pipeline(model, device, dtype)`: `load_pipeline` as a canvas worker does it
  (libraries quietened, ``auto`` resolved), for `hypermosaic.registry`.
- `make_scheduler(name, config)`: a scheduler by name (`SCHEDULERS`: a sampler, optionally
  with Karras, exponential or beta sigmas) from a scheduler or its config.
- `img2img_pipeline(pipe)`: the image-to-image pipeline over the same components, no reloading.

Everything the user can fix (a missing model, a single file without a config) raises
`hypermosaic.errors.InputError` with one line naming ``diffusion.model`` and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypermosaic.errors import InputError
from hypermosaic.identity import DEVICE_HINT, SIGMA_SCHEDULES, check_dtype
from hypermosaic.lora import LoraSetting

if TYPE_CHECKING:
    import torch

__all__ = [
    "SCHEDULERS",
    "ModelSource",
    "cached_snapshot",
    "img2img_pipeline",
    "is_out_of_memory",
    "load_canvas_pipeline",
    "load_pipeline",
    "load_worker_pipeline",
    "locate_model",
    "looks_like_path",
    "make_scheduler",
    "native_size",
    "quiet_libraries",
    "read_json_object",
    "resolve_device_dtype",
]

# sampler name -> (diffusers class name, overrides); those in SIGMA_SAMPLERS also come with
# each of `hypermosaic.identity.SIGMA_SCHEDULES` (``dpm++2m_karras``: use_karras_sigmas)
SAMPLERS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "default": (None, {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "dpm++2m_sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
}
SIGMA_SAMPLERS = ("euler", "dpm++2m", "dpm++2m_sde", "lms", "heun", "dpm2", "dpm2_ancestral")
SCHEDULERS: dict[str, tuple[str | None, dict[str, Any]]] = {
    **SAMPLERS,
    **{
        f"{sampler}_{spacing}": (
            SAMPLERS[sampler][0],
            {**SAMPLERS[sampler][1],
             **{f"use_{each}_sigmas": each == spacing for each in SIGMA_SCHEDULES}},
        )
        for sampler in SIGMA_SAMPLERS
        for spacing in SIGMA_SCHEDULES
    },
}
"""Scheduler name (`hypermosaic.identity.SCHEDULER_NAMES`) -> (diffusers class, overrides)."""

DOWNLOAD_HINT = (
    "download it on a connected machine with `hf download {id}` (`huggingface-cli download {id}` "
    "on older huggingface_hub) and copy the Hugging Face cache here, or point {key} to "
    "a local diffusers directory"
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA's, or another backend's
    RuntimeError saying so), which a smaller batch or tile can avoid."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc)


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' progress bars and warnings in this process: a
    worker's (or the CLI's) own progress display would be broken by them; errors still raise."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.set_verbosity_error()


def resolve_device_dtype(
    device: str = "auto", dtype: str = "auto"
) -> tuple[torch.device, torch.dtype]:
    """The torch device and dtype for ``diffusion.device`` / ``diffusion.dtype``.

    ``auto`` device: CUDA if available, else MPS, else CPU. ``auto`` dtype: float16 on CUDA
    (half the memory, tensor cores), float32 elsewhere (CPU half precision is slow and lossy).
    Raises `InputError` for an unknown name or a device that is not there.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        torch_device = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"diffusion.device: unknown device {device!r} ({DEVICE_HINT})") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"diffusion.device: {device!r} but CUDA is not available here")
    if torch_device.type == "cuda" and (torch_device.index or 0) >= torch.cuda.device_count():
        raise InputError(
            f"diffusion.device: {device!r} but only {torch.cuda.device_count()} CUDA device(s)"
        )
    try:
        check_dtype(dtype)
    except ValueError as exc:
        raise InputError(f"diffusion.dtype: {exc}") from None
    if dtype == "auto":
        return torch_device, torch.float16 if torch_device.type == "cuda" else torch.float32
    return torch_device, getattr(torch, dtype)


def make_scheduler(name: str, config: Any) -> Any:
    """A scheduler by name (see `SCHEDULERS`) built from a scheduler config.

    ``config`` is a scheduler (``pipe.scheduler``) or its config; ``default`` rebuilds the
    scheduler's own class (for a bare config, the class its ``_class_name`` names). Raises
    `InputError` for an unknown name.
    """
    import diffusers

    if name not in SCHEDULERS:
        raise InputError(
            f"diffusion.scheduler: unknown scheduler {name!r} (use {', '.join(SCHEDULERS)})"
        )
    if isinstance(config, diffusers.SchedulerMixin):
        own, config = type(config), config.config  # type: ignore[attr-defined]  # ConfigMixin's
    else:
        own = getattr(diffusers, config["_class_name"])
    class_name, overrides = SCHEDULERS[name]
    cls = own if class_name is None else getattr(diffusers, class_name)
    return cls.from_config(config, **overrides)


def load_pipeline(
    model: str,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    scheduler: str = "default",
    config: str | None = None,
    lora: Sequence[LoraSetting] = (),
) -> Any:
    """The text-to-image pipeline of ``model``, on ``device`` in ``dtype``, offline, with the
    LoRAs ``lora`` loaded (`hypermosaic.pipelines.lora.apply_loras`).

    ``model``: a diffusers directory (with ``model_index.json``), a single ``.safetensors``
    checkpoint (its component configs come from ``config``: a local diffusers directory or a
    Hugging Face id in the local cache; without it, the base model diffusers infers from the
    checkpoint must be in the local cache), or a Hugging Face id in the local cache. safetensors
    weights are preferred, and the ``fp16`` variant when loading in float16 and it exists.
    Progress bars are disabled. Raises `InputError` naming the model and how to provide it.
    """
    source = locate_model(model, config)
    if source.checkpoint is None:
        pipe = _from_directory(source.folder, model, dtype)
    else:
        pipe = _from_single_file(source, dtype)
    if scheduler != "default":
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler)
    if lora:
        from hypermosaic.pipelines.lora import apply_loras

        apply_loras(pipe, lora)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_worker_pipeline(
    model: str, device: str, dtype: str, *, scheduler: str = "default",
    config: str | None = None, lora: Sequence[LoraSetting] = (),
) -> tuple[torch.device, torch.dtype, Any]:
    """The device, dtype and pipeline of ``model`` as a worker's engine loads them: libraries
    quietened (a worker's output would break the client's progress display), ``device`` and
    ``dtype`` resolved (`resolve_device_dtype`, ``auto`` allowed), then `load_pipeline`.
    Raises `InputError` as those do."""
    quiet_libraries()
    torch_device, torch_dtype = resolve_device_dtype(device, dtype)
    pipe = load_pipeline(model, device=torch_device, dtype=torch_dtype, scheduler=scheduler,
                         config=config, lora=lora)
    return torch_device, torch_dtype, pipe


def load_canvas_pipeline(model: str, device: str, dtype: str) -> Any:
    """The pipeline of ``model`` for canvases, as a canvas worker loads it
    (`load_worker_pipeline`)."""
    return load_worker_pipeline(model, device, dtype)[2]


@dataclass(frozen=True)
class ModelSource:
    """A model's files on this machine.

    ``folder`` is a diffusers directory (with ``model_index.json``): the model itself, or, for a
    single-file ``checkpoint``, the directory whose component configs describe it.
    """

    folder: Path
    checkpoint: Path | None = None


def locate_model(model: str, config: str | None = None, *, key: str = "diffusion.model"
                 ) -> ModelSource:
    """Where ``model`` (and a single file's ``config``) are, without loading any weights.

    Same sources as `load_pipeline`. Raises `InputError` naming ``key`` (the config key that
    gave ``model``) and how to provide it.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(_pipeline_folder(path, key, model))
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(
                f"{key}: {model}: only .safetensors single-file checkpoints are "
                "supported (pickled .ckpt files are not loaded; convert it to safetensors)"
            )
        return ModelSource(_single_file_config(path, config, key), checkpoint=path)
    if looks_like_path(model):
        raise InputError(f"{key}: {model}: no such file or directory")
    return ModelSource(_pipeline_folder(cached_snapshot(model, key), key, model))


def native_size(source: ModelSource) -> int | None:
    """The image side in pixels a model was trained at: its UNet's ``sample_size`` times its
    VAE's scale factor, read from the component configs. None when they do not say (not a
    UNet/VAE model: the worker's own checks report it)."""
    try:
        unet = json.loads((source.folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((source.folder / "vae" / "config.json").read_text(encoding="utf-8"))
        sample, levels = unet["sample_size"], len(vae["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sample * 2 ** (levels - 1) if isinstance(sample, int) and levels else None


def img2img_pipeline(pipe: Any) -> Any:
    """The image-to-image pipeline sharing ``pipe``'s components (no copy, no reload)."""
    from diffusers import AutoPipelineForImage2Image

    view = AutoPipelineForImage2Image.from_pipe(pipe)
    view.set_progress_bar_config(disable=True)
    return view


def read_json_object(path: Path, key: str) -> dict[str, Any]:
    """A JSON object from ``path`` (a component's config); `InputError` naming ``key`` when
    it cannot be read or is not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{key}: cannot read {path}") from None
    if not isinstance(value, dict):
        raise InputError(f"{key}: {path} is not a JSON object")
    return value


def looks_like_path(model: str) -> bool:
    """A Hugging Face id is ``name`` or ``org/name``; anything else must be a local path."""
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or model.endswith((".safetensors", ".ckpt"))
    )


def _pipeline_folder(folder: Path, key: str, name: str) -> Path:
    """``folder`` if it is a diffusers pipeline directory, else `InputError` naming ``key``."""
    if not (folder / "model_index.json").is_file():
        raise InputError(f"{key}: {name}: not a diffusers pipeline directory (no model_index.json)")
    return folder


def cached_snapshot(repo_id: str, key: str = "diffusion.model") -> Path:
    """The local snapshot folder of a Hugging Face model; `InputError` if it is not cached."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        raise InputError(
            f"{key}: {repo_id!r} is neither a local directory, nor a .safetensors file, nor "
            f"a model in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
            + DOWNLOAD_HINT.format(id=repo_id, key=key)
        ) from None


def _variant(folder: Path, dtype: torch.dtype) -> str | None:
    """``fp16`` when loading in float16 and the folder ships fp16 weights, else the default."""
    import torch

    if dtype == torch.float16 and any(folder.glob("*/*.fp16.safetensors")):
        return "fp16"
    return None


def _from_directory(folder: Path, model: str, dtype: torch.dtype) -> Any:
    from diffusers import AutoPipelineForText2Image

    use_safetensors = True if any(folder.glob("*/*.safetensors")) else None
    try:
        return AutoPipelineForText2Image.from_pretrained(
            folder,
            dtype=dtype,
            use_safetensors=use_safetensors,
            variant=_variant(folder, dtype),
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise InputError(f"diffusion.model: {model}: cannot load the pipeline: {exc}") from None


def _single_file_config(checkpoint: Path, config: str | None, key: str = "diffusion.model"
                        ) -> Path:
    """The local diffusers folder holding the component configs of a single-file checkpoint."""
    if config is not None:
        folder = Path(config).expanduser()
        if folder.is_dir():
            return _pipeline_folder(folder, "diffusion.config", config)
        if looks_like_path(config):
            raise InputError(f"diffusion.config: {config}: no such directory")
        return _pipeline_folder(
            cached_snapshot(config, "diffusion.config"), "diffusion.config", config
        )
    from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_state_dict

    base = fetch_diffusers_config(load_state_dict(str(checkpoint)))["pretrained_model_name_or_path"]
    try:
        return _pipeline_folder(cached_snapshot(base, key), key, base)
    except InputError:
        raise InputError(
            f"{key}: {checkpoint} is a single-file checkpoint of a {base} type model; "
            f"offline it needs that model's diffusers configs: set diffusion.config to a local "
            f"diffusers directory of the same architecture, or "
            f"{DOWNLOAD_HINT.format(id=base, key=key)} "
            f"(`hf download {base} --exclude '*.safetensors' '*.bin' '*.ckpt'` is enough)"
        ) from None


def _from_single_file(source: ModelSource, dtype: torch.dtype) -> Any:
    import diffusers

    folder, checkpoint = source.folder, source.checkpoint
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    class_name = index.get("_class_name", "")
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise InputError(
            f"diffusion.config: {folder}: pipeline {class_name!r} cannot load single-file "
            "checkpoints"
        )
    try:
        pipe = pipeline_class.from_single_file(
            str(checkpoint), config=str(folder), dtype=dtype, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(
            f"diffusion.model: {checkpoint}: cannot load it with the configs of {folder}: {exc}"
        ) from None
    return diffusers.AutoPipelineForText2Image.from_pipe(pipe)
