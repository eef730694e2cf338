"""diffusers' IP-Adapter as the image prompts' ``ip_adapter`` method (docs/image-prompts.md).

An IP-Adapter adds a second cross-attention to the UNet, over tokens projected from the CLIP
image embedding of a picture, instead of moving the prompt's tokens as flex does. Its weights
are loaded with diffusers' own loader (``load_ip_adapter``), only from ``.safetensors`` files
(never a pickle), once per worker; the image encoder is the image prompt's ``vision_model``,
called once per batch, and its embeddings are handed to the pipeline as
``ip_adapter_image_embeds``. Only the plain IP-Adapter layout (``image_proj.proj``, four image
tokens: ``ip-adapter_sd15``) is accepted; Plus and Face ID variants are refused before any work.

A worker's UNet serves tiles with and without an adapter, so the adapter's attention processors
and image projection are swapped in for the calls that use it and out after (`IPAdapters`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hypermosaic.errors import InputError
from hypermosaic.pipelines.image_prompt.checks import PROJECTION_DIM
from hypermosaic.pipelines.image_prompt.vision import KEY as VISION_KEY
from hypermosaic.pipelines.image_prompt.vision import locate_vision_model
from hypermosaic.pipelines.models import cached_snapshot, looks_like_path, read_json_object

__all__ = ["KEY", "IPAdapters", "check_ip_adapter", "ip_adapter_embeds", "locate_ip_adapter"]

KEY = "image_prompt.ip_adapter"
IMAGE_TOKENS = 4  # the plain IP-Adapter's image tokens per picture


def locate_ip_adapter(name: str | None, subfolder: str = "", weight_name: str | None = None
                      ) -> Path:
    """The IP-Adapter's ``.safetensors`` file: ``name`` itself, or ``subfolder/weight_name``
    in the folder or cached Hugging Face id ``name``; `InputError` naming the key otherwise."""
    if name is None:
        raise InputError(f'{KEY}: missing; method = "ip_adapter" needs the IP-Adapter weights '
                         "(a folder, a cached Hugging Face id or a .safetensors file)")
    path = Path(name).expanduser()
    if path.is_file():
        file = path
    else:
        if path.is_dir():
            folder = path
        elif looks_like_path(name):
            raise InputError(f"{KEY}: {name}: no such file or folder")
        else:
            folder = cached_snapshot(name, KEY)
        if weight_name is None:
            raise InputError(f"{KEY}_weight_name: missing; name the .safetensors file in "
                             f"{name} (e.g. ip-adapter_sd15.safetensors, subfolder \"models\")")
        file = folder / subfolder / weight_name
        if not file.is_file():
            raise InputError(f"{KEY}: {name}: no file {Path(subfolder, weight_name)}")
    if file.suffix != ".safetensors":
        raise InputError(f"{KEY}: {file.name}: only .safetensors weights are loaded (pickled "
                         "files can run code); use the .safetensors release of the adapter")
    return file


def check_ip_adapter(source: Any, ip_adapter: str | None, subfolder: str,
                     weight_name: str | None, vision_model: str, vision_config: str | None
                     ) -> Path:
    """The located adapter file, checked against the located diffusion model ``source``
    (`hypermosaic.pipelines.models.ModelSource`) and the vision model, from the safetensors
    header and ``config.json`` files (no weights): `InputError` naming the key otherwise."""
    file = locate_ip_adapter(ip_adapter, subfolder, weight_name)
    shapes = _header_shapes(file)
    if "image_proj.proj.weight" not in shapes:
        raise InputError(f"{KEY}: {file.name} is not a plain IP-Adapter (no image_proj.proj); "
                         "IP-Adapter Plus and Face ID are not supported yet")
    unet = read_json_object(source.folder / "unet" / "config.json", "diffusion.model")
    wanted = _expected_shapes(unet)
    projected = shapes["image_proj.proj.weight"]
    cross = wanted.pop("cross_attention_dim")[0]
    found = {key: shape for key, shape in shapes.items() if key.startswith("ip_adapter.")}
    if found != wanted or projected[0] != IMAGE_TOKENS * cross:
        raise InputError(f"{KEY}: {file.name} does not fit this model's UNet ({len(wanted)} "
                         f"key/value weights for {cross}-wide cross-attention wanted, "
                         f"{len(found)} found, projecting to {projected[0] // IMAGE_TOKENS}); "
                         "use the IP-Adapter trained for this model")
    located = locate_vision_model(vision_model, vision_config)
    vision = read_json_object(located.folder / "config.json", VISION_KEY)
    width = int(vision.get("projection_dim", PROJECTION_DIM))
    if width != projected[1]:
        raise InputError(f"{VISION_KEY}: {vision_model} projects images to {width} values but "
                         f"the IP-Adapter {file.name} takes {projected[1]}; use the image "
                         "encoder it was trained with")
    return file


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{KEY}: {file}: not a readable safetensors file ({exc})") from None


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The ``ip_adapter.*`` shapes diffusers' loader wants for a UNet ``config``, named as the
    IP-Adapter files name them (cross-attention layers 1, 3, 5, ... in processor order), plus
    ``cross_attention_dim``. The UNet is built on the meta device: no memory, no weights."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    cross = int(unet.config.cross_attention_dim)
    widths = list(unet.config.block_out_channels)
    shapes: dict[str, tuple[int, ...]] = {"cross_attention_dim": (cross,)}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        block = name.split(".")[0]
        hidden = (widths[-1] if block == "mid_block" else
                  widths[::-1][int(name.split(".")[1])] if block == "up_blocks" else
                  widths[int(name.split(".")[1])])
        for kind in ("to_k_ip", "to_v_ip"):
            shapes[f"ip_adapter.{key_id}.{kind}.weight"] = (hidden, cross)
        key_id += 2
    return shapes


def ip_adapter_embeds(embeds: Tensor, classifier_free: bool) -> list[Tensor]:
    """``ip_adapter_image_embeds`` for one adapter from one embedding per tile (B, D): one
    image per tile, zeros (diffusers' negative for the plain adapter) before them with
    classifier-free guidance."""
    per_tile = embeds[:, None]
    return [torch.cat([torch.zeros_like(per_tile), per_tile]) if classifier_free else per_tile]


class IPAdapters:
    """The IP-Adapters of one pipeline's UNet, each loaded once, swapped in by `applied`."""

    def __init__(self) -> None:
        self._loaded: dict[Path, tuple[dict[str, Any], Any]] = {}
        self._plain: tuple[dict[str, Any], Any, Any] | None = None

    @contextmanager
    def applied(self, pipe: Any, file: Path, scale: float) -> Iterator[None]:
        """Run a block with the adapter ``file`` in ``pipe``'s UNet at ``scale``; the UNet is
        as it was after the block, even when the block raises."""
        unet = pipe.unet
        if self._plain is None:
            self._plain = (dict(unet.attn_processors), unet.encoder_hid_proj,
                           unet.config.encoder_hid_dim_type)
        if file not in self._loaded:
            pipe.load_ip_adapter(str(file.parent), subfolder="", weight_name=file.name,
                                 image_encoder_folder=None, local_files_only=True)
            self._loaded[file] = dict(unet.attn_processors), unet.encoder_hid_proj
        processors, projection = self._loaded[file]
        unet.set_attn_processor(dict(processors))  # it pops what it sets
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        try:
            pipe.set_ip_adapter_scale(scale)
            yield
        finally:
            plain, plain_projection, plain_type = self._plain
            unet.set_attn_processor(dict(plain))
            unet.encoder_hid_proj = plain_projection
            unet.config.encoder_hid_dim_type = plain_type
