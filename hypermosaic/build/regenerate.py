"""One node computed again in this process, byte for byte as the build made it.

This is the same code path as a build's worker (`hypermosaic.build.tasks.make_tiles`), with
the same fixed batch and torch threads, so it serves to check a build, to repair a node, and
(later) to make nodes on demand while a viewer zooms.
"""

from __future__ import annotations

from hypermosaic import registry
from hypermosaic.build.checks import engine_spec, worker_threads
from hypermosaic.build.config import BuildConfig
from hypermosaic.build.plan import batch_size, sibling_batches, tile_jobs
from hypermosaic.build.tasks import Encoding, make_tiles
from hypermosaic.errors import InputError
from hypermosaic.executor import ModelCache
from hypermosaic.store import Store
from hypermosaic.tree import ROOT, Address, address_key

__all__ = ["regenerate_node"]


def regenerate_node(config: BuildConfig, address: Address) -> bytes:
    """Compute one node's encoded image in this process, from its stored parent.

    The node's whole batch (`sibling_batches`) is computed, as the build computed it, and this
    node's bytes returned: they equal the build's, since a node depends only on its parent,
    the primary image, its settings, its address-derived seed and its fixed batch-mates.
    """
    plan = config.plan()
    address = plan.validate_address(address)
    if not address:
        raise InputError("address: the root is not computed from a parent")
    parent = address[:-1]
    batch = next((b for b in sibling_batches(plan, parent, batch_size(config)) if address in b),
                 None)
    if batch is None:
        raise InputError(f"address: {address_key(address)} is not in this build's plan")
    store = Store(config.out, config.format)
    for needed in (parent, ROOT):
        if not store.has(needed):
            raise InputError(f"{store.node_path(needed)}: missing; build the parent first")
    spec, models = engine_spec(config), ModelCache()
    with registry.torch_threads(worker_threads(config)):
        grid = plan.grids[len(parent)]
        images = make_tiles(spec.load_engine(models), store.read_node(parent),
                            store.read_node(ROOT), grid, tile_jobs(config, batch),
                            Encoding(config.format, config.quality), spec.upscalers(models))
    return images[batch.index(address)]
