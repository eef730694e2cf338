"""Streaming a build down the tile tree on the Dask pool.

Children are submitted as soon as their parent's image exists (no barrier between levels), most
recent parents first so the frontier stays small, with a bound on batches in flight. Workers
return encoded images; this process alone writes them, atomically, so a killed build loses at
most the tiles in flight. A failed batch is retried whole (`hypermosaic.build.plan`: batch-mates
decide diffusion pixels), recolor batches tile by tile. A lost worker costs only its batches in
flight (Dask runs them elsewhere); a lost scheduler stops the build at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Future, wait

from hypermosaic.build.config import BuildConfig
from hypermosaic.build.grow import ensure_root, submit_batch
from hypermosaic.build.plan import batch_size, sibling_batches
from hypermosaic.build.tasks import Encoding
from hypermosaic.errors import InputError
from hypermosaic.executor import lost_scheduler
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.store import Store
from hypermosaic.tree import ROOT, Address, Plan, address_key

__all__ = ["ATTEMPTS", "BuildResult", "TreeRunner"]

ATTEMPTS = 2  # submissions of a batch before its missing nodes are reported as failed


@dataclass
class BuildResult:
    """What a build did; ``failed`` maps a node address to its last error."""

    out: Path
    total: int
    computed: int = 0
    reused: int = 0
    failed: dict[Address, str] = field(default_factory=dict)
    missing: int = 0
    seconds: float = 0.0
    dashboard: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    estimate: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing


@dataclass
class _Batch:
    parent: Address
    index: int  # which of the parent's `sibling_batches`
    children: list[Address]
    attempt: int = 0




class TreeRunner:
    """Streams fixed batches of sibling tiles down the tree with a bound on work in flight."""

    def __init__(self, config: BuildConfig, plan: Plan, store: Store, encoding: Encoding,
                 client: Client, result: BuildResult, progress: ProgressCallback | None,
                 prefix: str) -> None:
        self.config = config
        self.plan = plan
        self.store = store
        self.encoding = encoding
        self.client = client
        self.result = result
        self.progress = progress
        dashboard = f"; dashboard: {result.dashboard}" if result.dashboard else ""
        self.note: str | None = f"{result.estimate}{dashboard}"
        self.batch_size = batch_size(config)
        self.queue: deque[_Batch] = deque()
        self.in_flight: dict[Future, _Batch] = {}
        self.prefix = prefix
        self._workers, self._counted = 0, -math.inf

    @property
    def max_in_flight(self) -> int:
        """Twice the workers plus one. The count is asked of the scheduler at most once a
        second (a round trip per loop would slow the loop that feeds the pool), and not once
        the scheduler is lost (the call would wait for it)."""
        now = time.monotonic()
        if now - self._counted >= 1.0 and not lost_scheduler(self.client):
            self._workers, self._counted = len(self.client.nthreads()), now
        return 2 * max(1, self._workers) + 1

    def primary(self, image: Any) -> None:
        """Store (or reuse) the root image and hand it to every worker."""
        made = ensure_root(self.config, self.store, self.client, self.prefix, image,
                           self.encoding)
        self.result.computed += int(made)
        self.result.reused += int(not made)
        for address in self._existing_below(ROOT):
            self._enqueue_children(address)

    def _existing_below(self, address: Address) -> Iterator[Address]:
        """Stored nodes at and below ``address`` (counted as reused), parents first."""
        stack = [address]
        while stack:
            node = stack.pop()
            yield node
            for child in self.plan.children(node):
                if self.store.has(child):
                    self.result.reused += 1
                    stack.append(child)

    def _enqueue_children(self, parent: Address) -> None:
        """Queue every fixed batch of the parent's children that has a node still missing."""
        for index, batch in enumerate(sibling_batches(self.plan, parent, self.batch_size)):
            if not all(self.store.has(child) for child in batch):
                self.queue.append(_Batch(parent, index, batch))

    def _submit(self, batch: _Batch) -> None:
        key = (f"tiles-{self.prefix}-{address_key(batch.parent)}-{batch.index}"
               f"x{self.batch_size}-{address_key(batch.children[0][-1:])}"
               f"x{len(batch.children)}-{batch.attempt}")
        future = submit_batch(self.client, self.prefix, self.config, self.store, batch.parent,
                              batch.children, self.encoding, key)
        self.in_flight[future] = batch

    def run(self) -> None:
        """Until the tree is done: keep the pool fed, store results, enqueue grandchildren."""
        self._report()
        while self.queue or self.in_flight:
            while self.queue and len(self.in_flight) < self.max_in_flight:
                self._submit(self.queue.pop())
            done, _ = wait(list(self.in_flight), return_when="FIRST_COMPLETED")
            for future in done:
                self._finish(future, self.in_flight.pop(future))
            self._report()

    def _finish(self, future: Future, batch: _Batch) -> None:
        """Write the batch's nodes that are still missing (stored batch-mates are kept)."""
        try:
            images = future.result()
        except Exception as exc:  # any task error is reported per tile
            if lost_scheduler(self.client):  # every future was cancelled: `open_client` says so
                raise
            self._retry_or_fail(batch, exc)
            return
        finally:
            future.release()
        for address, data in zip(batch.children, images, strict=True):
            if self.store.has(address):
                continue
            self.store.write_node(address, data)
            self.result.computed += 1
            if self.plan.is_expanded(address):
                self._enqueue_children(address)

    def _retry_or_fail(self, batch: _Batch, exc: BaseException) -> None:
        """Resubmit a failed batch; after `ATTEMPTS` submissions report its missing nodes.

        Diffusion batch-mates decide pixels, so its batch is resubmitted whole. Recolor tiles do
        not depend on one another, so its batch is split into single tiles: one bad tile then
        costs only itself.
        """
        if isinstance(exc, InputError):
            raise exc
        if batch.attempt + 1 < ATTEMPTS:
            retries = [batch.children]
            if self.config.engine == "recolor":
                retries = [[child] for child in batch.children if not self.store.has(child)]
            self.queue.extend(_Batch(batch.parent, batch.index, children, batch.attempt + 1)
                              for children in retries)
            return
        for address in batch.children:
            if not self.store.has(address):
                self.result.failed[address] = f"{type(exc).__name__}: {exc}"

    def _report(self) -> None:
        done = self.result.computed + self.result.reused
        report(self.progress, "nodes", done, self.result.total, skipped=self.result.reused,
               note=self.note)
        self.note = None

    def cancel(self) -> None:
        """Drop the work in flight (Ctrl-C or an error); stored nodes stay."""
        if self.in_flight and not lost_scheduler(self.client):
            self.client.cancel(list(self.in_flight))
            self.in_flight.clear()
