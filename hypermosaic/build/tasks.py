"""Build task code that runs on Dask workers (and in-process for `regenerate_node`).

A build registers one `hypermosaic.executor.WorkerState` per run (`build_state`, named after
the build's fingerprint): it carries the engine's settings and torch threads, loads the engine
when registered (a model that cannot load fails there, once) and the ESRGAN init upscalers on
first use, once per worker. The primary image travels once per worker in a second, data-only
state (`primary_state`). Tasks take encoded images and return encoded images, so the client
alone writes files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hypermosaic import registry
from hypermosaic.build.engines import Engine, PrimaryJob, TileContext, TileJob
from hypermosaic.executor import ModelCache, WorkerState, worker_state
from hypermosaic.identity import BICUBIC
from hypermosaic.images import decode, encode, resize

__all__ = [
    "Encoding",
    "EngineSpec",
    "build_state",
    "create_engine",
    "load_engine",
    "cut_tiles",
    "make_primary",
    "make_tiles",
    "make_tiles_task",
    "primary_state",
    "state_names",
]



@dataclass(frozen=True)
class Encoding:
    """How node images are encoded on the wire and on disk."""

    format: str = "png"
    quality: int = 92


@dataclass(frozen=True)
class EngineSpec:
    """What a build's workers load: the engine by name and settings, and the device and dtype
    of its ESRGAN init upscalers (``diffusion``'s: `hypermosaic.registry.load_upscaler` with
    ``init``, so ``auto`` is float32 on any CPU and inits do not change between machines)."""

    engine: str
    settings: tuple[tuple[str, Any], ...]
    device: str = "auto"
    dtype: str = "auto"

    def load_engine(self, cache: ModelCache) -> Engine:
        """The engine, from ``cache`` (loaded the first time)."""
        engine: Engine = cache.get(("engine", self), lambda: create_engine(
            self.engine, dict(self.settings)))
        return engine

    def upscalers(self, cache: ModelCache) -> Callable[[str], Any]:
        """ESRGAN init upscalers by name, each loaded once into ``cache``."""
        return lambda name: cache.get(("upscaler", name, self.device, self.dtype), lambda: (
            registry.load_upscaler(name, device=self.device, dtype=self.dtype, init=True)))


def create_engine(name: str, settings: dict[str, Any]) -> Engine:
    """Build an engine by name: ``recolor`` (numpy, here) or ``diffusion`` (the torch side,
    through `hypermosaic.registry`)."""
    if name == "recolor":
        from hypermosaic.build.recolor import RecolorEngine

        return RecolorEngine(**settings)
    if name == "diffusion":
        engine: Engine = registry.diffusion_engine(settings)
        return engine
    raise ValueError(f"unknown engine {name!r}")


def state_names(build: str) -> tuple[str, str]:
    """The names of the engine state and the primary-image state of the build ``build`` (its
    fingerprint): two builds on one cluster never share them."""
    return f"hypermosaic-build-{build}", f"hypermosaic-primary-{build}"


def build_state(build: str, spec: EngineSpec, torch_threads: int) -> WorkerState:
    """The worker state of a build: its engine, loaded at registration, and torch threads
    (0: leave them)."""
    return WorkerState(state_names(build)[0], torch_threads=torch_threads,
                       data={"spec": spec}, preload=load_engine)


def load_engine(state: WorkerState) -> Engine:
    """The engine of a build's worker state, loaded into its model cache the first time."""
    spec: EngineSpec = state.data["spec"]
    return spec.load_engine(state.models)


def primary_state(build: str, data: bytes) -> WorkerState:
    """Hands every worker, replacements included, the primary image bytes once."""
    return WorkerState(state_names(build)[1], data={"primary": data})


def make_primary(build: str, job: PrimaryJob, encoding: Encoding) -> bytes:
    """Generate the root image from its prompt, with this worker's engine."""
    engine = load_engine(worker_state(state_names(build)[0]))
    return encode(engine.primary(job), encoding.format, encoding.quality)


def cut_tiles(
    parent: np.ndarray,
    grid: int,
    size: int,
    jobs: list[TileJob],
    upscalers: Callable[[str], Any] | None = None,
) -> np.ndarray:
    """The tiles of ``jobs`` cut from their parent and upsampled to ``size`` (``(B, s, s, 3)``).

    A job's ``init_upscale`` says how: ``bicubic``, or an ESRGAN model that ``upscalers``
    gives by name (`hypermosaic.registry.enlarge`), each tile on its own so that its init does
    not depend on its batch-mates.
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
            upscaler = upscalers(job.init_upscale)
            inits.append(registry.enlarge(upscaler, np.ascontiguousarray(crop), size))
    return np.stack(inits)


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
    build: str, parent_data: bytes, grid: int, jobs: list[TileJob], encoding: Encoding
) -> list[bytes]:
    """`make_tiles` on a worker: its engine, upscalers and the primary image come from the
    worker states of the build ``build``."""
    engine_name, primary_name = state_names(build)
    state = worker_state(engine_name)
    spec: EngineSpec = state.data["spec"]
    primary = worker_state(primary_name).data["primary"]
    return make_tiles(load_engine(state), parent_data, primary, grid, jobs, encoding,
                      spec.upscalers(state.models))
