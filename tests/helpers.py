"""Small fixtures-as-functions shared by several test modules: a real photo, tiny weights.

torch and the build command are imported by the helpers that need them, so that a torch-free
test (or one of another command) can use the rest.
"""

from __future__ import annotations

import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def astronaut(height: int, width: int, top: int = 0, left: int = 0) -> np.ndarray:
    """A crop of scikit-image's astronaut photo (CC0): real edges and texture, RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[top : top + height, left : left + width])


def save_srvgg(path: Path, scale: int, seed: int = 0) -> Path:
    """A small seeded SRVGGNetCompact (8 features, 2 convs) as a user's ``.safetensors``:
    quick on any worker; its ``scale`` is read back from the weights."""
    import torch
    from safetensors.torch import save_file

    from hypermosaic.pipelines.esrgan.networks import SRVGGNetCompact

    torch.manual_seed(seed)
    save_file(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=scale).state_dict(), path)
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


def make_config(examples_dir, out, **raw):
    """A small recolor build config over the examples' cat photo, ``raw`` laid over it."""
    from hypermosaic.build.config import build_config_from_dict

    raw = {"seed": 3, "size": 64, "grid": 2, "depth": 2, "engine": "recolor",
           "primary": {"image": "images/chelsea.png"}, "tiles": {"strength": 0.6},
           "out": str(out), **raw}
    return build_config_from_dict(raw, base=examples_dir, source="test.toml")


def node_files(out: Path) -> dict[str, bytes]:
    """Every node image of a build under ``out``, by path relative to it."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "nodes").rglob("*.png"))}


def per_frame_palette_gif(frames: list[np.ndarray], fps: float) -> bytes:
    """The GIF as `hypermosaic video` wrote it before `GifEncoder`: every frame whole, quantised
    to its own 256 colours, through PyAV's GIF encoder (the baseline of the GIF's size)."""
    import io

    import av
    from PIL import Image

    out = io.BytesIO()
    container = av.open(out, mode="w", format="gif")
    stream = container.add_stream("gif", rate=round(fps))
    stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "pal8"
    for index, rgb in enumerate(frames):
        image = Image.fromarray(rgb).quantize(256)
        palette = np.zeros((256, 4), np.uint8)
        palette[:, 0] = 255
        colours = np.array(image.getpalette()[:768], np.uint8).reshape(-1, 3)
        palette[: len(colours), 1:] = colours
        frame = av.VideoFrame.from_ndarray((np.asarray(image), palette), format="pal8")
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return out.getvalue()


@contextmanager
def running_server(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m hypermosaic ARGS`` (``serve`` or ``explore`` with ``--port 0``) as a user
    runs it: yields the URL its first line prints and the process, which is stopped with
    Ctrl-C at the end (if still running) and must then exit 0 without a traceback."""
    process = subprocess.Popen([sys.executable, "-m", "hypermosaic", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert url is not None, line + (process.stderr.read() if process.poll() is not None else "")
    try:
        yield url.group(0), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        errors = process.stderr.read()
        assert "Traceback" not in errors and errors.strip().endswith("stopped"), errors


def cache_model(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay the model folder ``source`` out as the Hugging Face hub cache does
    (``snapshots/<revision>/`` and ``refs/main``); returns the repository's cache folder."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, root / "snapshots" / revision)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    return root


ZERO = {"linear_start": 0.0, "linear_end": 0.0, "clustered": 0.0, "threshold": 0.0}
"""Image-prompt settings that move nothing."""
STRONG = {"linear_start": 0.5, "linear_end": 1.0, "max_image_guidance": 1.0,
          "threshold_floor": 0.0}
"""Image-prompt settings that move every token a lot."""


def node_bytes(out: Path) -> dict[str, bytes]:
    """Every PNG node of the build in ``out``, by path relative to its nodes folder."""
    nodes = out / "nodes"
    return {str(p.relative_to(nodes)): p.read_bytes() for p in sorted(nodes.rglob("*.png"))}


def diffusion_raw_config(tiny_dir: Path, out: Path,
                         image_prompt: dict[str, Any] | None = None,
                         **extra: Any) -> dict[str, Any]:
    """A small diffusion build on the tiny model in ``tiny_dir`` (size 64, grid 2, depth 1),
    with an ``[image_prompt]`` block when given and ``extra`` keys laid over it."""
    raw: dict[str, Any] = {
        "engine": "diffusion", "size": 64, "grid": 2, "depth": 1, "seed": 5, "out": str(out),
        "primary": {"prompt": "a turtle", "steps": 2},
        "tiles": {"prompt": "shell {row} {col}", "strength": 0.6, "steps": 3, "guidance": 5.0},
        "diffusion": {"model": str(tiny_dir), "batch_size": 4, "device": "cpu"},
        **extra,
    }
    if image_prompt is not None:
        raw["image_prompt"] = image_prompt
    return raw


def diffusion_config(tiny_dir: Path, out: Path, image_prompt: dict[str, Any] | None = None,
                     **extra: Any) -> Any:
    """`diffusion_raw_config` validated (paths relative to ``examples/``)."""
    from hypermosaic.build.config import build_config_from_dict

    return build_config_from_dict(diffusion_raw_config(tiny_dir, out, image_prompt, **extra),
                                  base=EXAMPLES, source="test.toml")


def count_calls(monkeypatch: Any, owner: Any, name: str) -> list[int]:
    """Wrap ``owner.name`` (a function taking ``(model, images, ...)``) for this test; the
    returned list gets the number of images of every call."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(model: Any, images: Any, *rest: Any) -> Any:
        calls.append(len(images))
        return original(model, images, *rest)

    monkeypatch.setattr(owner, name, counted)
    return calls
