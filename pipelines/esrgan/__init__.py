"""Real-ESRGAN in plain PyTorch: networks, weights, a ready upscaler and seamless tiling.

- `networks`: `RRDBNet` and `SRVGGNetCompact`, with basicsr's parameter names.
- `weights`: registry weights converted from ncnn (`ncnn_weights`, with progress) and cached;
  a user's `.pth`/`.safetensors` read as plain tensors, its architecture recognised, any
  other file refused with one line naming it.
- `checkpoints`: a user's checkpoint brought to basicsr's key names (training wrappers, the
  old ESRGAN layouts); networks we do not implement named from their keys and refused.
- `upscaler`: the `Upscaler` callable on a device and dtype; `load_upscaler`,
  `describe_upscaler` (scale and default tile, without running the model).
- `tiled`: overlapping feathered windows, handed out as bands of finished rows.

The core reaches these through `hypermosaic.registry` only.
"""

from __future__ import annotations

from hypermosaic.pipelines.esrgan.networks import RRDBNet, SRVGGNetCompact, make_network
from hypermosaic.pipelines.esrgan.tiled import enlarge, upscale_array, upscale_bands
from hypermosaic.pipelines.esrgan.upscaler import (
    Upscaler,
    default_tile,
    describe_upscaler,
    load_upscaler,
    resolve_dtype,
)
from hypermosaic.pipelines.esrgan.weights import (
    build_model,
    convert_registry_weights,
    load_model,
    model_scale,
    ncnn_model_files,
    read_state_dict,
)

__all__ = [
    "RRDBNet",
    "SRVGGNetCompact",
    "Upscaler",
    "build_model",
    "convert_registry_weights",
    "default_tile",
    "describe_upscaler",
    "enlarge",
    "load_model",
    "load_upscaler",
    "make_network",
    "model_scale",
    "ncnn_model_files",
    "read_state_dict",
    "resolve_dtype",
    "upscale_array",
    "upscale_bands",
]
