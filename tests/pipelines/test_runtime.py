"""The seam to the torch side: every `hypermosaic.registry` component exists here with the
signature the registry calls it with; torch thread and device settings."""

from __future__ import annotations

import inspect

import pytest
import torch

from hypermosaic import registry
from hypermosaic.pipelines import runtime

# How `hypermosaic.registry` calls each component: positional and keyword arguments.
CALLS: dict[str, tuple[tuple[object, ...], dict[str, object]]] = {
    "engine.inpaint": (("model",), {"scheduler": "default", "dtype": "auto", "batch_size": 1,
                                    "device": "auto", "config": None}),
    "inpaint.job": ((), {"image": "image", "mask": "mask", "prompt": "prompt",
                         "negative_prompt": "", "steps": 2, "guidance": 7.5, "strength": 1.0,
                         "seeds": (0,), "feather": 8}),
    "model.locate": (("model", None), {"key": "diffusion.model"}),
    "model.native_size": (("source",), {}),
    "image_prompt.check": (("source", "vision", None, "auto"), {}),
    "image_prompt.ip_adapter": (("source", "adapter", "models", None, "vision", None), {}),
    "canvas.pipeline": (("model", "cpu", "auto"), {}),
    "canvas.render": (("pipe", "plan", None, None), {}),
    "stream.batch": (("pipe",), {}),
    "lora.check": (("source", (), "lora"), {}),
    "lora.apply": (("pipe", (), "lora"), {}),
    "controlnet.check": (("source", "model", "controlnet.model"), {}),
    "controlnet.load": (("model", "cpu", "float32", "controlnet.model"), {}),
    "refine.band": (("pipe", "pixels", "band", "plan", "refine", None),
                    {"callback": None, "controlnet": None}),
    "refine.geometry": (("pipe",), {}),
    "upscaler.load": (("x4plus",), {"device": "auto", "dtype": "auto", "tile": None,
                                    "init": False}),
    "upscaler.describe": (("x4plus",), {}),
    "upscaler.bands": (("read_rows", 8, 8, "upscaler", None, 4), {"on_tile": None}),
    "upscaler.array": (("upscaler", "image"), {"wrap": "none"}),
    "upscaler.enlarge": (("upscaler", "image", 64), {}),
    "runtime.torch_threads": ((2,), {}),
    "runtime.set_torch_threads": ((2,), {}),
    "runtime.cuda_device_count": ((), {}),
}


@pytest.mark.parametrize("name", sorted(registry.COMPONENTS))
def test_every_registry_component_is_here_with_its_signature(name: str) -> None:
    component = registry.component(name)
    assert callable(component)
    if name == "engine.diffusion":
        assert component.__name__ == "DiffusionEngine"
        return
    args, kwargs = CALLS[name]
    inspect.signature(component).bind(*args, **kwargs)  # TypeError if the registry's call fails


def test_torch_threads_sets_then_restores() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with runtime.torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), runtime.torch_threads(target):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with runtime.torch_threads(0):  # 0: leave them as they are
        assert torch.get_num_threads() == before


def test_set_torch_threads_and_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        runtime.set_torch_threads(1)
        assert torch.get_num_threads() == 1
        runtime.set_torch_threads(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert runtime.cuda_device_count() == (
        torch.cuda.device_count() if torch.cuda.is_available() else 0
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.cuda_device_count() == 0
