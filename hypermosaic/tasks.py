"""Task code that runs on Dask workers.

It lives in an importable module (Dask pickles functions from ``__main__`` with their globals, so a
model cache there would reload every task). The engine is loaded once per worker by
`EnginePlugin`, with the ESRGAN init upscalers (`Upscalers`) on first use; tasks take encoded
images and return encoded images, so the client alone writes files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker

from hypermosaic.config import BICUBIC
from hypermosaic.engines import Engine, PrimaryJob, TileContext, TileJob, create_engine
from hypermosaic.images import decode, encode, resize

__all__ = [
    "EnginePlugin",
    "Encoding",
    "PrimaryImagePlugin",
    "Upscalers",
    "cut_tiles",
    "make_primary",
    "make_tiles",
    "make_tiles_task",
    "torch_threads",
]

PLUGIN_NAME = "hypermosaic-engine"
PRIMARY_PLUGIN_NAME = "hypermosaic-primary"


@dataclass(frozen=True)
class Encoding:
    """How node images are encoded on the wire and on disk."""

    format: str = "png"
    quality: int = 92


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (0: leave them), then restore.

    On the CPU the thread count decides the order of float sums, so diffusion pixels depend on
    it: a build's workers and `hypermosaic.build.regenerate_node` must use the same count.
    """
    if not count:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Upscalers:
    """ESRGAN models by name on one device and dtype (as ``diffusion.device`` and
    ``diffusion.dtype``: `hypermosaic.pipelines.models.resolve_device_dtype`), each loaded on
    first use and kept; safe to share between a worker's threads."""

    def __init__(self, device: str = "auto", dtype: str = "auto") -> None:
        self.device = device
        self.dtype = dtype
        self.models: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, name: str) -> Any:
        with self.lock:
            if name not in self.models:
                from hypermosaic.pipelines.esrgan import load_upscaler
                from hypermosaic.pipelines.models import resolve_device_dtype

                device, dtype = resolve_device_dtype(self.device, self.dtype)
                self.models[name] = load_upscaler(
                    name, device=device, dtype=str(dtype).removeprefix("torch.")
                )
            return self.models[name]

    def clear(self) -> None:
        """Drop every loaded model (a worker's teardown)."""
        with self.lock:
            self.models.clear()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (sent to workers) without its models or lock: each worker loads its own."""
        return {"device": self.device, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["device"], state["dtype"])


class EnginePlugin(WorkerPlugin):
    """Loads the engine once per worker (again on a replacement worker), frees it on teardown."""

    name = PLUGIN_NAME

    def __init__(
        self,
        engine: str,
        settings: dict[str, Any],
        torch_threads: int = 0,
        upscalers: Upscalers | None = None,
    ) -> None:
        self.engine_name = engine
        self.settings = settings
        self.torch_threads = torch_threads
        self.engine: Engine | None = None
        self.upscalers = upscalers or Upscalers()

    def setup(self, worker: Any) -> None:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        self.engine = create_engine(self.engine_name, self.settings)

    def teardown(self, worker: Any) -> None:
        self.engine = None
        self.upscalers.clear()


class PrimaryImagePlugin(WorkerPlugin):
    """Hands every worker, replacements included, the primary image bytes once."""

    name = PRIMARY_PLUGIN_NAME

    def __init__(self, data: bytes) -> None:
        self.data = data


def _engine() -> Engine:
    return get_worker().plugins[PLUGIN_NAME].engine


def make_primary(job: PrimaryJob, encoding: Encoding) -> bytes:
    """Generate the root image from its prompt, with this worker's engine."""
    return encode(_engine().primary(job), encoding.format, encoding.quality)


def cut_tiles(
    parent: np.ndarray,
    grid: int,
    size: int,
    jobs: list[TileJob],
    upscalers: Callable[[str], Any] | None = None,
) -> np.ndarray:
    """The tiles of ``jobs`` cut from their parent and upsampled to ``size`` (``(B, s, s, 3)``).

    A job's ``init_upscale`` says how: ``bicubic``, or an ESRGAN model that ``upscalers``
    gives by name (`hypermosaic.pipelines.tiled_upscale.enlarge`), each tile on its own so
    that its init does not depend on its batch-mates.
    """
    tile = parent.shape[0] // grid
    inits = []
    for job in jobs:
        r, c = job.address[-1]
        crop = parent[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
        if job.init_upscale == BICUBIC:
            inits.append(resize(crop, size, size))
        elif upscalers is None:
            raise ValueError(f"init_upscale: {job.init_upscale!r} but no upscalers were given")
        else:
            inits.append(_enlarge(upscalers(job.init_upscale), crop, size))
    return np.stack(inits)


def _enlarge(upscaler: Any, crop: np.ndarray, size: int) -> np.ndarray:
    from hypermosaic.pipelines.tiled_upscale import enlarge  # torch: only when a model is used

    return enlarge(upscaler, np.ascontiguousarray(crop), size)


def make_tiles(
    engine: Engine,
    parent_data: bytes,
    primary_data: bytes,
    grid: int,
    jobs: list[TileJob],
    encoding: Encoding,
    upscalers: Callable[[str], Any] | None = None,
) -> list[bytes]:
    """Turn a batch of sibling tiles into encoded sub-images, in the order of ``jobs``;
    ``upscalers`` as in `cut_tiles`."""
    parent = decode(parent_data)
    size = parent.shape[0]
    context = TileContext(parent=parent, grid=grid, primary=decode(primary_data))
    images = engine.tiles(cut_tiles(parent, grid, size, jobs, upscalers), jobs, context)
    return [encode(image, encoding.format, encoding.quality) for image in images]


def make_tiles_task(
    parent_data: bytes, grid: int, jobs: list[TileJob], encoding: Encoding
) -> list[bytes]:
    """`make_tiles` on a worker: its engine, upscalers and the primary image come from the
    plugins."""
    plugins = get_worker().plugins
    primary = plugins[PRIMARY_PLUGIN_NAME].data
    plugin = plugins[PLUGIN_NAME]
    return make_tiles(plugin.engine, parent_data, primary, grid, jobs, encoding, plugin.upscalers)
