"""A user's upscaler checkpoint as basicsr's Real-ESRGAN state dict, or one line saying why not.

Pure functions over the dict a weights file holds (`hypermosaic.pipelines.esrgan.weights`
reads it): `unwrap` takes the state dict out of a training checkpoint; `refuse_foreign`
recognises a network we do not implement by its key signature (SwinIR, HAT, DAT, ...), so that
it is refused naming it rather than as an unknown one; `to_basicsr_layout` renames the older ESRGAN
layouts (community models such as 4x-UltraSharp, and the ESRGAN repository's own) to the key
names of `hypermosaic.pipelines.esrgan.networks.RRDBNet`, so one network serves them all.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from hypermosaic.errors import InputError

__all__ = ["SUPPORTED", "refuse_foreign", "to_basicsr_layout", "unwrap"]

SUPPORTED = "ESRGAN (old and new layouts, 1x/2x/4x RRDBNet), SRVGG compact"
"""What a weights file may hold, for the messages that refuse anything else."""

_WRAPPERS = ("params_ema", "params", "state_dict")
"""Keys a training checkpoint keeps its state dict under, by preference (basicsr saves both
``params_ema`` and ``params``: the EMA weights are the ones released)."""

# Networks we do not implement, by a key fragment only they have; the first match names it
# (HAT and Swin2SR before SwinIR, whose residual groups they share).
_FOREIGN: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Stable Diffusion", re.compile(r"model\.diffusion_model\.")),
    ("HAT", re.compile(r"\.(overlap_attn|conv_block)\.|relative_position_index_(SA|OCA)")),
    ("Swin2SR", re.compile(r"\.attn\.(logit_scale|cpb_mlp)")),
    ("SwinIR", re.compile(r"residual_group\.blocks\.|^patch_embed\.")),
    ("DAT", re.compile(r"^before_RG\.|\.attn\.attns\.")),
    ("OmniSR", re.compile(r"^residual_layer\.\d+\.residual_layer\.")),
    ("SPAN", re.compile(r"^block_\d+\.c1_r\.")),
    ("Real-CUGAN", re.compile(r"^unet1\.")),
    ("RCAN/EDSR", re.compile(r"^head\.0\.weight$")),
)

# xinntao/ESRGAN's own layout (RRDB_ESRGAN_x4.pth), key by key: (pattern, basicsr name).
_ESRGAN_REPO = (
    (r"RRDB_trunk\.(\d+)\.RDB([123])\.(conv[1-5]\.\w+)", r"body.\1.rdb\2.\3"),
    (r"trunk_conv\.(\w+)", r"conv_body.\1"),
    (r"upconv([12])\.(\w+)", r"conv_up\1.\2"),
    (r"HRconv\.(\w+)", r"conv_hr.\1"),
    (r"(conv_first|conv_last)\.(\w+)", r"\1.\2"),
)
# The old layout's (community models): its trunk's blocks, and its numbered convs.
_OLD_TRUNK = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.(conv[1-5])\.0\.(\w+)")
_OLD_CONV = re.compile(r"model\.(\d+)\.(weight|bias)")


def unwrap(saved: Any) -> Any:
    """The state dict in what a weights file holds: the ``params_ema``/``params``/``state_dict``
    entry of a training checkpoint if there is one, with DataParallel's ``module.`` prefix
    removed; anything else as it is (the caller checks it is a dict of tensors)."""
    if not isinstance(saved, dict):
        return saved
    for key in _WRAPPERS:
        if isinstance(saved.get(key), dict):
            saved = saved[key]
            break
    if saved and all(isinstance(k, str) and k.startswith("module.") for k in saved):
        saved = {k.removeprefix("module."): v for k, v in saved.items()}
    return saved


def refuse_foreign(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise `InputError` naming ``source`` and the network if ``state`` holds the weights of
    one we know and do not implement (`_FOREIGN`); checked on the key names alone, before
    anything else about the tensors (a SwinIR's integer buffers are not its fault)."""
    for name, signature in _FOREIGN:
        if any(signature.search(key) for key in state):
            article = "an" if name[0] in "AEIOU" else "a"
            raise InputError(f"{source}: {article} {name} checkpoint; supported: {SUPPORTED}")


def to_basicsr_layout(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` with basicsr's RRDBNet key names (the same tensors, renamed), whichever
    ESRGAN layout it is in; other state dicts unchanged.

    The old layout (``model.0`` conv in, ``model.1.sub.N.RDBj.convk.0`` blocks, the trunk's
    closing conv at ``model.1.sub.<blocks>``, then upsampling convs, the HR conv and the last
    conv at rising ``model.K``) maps onto RRDBNet only with its two upsampling convs (4x, or
    2x and 1x over a pixel-unshuffled input, as basicsr's); another count (an 8x, or a 2x or
    1x without unshuffle) raises `InputError` naming ``source``.
    """
    if "RRDB_trunk.0.RDB1.conv1.weight" in state:
        return {_rename(key, _ESRGAN_REPO): value for key, value in state.items()}
    if "model.0.weight" not in state or "model.1.sub.0.RDB1.conv1.0.weight" not in state:
        return state
    blocks = 1 + max(int(m.group(1)) for k in state if (m := _OLD_TRUNK.fullmatch(k)))
    convs = sorted({int(m.group(1)) for k in state if (m := _OLD_CONV.fullmatch(k))} - {0})
    ups = len(convs) - 2
    if ups != 2:
        raise InputError(f"{source}: an old-layout ESRGAN with {max(ups, 0)} upsampling convs, "
                         f"not 2; supported: {SUPPORTED}")
    names = {0: "conv_first", convs[0]: "conv_up1", convs[1]: "conv_up2", convs[2]: "conv_hr",
             convs[3]: "conv_last"}
    renamed = {}
    for key, value in state.items():
        if trunk := _OLD_TRUNK.fullmatch(key):
            block, rdb, conv, param = trunk.groups()
            key = f"body.{block}.rdb{rdb}.{conv}.{param}"
        elif key.startswith(f"model.1.sub.{blocks}."):
            key = "conv_body." + key.removeprefix(f"model.1.sub.{blocks}.")
        elif (conv_key := _OLD_CONV.fullmatch(key)) and int(conv_key.group(1)) in names:
            key = f"{names[int(conv_key.group(1))]}.{conv_key.group(2)}"
        renamed[key] = value  # anything else keeps its name: loading reports it as unexpected
    return renamed


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str:
    """``key`` renamed by the first pattern of ``table`` it matches whole, else as it is."""
    for pattern, name in table:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, name, key)
    return key
