"""The Dask worker pool every long job runs on.

By default a local cluster sized for the machine: one worker per CUDA GPU, pinned to it through
``CUDA_VISIBLE_DEVICES``, or, on CPU, single-threaded worker processes (one per core for numpy
work, one for torch work, whose intra-op threads then use the cores). With a scheduler address,
attach to an existing cluster started elsewhere (``dask scheduler`` / ``dask worker``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

from hypermosaic.errors import InputError

__all__ = ["cpu_count", "cuda_device_count", "open_client"]

_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cuda_device_count() -> int:
    """Number of CUDA GPUs torch can see (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def open_client(
    workers: int | None = None,
    scheduler_address: str | None = None,
    gpu: bool = False,
) -> Iterator[Client]:
    """A Dask client on a local cluster sized for the machine, or on ``scheduler_address``.

    ``gpu=True`` asks for one worker per CUDA GPU (falling back to a single CPU worker when
    there is none); ``workers`` overrides the count. Raises `InputError` if the scheduler cannot
    be reached.
    """
    if scheduler_address:
        try:
            client = Client(scheduler_address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"--scheduler-address {scheduler_address}: cannot connect ({exc})"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = _gpu_cluster(workers) if gpu and cuda_device_count() else _cpu_cluster(workers, gpu)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


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


def _gpu_cluster(workers: int | None) -> SpecCluster:
    gpus = cuda_device_count()
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
