"""Small fixtures-as-functions shared by several test modules: a real photo, tiny weights."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from hypermosaic.pipelines import esrgan


def astronaut(height: int, width: int, top: int = 0, left: int = 0) -> np.ndarray:
    """A crop of scikit-image's astronaut photo (CC0): real edges and texture, RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[top : top + height, left : left + width])


def save_srvgg(path: Path, scale: int, seed: int = 0) -> Path:
    """A small seeded SRVGGNetCompact (8 features, 2 convs) as a user's ``.safetensors``:
    quick on any worker; its ``scale`` is read back from the weights."""
    torch.manual_seed(seed)
    save_file(esrgan.SRVGGNetCompact(num_feat=8, num_conv=2, upscale=scale).state_dict(), path)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG whose header claims ``width`` x ``height`` RGB pixels and that holds almost
    none: for the checks that refuse absurd sizes before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
