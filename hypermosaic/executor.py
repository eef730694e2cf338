"""The Dask worker pool every long job runs on, and what each worker keeps between tasks.

By default a local cluster sized for the machine: one worker per CUDA GPU, pinned to it through
``CUDA_VISIBLE_DEVICES``, or, on CPU, single-threaded worker processes (one per core for numpy
work, one for torch work, whose intra-op threads then use the cores). With a scheduler address,
attach to an existing cluster started elsewhere (``dask scheduler`` / ``dask worker``), whose
workers must run this hypermosaic (checked when connecting); losing its scheduler stops the job
with one line.

A job registers one `WorkerState` plugin: its `ModelCache` loads each model the job's tasks ask
for once per worker (through `hypermosaic.registry`) and frees them on teardown, and its
``data`` hands every worker, replacements included, what all tasks share. Task code lives in
importable modules (Dask pickles functions from ``__main__`` with their globals, so a cache
there would reload with every task).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from distributed import (
    Client,
    LocalCluster,
    Nanny,
    Scheduler,
    SpecCluster,
    WorkerPlugin,
    get_worker,
)
from distributed.comm import parse_address
from distributed.comm.addressing import parse_host_port
from distributed.utils import silence_logging_cmgr

from hypermosaic import registry
from hypermosaic.errors import BuildError, HypermosaicError, InputError

__all__ = [
    "ModelCache",
    "WorkerState",
    "check_scheduler_address",
    "check_workers",
    "cpu_count",
    "lost_scheduler",
    "open_client",
    "release_states",
    "worker_state",
]

_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ModelCache:
    """Models by key, each loaded on first use and kept; safe to share between threads.

    Pickled (sent to workers) empty: each process loads its own.
    """

    def __init__(self) -> None:
        self.models: dict[Any, Any] = {}
        self.lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        """The model stored under ``key``, loaded by ``load()`` the first time."""
        with self.lock:
            if key not in self.models:
                self.models[key] = load()
            return self.models[key]

    def clear(self) -> None:
        """Drop every model (a worker's teardown)."""
        with self.lock:
            self.models.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


class WorkerState(WorkerPlugin):
    """One job's state on every worker: a `ModelCache`, shared ``data`` and torch threads.

    Callers derive ``name`` from the job (registering the same job's state twice is
    harmless; two jobs on one cluster keep apart) and unregister it when the job ends, which
    frees its models. ``torch_threads`` (0: leave them) is set once per worker, before any
    model loads; ``preload(state)`` loads what every task needs when the state is registered,
    so a model that cannot load fails the registration, once, instead of every task.
    """

    def __init__(self, name: str, *, torch_threads: int = 0,
                 data: dict[str, Any] | None = None,
                 preload: Callable[[WorkerState], object] | None = None) -> None:
        self.name = name
        self.torch_threads = torch_threads
        self.data = data or {}
        self.preload = preload
        self.models = ModelCache()

    def setup(self, worker: Any) -> None:
        if self.torch_threads:
            registry.set_torch_threads(self.torch_threads)
        if self.preload is not None:
            self.preload(self)

    def teardown(self, worker: Any) -> None:
        self.models.clear()


def release_states(client: Client, *names: str) -> None:
    """Unregister the worker states ``names`` (their teardown frees the models); a state the
    workers no longer have (a cluster being closed), or a lost scheduler, is skipped."""
    if lost_scheduler(client):
        return
    for name in names:
        try:
            client.unregister_worker_plugin(name)
        except ValueError:  # "The worker plugin ... does not exist"
            continue


def lost_scheduler(client: Client) -> bool:
    """Whether ``client`` lost its scheduler (killed, or its machine gone): Dask cancels every
    future then, and nothing more can run or be cancelled."""
    return client.status not in ("running", "newly-created")


def check_workers(client: Client, address: str) -> None:
    """`InputError` naming every worker at ``address`` that cannot import hypermosaic or runs
    another version than this process: its tasks would fail on every try, or make other
    pixels. Checked once, when the client connects."""
    problems, ours = [], _version()
    for worker, version in sorted(client.run(_version, on_error="return").items()):
        if isinstance(version, BaseException):
            problems.append(f"worker {worker} cannot import hypermosaic ({version})")
        elif version != ours:
            problems.append(f"worker {worker} runs hypermosaic {version}, this machine {ours}")
    if problems:
        raise InputError(f"--scheduler-address {address}: {'; '.join(problems)}; install "
                         "this hypermosaic on every worker")


def _version() -> str:
    """The version of the hypermosaic this module belongs to. Sent to workers by reference, so
    one without hypermosaic fails to load it; not imported by name, since the package's
    ``__init__`` names every command, above this layer."""
    return str(sys.modules["hypermosaic"].__version__)


def worker_state(name: str) -> WorkerState:
    """The `WorkerState` registered as ``name`` on the worker running this task."""
    return cast(WorkerState, get_worker().plugins[name])


def check_scheduler_address(address: str | None) -> None:
    """`InputError` naming ``--scheduler-address`` for an address no scheduler can have
    (``notaurl``: no port); checked before any work, the connection itself when it opens."""
    if not address:
        return
    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as exc:
        raise InputError(f"--scheduler-address {address}: not a scheduler address ({exc}); "
                         "give tcp://HOST:PORT") from None


@contextmanager
def open_client(
    workers: int | None = None,
    scheduler_address: str | None = None,
    gpu: bool = False,
) -> Iterator[Client]:
    """A Dask client on a local cluster sized for the machine, or on ``scheduler_address``.

    ``gpu=True`` asks for one worker per CUDA GPU (falling back to a single CPU worker when
    there is none); ``workers`` overrides the count. Raises `InputError` if the scheduler cannot
    be reached or a worker cannot run this hypermosaic (`check_workers`), and `BuildError`
    for any error once the scheduler is lost, since Dask's own (a cancelled future, a closed
    connection) would say nothing a user can act on.
    """
    if scheduler_address:
        check_scheduler_address(scheduler_address)
        with silence_logging_cmgr(logging.CRITICAL), _attached(scheduler_address) as client:
            yield client
        return
    gpus = registry.cuda_device_count() if gpu else 0
    with _sigint_ignored():  # inherited: Ctrl-C reaches this process only, not the workers
        cluster = _gpu_cluster(workers, gpus) if gpus else _cpu_cluster(workers, gpu)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextmanager
def _attached(address: str) -> Iterator[Client]:
    """A client of the scheduler at ``address`` whose workers can run this hypermosaic; once
    the scheduler is lost, any error becomes one `BuildError` line."""
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--scheduler-address {address}: cannot connect ({exc})") from None
    try:
        check_workers(client, address)
        yield client
    except Exception as exc:
        if isinstance(exc, HypermosaicError) or not lost_scheduler(client):
            raise
        raise BuildError(f"--scheduler-address {address}: lost the scheduler; what finished "
                         "is kept, run the same command again to resume") from None
    finally:
        client.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes start. A terminal sends Ctrl-C to the whole
    process group; processes started while it is ignored keep ignoring it (Python installs
    its KeyboardInterrupt handler only where SIGINT is at its default), so the client alone
    is interrupted and tidies up, and no worker prints a traceback. Only in the main thread,
    the one place signals can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _cpu_cluster(workers: int | None, torch_work: bool) -> LocalCluster:
    count = workers or (1 if torch_work else cpu_count())
    return LocalCluster(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL,
        env={} if torch_work else _SINGLE_THREAD_ENV,
    )


def _gpu_cluster(workers: int | None, gpus: int) -> SpecCluster:
    count = min(workers or gpus, gpus)
    specs = {
        f"gpu-{index}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "env": {"CUDA_VISIBLE_DEVICES": str(index)},
                "resources": {"GPU": 1},
                "silence_logs": logging.CRITICAL,
            },
        }
        for index in range(count)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": "127.0.0.1:0"}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.CRITICAL)
