"""Nodes made on demand, at any depth, byte for byte as a batch build makes them.

A viewer zooming into regions nobody built (`hypermosaic.explore`) and a video following a path
deeper than its build need single nodes, not whole levels. `NodeMaker` makes them on the build's
Dask pool with the build's own task code (`hypermosaic.build.tasks`): the same worker states,
the same fixed batch of siblings (`node_batch`, the batches of an unfocused build), the same
address-derived seeds. So a node made here equals the node a batch build of the same config
makes, and a later ``hypermosaic build --depth N`` reuses it (and the other way round).

Depth has no limit here: below the config's ``depth`` the grid's last entry repeats
(`BuildConfig.grid_at`) and levels take their settings as ever (``[tiles]`` and ``[levels.N]``).
The manifest records the fingerprints of every depth made (`NodeMaker.record_depth`), so a
store never mixes deep nodes of different settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, Future, wait

from hypermosaic.build.checks import engine_spec, worker_threads
from hypermosaic.build.config import BuildConfig
from hypermosaic.build.engines import PrimaryJob
from hypermosaic.build.fingerprint import fingerprints
from hypermosaic.build.plan import batch_size, sibling_batches, tile_jobs
from hypermosaic.build.tasks import (
    Encoding,
    build_state,
    make_primary,
    make_tiles_task,
    primary_state,
    state_names,
)
from hypermosaic.executor import release_states
from hypermosaic.images import encode
from hypermosaic.store import Store
from hypermosaic.tree import ROOT, Address, Plan, address_key, node_seed

__all__ = [
    "NodeBatch",
    "NodeMaker",
    "check_store",
    "ensure_root",
    "new_manifest",
    "node_batch",
    "submit_batch",
    "unbounded_plan",
]


def unbounded_plan(config: BuildConfig, depth: int) -> Plan:
    """The unfocused plan of ``config`` cut down to ``depth`` levels (any depth)."""
    return Plan(config.size, tuple(config.grid_at(level) for level in range(depth)))


@dataclass(frozen=True)
class NodeBatch:
    """A fixed batch of siblings: ``index`` of their parent's `sibling_batches`."""

    parent: Address
    index: int
    children: tuple[Address, ...]


def node_batch(config: BuildConfig, address: Address) -> NodeBatch:
    """The fixed batch that makes ``address`` (an unfocused build's: a pure function of the
    config and the address)."""
    if not address:
        raise ValueError("the root is not made from a parent")
    parent = address[:-1]
    batches = sibling_batches(unbounded_plan(config, len(address)), parent, batch_size(config))
    index = next(i for i, batch in enumerate(batches) if address in batch)
    return NodeBatch(parent, index, tuple(batches[index]))


def submit_batch(client: Client, build: str, config: BuildConfig, store: Store,
                 parent: Address, children: list[Address], encoding: Encoding, key: str,
                 priority: int = 0) -> Future:
    """Submit the task that makes ``children`` from their stored ``parent`` (the worker states
    of ``build`` must be registered)."""
    return client.submit(
        make_tiles_task, build, store.read_node(parent), config.grid_at(len(parent)),
        tile_jobs(config, children), encoding, key=key, retries=1, priority=priority,
    )


def ensure_root(config: BuildConfig, store: Store, client: Client, build: str,
                image: np.ndarray | None, encoding: Encoding) -> bool:
    """Store the root (the primary ``image``, or generated from the prompt on the pool) unless
    it is stored, and hand it to every worker; returns whether it was made now."""
    made = False
    if not store.has(ROOT):
        if image is None:
            primary = config.primary
            job = PrimaryJob(node_seed(config.seed, ROOT), primary.prompt or "",
                             primary.negative_prompt, primary.steps, primary.guidance,
                             config.size)
            data = client.submit(make_primary, build, job, encoding, key=f"primary-{build}",
                                 retries=1).result()
        else:
            data = encode(image, encoding.format, encoding.quality)
        store.write_node(ROOT, data)
        made = True
    client.register_plugin(primary_state(build, store.read_node(ROOT)))
    return made


class NodeMaker:
    """Makes any node of ``config``'s unbounded tree on ``client``'s pool, into ``store``.

    Opening registers the build's worker states (the engine loads there, once) and stores the
    root if missing; `close` releases them. Only the process holding the output folder's lock
    may use one: it alone writes the store.
    """

    def __init__(self, config: BuildConfig, store: Store, client: Client,
                 primary_image: np.ndarray | None) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.encoding = Encoding(config.format, config.quality)
        self._prints = fingerprints(config)
        # the worker states' names: two sessions on one scheduler never share them
        folder = hashlib.blake2b(str(store.root.resolve()).encode(), digest_size=4).hexdigest()
        self.build = f"live-{self._prints[str(config.depth)][:8]}-{folder}"
        self._submitted = 0
        self._open(primary_image)

    def _open(self, primary_image: np.ndarray | None) -> None:
        manifest = self.store.load_manifest()
        self._prints = check_store(self.config, self.store)
        if manifest is None:
            self.store.save_manifest(new_manifest(self.config, self._prints))
        self.store.remove_temporaries()
        self.client.register_plugin(build_state(self.build, engine_spec(self.config),
                                                worker_threads(self.config)))
        ensure_root(self.config, self.store, self.client, self.build, primary_image,
                    self.encoding)

    def record_depth(self, depth: int) -> None:
        """Record the fingerprints down to ``depth`` in the manifest before nodes that deep
        are stored, so a later build or session with other settings refuses them."""
        if str(depth) in self._prints:
            return
        self._prints = fingerprints(self.config, depth)
        manifest = self.store.load_manifest() or new_manifest(self.config, self._prints)
        recorded = manifest.get("fingerprints", {})
        manifest["fingerprints"] = {**recorded, **self._prints}
        self.store.save_manifest({k: v for k, v in manifest.items() if k != "version"})

    def submit(self, batch: NodeBatch, priority: int = 0) -> Future:
        """Start making ``batch`` (its parent must be stored)."""
        self.record_depth(len(batch.children[0]))
        self._submitted += 1
        key = (f"live-{self.build}-{address_key(batch.parent)}-{batch.index}"
               f"-{self._submitted}")
        return submit_batch(self.client, self.build, self.config, self.store, batch.parent,
                            list(batch.children), self.encoding, key, priority)

    def store_result(self, future: Future, batch: NodeBatch) -> list[Address]:
        """Write the nodes of a finished batch that are still missing; returns them. Raises
        the task's error (an `InputError` as itself)."""
        try:
            images = future.result()
        finally:
            future.release()
        written = []
        for address, data in zip(batch.children, images, strict=True):
            if not self.store.has(address):
                self.store.write_node(address, data)
                written.append(address)
        return written

    def make(self, addresses: Iterable[Address]) -> list[Address]:
        """Make every missing node of ``addresses`` and the ancestors it needs, shallow first,
        waiting for them; returns the nodes written."""
        wanted: set[Address] = set()
        for address in addresses:
            wanted.update(address[:depth] for depth in range(1, len(address) + 1))
        written: list[Address] = []
        for depth in sorted({len(address) for address in wanted}):
            batches = {node_batch(self.config, a) for a in wanted
                       if len(a) == depth and not self.store.has(a)}
            futures = {self.submit(batch): batch for batch in batches}
            wait(list(futures))
            for future, batch in futures.items():
                written.extend(self.store_result(future, batch))
        return written

    def close(self) -> None:
        """Release the workers' models and the root image."""
        release_states(self.client, *state_names(self.build))


def check_store(config: BuildConfig, store: Store) -> dict[str, str]:
    """`InputError` unless ``store`` holds nothing or nodes of ``config``'s settings at every
    depth it recorded (made live below the config's depth included); returns the
    fingerprints down to the deepest of them."""
    recorded = (store.load_manifest() or {}).get("fingerprints", {})
    prints = fingerprints(config, max([config.depth, *(int(depth) for depth in recorded)]))
    remedy = "rebuild it with hypermosaic build --force, or use another folder"
    store.check_compatible(prints, force=False, remedy=remedy)
    return prints


def new_manifest(config: BuildConfig, prints: dict[str, str]) -> dict[str, Any]:
    """The manifest of a store that nothing has built yet (incomplete, unpublished)."""
    plan = config.plan()
    return {
        "size": plan.size,
        "grids": list(plan.grids),
        "depth": plan.depth,
        "focus": None if plan.focus is None else [list(step) for step in plan.focus],
        "neighbours": plan.neighbours,
        "node_format": config.format,
        "seed": config.seed,
        "engine": config.engine,
        "fingerprints": prints,
        "complete": False,
        "failed": {},
        "published": False,
        "outputs": {},
    }

