"""LoRAs on a Stable Diffusion pipeline, with peft: loaded once per worker, checked on the client.

A LoRA file is read with diffusers' own ``lora_state_dict`` (diffusers, kohya and A1111 key
layouts), its UNet part loaded with diffusers' ``load_lora_into_unet`` and its text-encoder parts
injected with peft directly (transformers' own loader insists on a newer peft than diffusers
does). Each LoRA is an adapter ``lora<N>`` at its config scale. Fused ones are loaded first,
merged into the weights and their layers removed, then the others are added as live adapters:
peft skips live adapters in a layer that has merged ones.

`check_loras` runs the same loading on a copy of the model's UNet and text encoders built on the
meta device from their configs (no weights, no memory), so a LoRA made for another model stops a
run on the client before any work, as `apply_loras` would stop a worker.

A LoRA fits when every weight in it lands in the model with its shape; otherwise `InputError`
names the config key (``diffusion.lora.N.path``) and the file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hypermosaic.errors import InputError
from hypermosaic.lora import LoraSetting

__all__ = ["apply_loras", "check_loras"]

KEY = "diffusion.lora"
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def apply_loras(pipe: Any, loras: Sequence[LoraSetting], key: str = KEY) -> None:
    """Load ``loras`` into ``pipe``'s UNet and text encoders, at their scales, fused ones
    merged; `InputError` naming ``key.N.path`` for a LoRA that does not fit."""
    if not loras:
        return
    _require_peft(key)
    models = _models(pipe)
    for fuse in (True, False):
        group = [(index, lora) for index, lora in enumerate(loras) if lora[2] == fuse]
        for index, (path, _, _) in group:
            _load(type(pipe), models, Path(path), f"lora{index}", f"{key}.{index}.path")
        if group:
            _activate(models, group, fuse)


def check_loras(source: Any, loras: Sequence[LoraSetting], key: str = KEY) -> None:
    """`InputError` naming ``key.N.path`` unless each LoRA fits the located model ``source``
    (`hypermosaic.pipelines.models.ModelSource`), checked on meta-device copies of its UNet and
    text encoders built from their configs."""
    if not loras:
        return
    _require_peft(key)
    import diffusers

    index = json.loads((source.folder / "model_index.json").read_text(encoding="utf-8"))
    pipeline_class = getattr(diffusers, index.get("_class_name", ""), None)
    if pipeline_class is None or not hasattr(pipeline_class, "lora_state_dict"):
        raise InputError(f"{key}: model {source.folder} ({index.get('_class_name')}) does not "
                         "take LoRAs")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op"
        models = {name: _weightless(source.folder / name, *index[name])
                  for name in ("unet", *TEXT_ENCODERS)
                  if isinstance(index.get(name), list) and index[name][1] is not None}
        for number, (path, _, _) in enumerate(loras):
            _load(pipeline_class, models, Path(path), f"lora{number}", f"{key}.{number}.path")


def _weightless(folder: Path, library: str, class_name: str) -> Any:
    """The component saved in ``folder`` (a diffusers or transformers class), built from its
    config alone; on the meta device when called under it."""
    import diffusers
    import transformers

    if library == "diffusers":
        model_class = getattr(diffusers, class_name)
        return model_class.from_config(model_class.load_config(folder))
    model_class = getattr(transformers, class_name)
    return model_class(model_class.config_class.from_pretrained(folder))


def _models(pipe: Any) -> dict[str, Any]:
    """The pipeline's components a LoRA can change, by name."""
    names = ("unet", *TEXT_ENCODERS)
    return {name: getattr(pipe, name) for name in names if getattr(pipe, name, None) is not None}


def _load(pipeline_class: Any, models: dict[str, Any], path: Path, name: str, key: str) -> None:
    """Adapter ``name`` from the LoRA file ``path`` into ``models``; `InputError` naming
    ``key`` if the file cannot be read or any of its weights does not land in them."""
    from diffusers.utils import logging as diffusers_logging
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        raw = load_file(path)
    except (OSError, SafetensorError) as exc:
        raise InputError(f"{key}: {path}: not a readable safetensors LoRA ({exc})") from None
    unet_config = models["unet"].config if "unet" in models else None
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)  # it logs, then raises
    try:
        state, alphas = pipeline_class.lora_state_dict(raw, unet_config=unet_config)
        if "unet" in models and any(k.startswith("unet.") for k in state):
            pipeline_class.load_lora_into_unet(state, alphas, unet=models["unet"],
                                               adapter_name=name)
        for encoder in TEXT_ENCODERS:
            if encoder in models:
                _load_text_encoder(models[encoder], state, alphas, encoder, name)
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        lines = [line.strip() for line in str(exc).splitlines()] or [type(exc).__name__]
        why = next((line for line in lines if "mismatch" in line), lines[0])
        raise _does_not_fit(key, path, why) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    given = sum(tensor.numel() for tensor in state.values())
    landed = sum(_adapter_numel(model, name) for model in models.values())
    if landed != given:
        raise _does_not_fit(key, path, f"{given - landed} of its {given} weights have no place "
                            "in it")


def _load_text_encoder(model: Any, state: dict[str, torch.Tensor],
                       alphas: dict[str, float] | None, prefix: str, name: str) -> None:
    """The ``prefix`` part of a LoRA state dict injected into a text encoder with peft, as
    diffusers' loader does it but without transformers' adapter API."""
    from diffusers.utils.peft_utils import _create_lora_config
    from diffusers.utils.state_dict_utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
    )
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    own = {k.removeprefix(f"{prefix}."): v for k, v in state.items()
           if k.startswith(f"{prefix}.")}
    if not own:
        return
    own = convert_state_dict_to_peft(convert_state_dict_to_diffusers(own))
    if not hasattr(model, "text_model"):  # flattened CLIP in recent transformers
        own = {k.removeprefix("text_model."): v for k, v in own.items()}
    ranks = {k: v.shape[1] for k, v in own.items() if k.endswith("lora_B.weight")}
    own_alphas = None if alphas is None else {
        k.removeprefix(f"{prefix}."): v for k, v in alphas.items() if k.split(".")[0] == prefix}
    config = _create_lora_config(own, own_alphas or None, None, ranks, is_unet=False)
    with warnings.catch_warnings():  # a second adapter in one model is what we want
        warnings.filterwarnings("ignore", "Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=name)
    set_peft_model_state_dict(model, own, adapter_name=name)


def _adapter_numel(model: Any, name: str) -> int:
    """How many LoRA weights of adapter ``name`` ``model`` holds."""
    return sum(parameter.numel() for path, parameter in model.named_parameters()
               if ".lora_" in path and f".{name}." in f"{path}.")


def _activate(models: dict[str, Any], group: list[tuple[int, LoraSetting]], fuse: bool) -> None:
    """Set the scales of ``group``'s adapters and make them the active ones; with ``fuse``,
    merge them into the weights and remove their layers."""
    from diffusers.utils.peft_utils import (
        recurse_remove_peft_layers,
        set_weights_and_activate_adapters,
    )
    from peft.tuners.tuners_utils import BaseTunerLayer

    names, scales = [f"lora{index}" for index, _ in group], [lora[1] for _, lora in group]
    for model in models.values():
        set_weights_and_activate_adapters(model, names, scales)
        if not fuse:
            continue
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge(adapter_names=names)
        if hasattr(model, "unload_lora"):  # a diffusers model: its adapter configs go too
            model.unload_lora()
        else:
            recurse_remove_peft_layers(model)
            model.__dict__.pop("peft_config", None)


def _require_peft(key: str) -> None:
    """`InputError` naming ``key`` when peft, which loads LoRAs, is not installed."""
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise InputError(f"{key}: LoRAs need peft, which is not installed (pip install peft)")


def _does_not_fit(key: str, path: Path, why: str) -> InputError:
    return InputError(f"{key}: {path} does not fit the model ({why}); is it a LoRA for "
                      "another base model?")
