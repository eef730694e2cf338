"""ControlNet on the torch side: located and checked against the base model on the client,
loaded once per worker, applied in the build's img2img and in canvas windows.

The build's tiles run diffusers' ControlNet img2img pipelines (SD and SDXL) made from the
img2img pipeline's own components (`control_img2img`), each tile its own control image. A
canvas adds a ControlNet's residuals to every batched UNet call (`ControlWindows`): the
ControlNet sees the same rows as the UNet (unconditional and conditional rows alike, as
diffusers' pipelines feed it without guess mode) and each window's crop of the control image.

A ControlNet fits a base model when its residuals have the UNet's shapes and it reads the
same conditioning: equal ``block_out_channels``, ``layers_per_block``, ``cross_attention_dim``,
``addition_embed_type`` and latent channels. Anything else is refused on the client with one
line naming the key (`check_controlnet`), before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypermosaic.errors import InputError
from hypermosaic.pipelines.models import (
    ModelSource,
    cached_snapshot,
    looks_like_path,
    read_json_object,
)
from hypermosaic.tiling import Box

__all__ = [
    "ControlWindows",
    "check_controlnet",
    "control_img2img",
    "control_windows",
    "load_controlnet",
    "locate_controlnet",
]

_MATCHING = ("block_out_channels", "layers_per_block", "cross_attention_dim",
             "addition_embed_type")


def locate_controlnet(model: str, key: str) -> Path:
    """The folder of ControlNet ``model`` (a diffusers ``ControlNetModel`` folder, or a Hugging
    Face id in the local cache); `InputError` naming ``key`` otherwise."""
    path = Path(model).expanduser()
    if path.is_dir():
        folder = path
    elif path.exists() or looks_like_path(model):
        raise InputError(f"{key}: {model}: not a ControlNet folder (a diffusers folder with "
                         "config.json and diffusion_pytorch_model.safetensors)")
    else:
        folder = cached_snapshot(model, key)
    config = read_json_object(folder / "config.json", key)
    if config.get("_class_name") not in ("ControlNetModel", None):
        raise InputError(f"{key}: {model} is a {config['_class_name']}, not a ControlNetModel")
    return folder


def check_controlnet(source: ModelSource, model: str, key: str) -> None:
    """`InputError` naming ``key`` unless ControlNet ``model`` fits the base model located at
    ``source`` (its UNet's config, see the module's docstring)."""
    controlnet = read_json_object(locate_controlnet(model, key) / "config.json", key)
    unet = read_json_object(source.folder / "unet" / "config.json", key)
    for name in _MATCHING:
        theirs, ours = controlnet.get(name), unet.get(name)
        if isinstance(theirs, list) or isinstance(ours, list):
            theirs, ours = list(theirs or []), list(ours or [])
        if theirs != ours:
            raise InputError(f"{key}: {model} does not fit the model: its {name} is {theirs}, "
                             f"the model's UNet has {ours}")
    if controlnet.get("in_channels") != unet.get("out_channels"):
        raise InputError(f"{key}: {model} does not fit the model: it reads "
                         f"{controlnet.get('in_channels')} latent channels, the model has "
                         f"{unet.get('out_channels')}")


def load_controlnet(model: str, device: torch.device | str, dtype: torch.dtype,
                    key: str = "diffusion.controlnet.model") -> Any:
    """The ControlNet ``model`` on ``device`` in ``dtype``, safetensors weights, offline."""
    from diffusers import ControlNetModel

    folder = locate_controlnet(model, key)
    try:
        controlnet = ControlNetModel.from_pretrained(folder, torch_dtype=dtype,
                                                     local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{key}: {model}: cannot load the ControlNet: {exc}") from None
    return controlnet.to(device)


def control_img2img(img2img: Any, controlnet: Any) -> Any:
    """The ControlNet image-to-image pipeline (SD or SDXL, as ``img2img`` is) sharing
    ``img2img``'s components, with ``controlnet``."""
    from diffusers import AutoPipelineForImage2Image

    pipe = AutoPipelineForImage2Image.from_pipe(img2img, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ControlWindows:
    """A ControlNet over canvas windows: ``image`` (the control image, ``(H, W, 3)`` uint8 of
    the canvas's size) cropped to each window's pixels, residuals at ``scale``."""

    def __init__(self, controlnet: Any, image: np.ndarray, scale: float, f: int) -> None:
        self.controlnet, self.scale, self.f = controlnet, scale, f
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        self.pixels = pixels.to(controlnet.device, controlnet.dtype)

    def crop(self, box: Box) -> torch.Tensor:
        """The control pixels of the latent ``box``, ``(1, 3, h, w)`` in [0, 1]."""
        top, bottom, left, right = (edge * self.f for edge in box)
        return self.pixels[None, :, top:bottom, left:right]

    def residuals(self, x: torch.Tensor, t: torch.Tensor, boxes: list[Box],
                  extra: dict[str, Any]) -> dict[str, Any]:
        """The UNet keywords adding the ControlNet's residuals for the rows ``x`` (``boxes``:
        each row's window) conditioned as the UNet call is (``extra``)."""
        cond = torch.cat([self.crop(box) for box in boxes])
        down, mid = self.controlnet(
            x, t, controlnet_cond=cond, conditioning_scale=self.scale, return_dict=False,
            **{name: value for name, value in extra.items()
               if name in ("encoder_hidden_states", "added_cond_kwargs", "timestep_cond")})
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def control_windows(plan: Any, controlnet: Any, f: int) -> ControlWindows | None:
    """The `ControlWindows` of a canvas plan whose ``control`` asks for one (None otherwise);
    `InputError` when it does and ``controlnet`` was not loaded."""
    if plan.control is None:
        return None
    if controlnet is None:
        raise InputError(f"controlnet.model: {plan.control.model} was not loaded")
    return ControlWindows(controlnet, plan.control.pixels, plan.control.scale, f)
