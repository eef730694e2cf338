"""A simulated GPU for benchmarks: the diffusion engine replaced by a fixed latency per batch.

The build runs its real path (runner, Dask client, task code, PNG encoding, store writes); only
the model is swapped, through the registry's component table (`hypermosaic.registry.COMPONENTS`,
the one seam between the core and the torch side). `simulated_gpu` patches it in this process
(the client checks the model and its LoRAs), `SimulatedGPU` in every worker, before the
build's own worker state loads its engine. A batch takes ``latency`` seconds however large
(a GPU's img2img of a batch of 8), spent sleeping so that many workers share two cores; its
pixels are the tile's upsampled init plus a fixed noise texture, so each PNG is about as large
as a diffusion output's (`NOISE_BITS`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from distributed import WorkerPlugin

from hypermosaic import registry
from hypermosaic.build.engines import PrimaryJob, TileContext, TileJob

__all__ = ["MODEL", "SimulatedEngine", "SimulatedGPU", "simulated_gpu"]

MODEL = "simulated-gpu"  # the config's diffusion.model: no file, so no digest
# PNG nodes of about 1.8 bytes a pixel, as textured diffusion outputs (the build's estimate
# assumes 1.5; the bicubic init alone packs to 0.5-0.9): the init's lowest bit flipped at random
NOISE_BITS = 1
_PATCH = {
    "engine.diffusion": "benchmarks.sim_engine:SimulatedEngine",
    "model.locate": "benchmarks.sim_engine:locate",
    "lora.check": "benchmarks.sim_engine:nothing",
    "runtime.set_torch_threads": "benchmarks.sim_engine:nothing",
}


class SimulatedEngine:
    """`hypermosaic.build.engines.Engine` whose every batch takes `latency` seconds."""

    latency = 0.5  # set per worker by `SimulatedGPU`

    def __init__(self, **settings: Any) -> None:
        self.texture: np.ndarray | None = None

    def primary(self, job: PrimaryJob) -> np.ndarray:
        """A smooth colour field of the job's size, seeded, one batch's ``latency`` after
        the call (a prompt-made root, as a GPU's text-to-image would give)."""
        started = time.perf_counter()
        corners = np.random.default_rng(job.seed).integers(0, 256, (2, 2, 3)).astype(np.float32)
        ramp = np.linspace(0.0, 1.0, job.size, dtype=np.float32)[:, None, None]
        top = corners[0, 0] * (1 - ramp) + corners[0, 1] * ramp  # (size, 1, 3) along x
        bottom = corners[1, 0] * (1 - ramp) + corners[1, 1] * ramp
        image = top.transpose(1, 0, 2) * (1 - ramp) + bottom.transpose(1, 0, 2) * ramp
        time.sleep(max(0.0, self.latency - (time.perf_counter() - started)))
        return np.rint(image).astype(np.uint8)

    def tiles(self, inits: np.ndarray, jobs: Sequence[TileJob], context: TileContext
              ) -> np.ndarray:
        """Each init with the texture (shifted by its seed) XORed in, returned ``latency`` after
        the call: the simulation's own pixel work is kept small, as a GPU's is for its host."""
        started = time.perf_counter()
        size = inits.shape[1]
        if self.texture is None or self.texture.shape[1] != size:
            rng = np.random.default_rng(0)
            self.texture = rng.integers(0, 1 << NOISE_BITS, (2 * size, size, 3), np.uint8)
        out = np.empty_like(inits)
        for i, job in enumerate(jobs):  # a view of the texture shifted by the seed: no copy
            offset = job.seed % size
            np.bitwise_xor(inits[i], self.texture[offset : offset + size], out=out[i])
        time.sleep(max(0.0, self.latency - (time.perf_counter() - started)))
        return out


def locate(model: str, config: str | None = None, *, key: str) -> str:
    """The simulated model is always there."""
    return model


def nothing(*args: Any, **kwargs: Any) -> None:
    """No LoRA to check, no torch threads to set."""


def _patch(latency: float) -> dict[str, str]:
    """Point the registry at the simulation in this process; returns what it replaced."""
    before = {name: registry.COMPONENTS[name] for name in _PATCH}
    registry.COMPONENTS.update(_PATCH)
    SimulatedEngine.latency = latency
    return before


@contextmanager
def simulated_gpu(latency: float) -> Iterator[None]:
    """The registry of this process patched to the simulation while in the block."""
    before = _patch(latency)
    try:
        yield
    finally:
        registry.COMPONENTS.update(before)


class SimulatedGPU(WorkerPlugin):
    """Patches each worker's registry; register it before the build starts."""

    name = "hypermosaic-bench-simulated-gpu"

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def setup(self, worker: Any) -> None:
        _patch(self.latency)
