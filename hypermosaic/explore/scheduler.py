"""Live scheduling: the batches viewers want, made on the pool in a fair, bounded order.

Every viewer's latest view replaces its list of wanted batches (`LiveScheduler.want`), so work
for nodes that left the view is dropped before it starts; batches in flight finish and are kept.
A thread keeps at most ``max_in_flight`` batches on the pool, taking them from the viewers in
turn (round robin: several browsers share the pool fairly), each viewer's list in its own order
(nearest its view's centre first). Landed nodes are written by `hypermosaic.build.NodeMaker`
and announced through ``on_landed``. A batch that fails twice is given up (``on_failed``): its
nodes keep showing their parent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from distributed import Future

from hypermosaic.build import NodeBatch, NodeMaker
from hypermosaic.tree import Address

__all__ = ["ATTEMPTS", "LiveScheduler", "LiveStats", "WANTED_LIMIT"]

ATTEMPTS = 2
WANTED_LIMIT = 256
"""Most batches one viewer may have waiting; a view asking for more keeps its first ones."""


@dataclass
class LiveStats:
    """Counts for the viewer's status line and the tests."""

    made: int = 0
    batches: int = 0
    failed: int = 0
    in_flight: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)


class LiveScheduler:
    """Makes the batches viewers want on ``maker``'s pool, fairly and boundedly (see module)."""

    def __init__(self, maker: NodeMaker, max_in_flight: int,
                 on_landed: Callable[[list[Address]], None],
                 on_failed: Callable[[list[Address], str], None]) -> None:
        self.maker = maker
        self.max_in_flight = max_in_flight
        self.on_landed = on_landed
        self.on_failed = on_failed
        self.stats = LiveStats()
        self._wanted: dict[int, list[NodeBatch]] = {}
        self._turn: list[int] = []
        self._in_flight: dict[Future, tuple[NodeBatch, int]] = {}
        self._attempts: dict[NodeBatch, int] = {}
        self._given_up: set[NodeBatch] = set()
        self._retry: list[NodeBatch] = []
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="hypermosaic-live", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def want(self, viewer: int, batches: list[NodeBatch]) -> None:
        """Replace ``viewer``'s wanted batches (in the order to make them)."""
        with self._changed:
            self._wanted[viewer] = [b for b in batches if b not in self._given_up][:WANTED_LIMIT]
            if viewer not in self._turn:
                self._turn.append(viewer)
            self.stats.waiting = sum(len(v) for v in self._wanted.values())
            self._changed.notify()

    def forget(self, viewer: int) -> None:
        """A viewer left: drop what it alone was waiting for."""
        with self._changed:
            self._wanted.pop(viewer, None)
            if viewer in self._turn:
                self._turn.remove(viewer)
            self.stats.waiting = sum(len(v) for v in self._wanted.values())

    def stop(self) -> None:
        """Stop the thread and cancel the batches in flight (their nodes are not stored)."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join(timeout=30)
        if self._in_flight:
            self.maker.client.cancel(list(self._in_flight))
            self._in_flight.clear()

    def _next(self) -> NodeBatch | None:
        """The next batch to start: the first of the next viewer's list, in turn (under lock)."""
        running = {batch for batch, _ in self._in_flight.values()}
        if self._retry:
            return self._retry.pop(0)
        for _ in range(len(self._turn)):
            viewer = self._turn.pop(0)
            self._turn.append(viewer)
            queue = self._wanted.get(viewer, [])
            while queue:
                batch = queue.pop(0)
                if batch in running or batch in self._given_up:
                    continue
                if all(self.maker.store.has(child) for child in batch.children):
                    continue
                if not self.maker.store.has(batch.parent):
                    continue  # its parent is on its way; the view asks again when it lands
                return batch
        return None

    def _run(self) -> None:
        """Keep the pool fed; wake on a new view or a finished batch (`_wake`), never later."""
        while True:
            with self._changed:
                if self._stopped:
                    return
                while len(self._in_flight) < self.max_in_flight:
                    batch = self._next()
                    if batch is None:
                        break
                    future = self.maker.submit(batch)
                    self._in_flight[future] = (batch, self._attempts.get(batch, 0))
                    future.add_done_callback(self._wake)
                self.stats.in_flight = len(self._in_flight)
                self.stats.waiting = sum(len(v) for v in self._wanted.values())
                finished = [f for f in self._in_flight if f.done()]
                if not finished:
                    self._changed.wait(timeout=1.0)
                    continue
                landing = [(f, *self._in_flight.pop(f)) for f in finished]
            for future, batch, attempt in landing:
                self._land(future, batch, attempt)

    def _wake(self, future: Future) -> None:
        """A batch finished (called from Dask's callback thread)."""
        with self._changed:
            self._changed.notify()

    def _land(self, future: Future, batch: NodeBatch, attempt: int) -> None:
        """Store a finished batch and announce it, or retry or give up a failed one."""
        try:
            written = self.maker.store_result(future, batch)
        except Exception as exc:  # a task error is the batch's, never the server's
            if attempt + 1 < ATTEMPTS:
                with self._changed:
                    self._attempts[batch] = attempt + 1
                    self._retry.append(batch)
                return
            message = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
            with self._changed:
                self._given_up.add(batch)
            self.stats.failed += 1
            self.stats.errors = [*self.stats.errors[-9:], message]
            self.on_failed(list(batch.children), message)
            return
        self.stats.batches += 1
        self.stats.made += len(written)
        if written:
            self.on_landed(written)
