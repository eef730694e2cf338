"""Progress reporting, one way for every command.

A long step reports `Progress` events (``done`` of ``total`` in a ``unit``: nodes, outputs,
steps, tiles, frames) to a `ProgressCallback`; the command line draws one bar per unit, a
notebook may print them or ignore them. Work running on Dask workers reports through an
`EventChannel`: the task sends through an `emitter` of its topic, the client receives the
payloads on its event thread.

Ctrl-C: under `sigint_recorded` (the command line installs it) an interrupt is also recorded,
and every `report` re-raises it. Python's own KeyboardInterrupt may land inside a garbage
collector or finaliser callback, where it is printed and swallowed; the next progress event
then still stops the work.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["EventChannel", "Progress", "ProgressCallback", "emitter", "report",
           "sigint_recorded"]

_interrupted = threading.Event()


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` (None: not known yet) ``unit`` of one step of a command.

    ``skipped`` of the ``done`` were not computed in this run (a resumed build's stored nodes),
    so a rate counts only the others; ``note`` is a line worth showing once (a dashboard link).
    """

    unit: str
    done: int
    total: int | None
    skipped: int = 0
    note: str | None = None


ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, unit: str, done: int, total: int | None,
           **extra: Any) -> None:
    """Call ``callback`` (when there is one) with a `Progress`; raise `KeyboardInterrupt`
    if Ctrl-C was pressed under `sigint_recorded` (however its own exception fared)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
    if callback is not None:
        callback(Progress(unit, done, total, **extra))


class EventChannel:
    """Payloads `emit`-ted by tasks on a unique topic, handed to ``handler`` on the client.

    A context manager: subscribed on entry, unsubscribed on exit. Events may trail the task
    results that caused them; `settle` waits a moment for them.
    """

    def __init__(self, client: Client, handler: Callable[[Any], None]) -> None:
        self.client = client
        self.handler = handler
        self.topic = f"hypermosaic-{uuid.uuid4().hex}"

    def __enter__(self) -> EventChannel:
        self.client.subscribe_topic(self.topic, lambda event: self.handler(event[1]))
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.unsubscribe_topic(self.topic)

    @staticmethod
    def settle(finished: Callable[[], bool], seconds: float = 5.0) -> None:
        """Wait up to ``seconds`` for ``finished()``: the last events to land."""
        deadline = time.monotonic() + seconds
        while not finished() and time.monotonic() < deadline:
            time.sleep(0.02)


def emitter(topic: str) -> Callable[[Any], None]:
    """A function sending payloads from the running Dask task to the `EventChannel` of
    ``topic``. The worker is looked up now, in the task's thread, so the function may be
    called from any thread the task's work runs in (libvips calls back from its own)."""
    from distributed import get_worker  # on a worker: distributed is loaded already

    worker = get_worker()
    return lambda payload: worker.log_event(topic, payload)


def _record_sigint(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


@contextmanager
def sigint_recorded() -> Iterator[None]:
    """Within: Ctrl-C raises `KeyboardInterrupt` as usual and is recorded for `report`.
    Only in the main thread (elsewhere signals cannot be set, and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, _record_sigint)
    _interrupted.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        _interrupted.clear()
