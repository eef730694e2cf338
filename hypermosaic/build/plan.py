"""The pure part of a build: which tiles run together and what each one is asked.

A batch is a fixed chunk of siblings: a parent's planned children in raster order, cut into
runs of ``batch_size`` (`sibling_batches`). Batch-mates may change a diffusion tile's pixels at
the level of float rounding, so batches are a pure function of the plan, never of what is
already stored or of what failed: a resume, a retry or `regenerate_node` re-runs a node's whole
batch, and the bytes equal those of an uninterrupted build. Node addresses, seeds and the
expansion plan itself are the shared `hypermosaic.tree`.
"""

from __future__ import annotations

from hypermosaic.build.config import BuildConfig
from hypermosaic.build.engines import TileJob
from hypermosaic.tree import Address, Plan, node_seed

__all__ = ["RECOLOR_BATCH", "batch_size", "sibling_batches", "tile_jobs"]

RECOLOR_BATCH = 64


def tile_jobs(config: BuildConfig, children: list[Address]) -> list[TileJob]:
    """The jobs of some planned nodes: their prompts, settings (image prompts included) and
    address-derived seeds."""
    jobs = []
    for address in children:
        depth = len(address)
        level = config.level(depth)
        row, col = address[-1]
        prompt, negative = level.prompts_for(depth, row, col)
        image_prompt = config.image_prompt_at(depth)
        jobs.append(TileJob(
            address=address,
            seed=node_seed(config.seed, address),
            prompt=prompt,
            negative_prompt=negative,
            strength=level.strength,
            steps=level.steps,
            guidance=level.guidance,
            init_upscale=level.init_upscale,
            image_prompt=None if image_prompt is None else tuple(image_prompt.model_dump().items()),
        ))
    return jobs


def batch_size(config: BuildConfig) -> int:
    """Tiles per task: the diffusion ``batch_size`` (it is in the fingerprints), or a fixed 64."""
    return RECOLOR_BATCH if config.engine == "recolor" else config.diffusion.batch_size


def sibling_batches(plan: Plan, parent: Address, size: int) -> list[list[Address]]:
    """The fixed batches of a parent's planned children: raster order, runs of ``size``."""
    children = plan.children(parent)
    return [children[start : start + size] for start in range(0, len(children), size)]
