"""A simulated GPU pool: how a build's throughput scales with workers, against the ideal.

Each worker is a single-threaded ``dask worker`` process whose diffusion engine is a simulated
GPU (`benchmarks.sim_engine`): a batch of ``--batch`` tiles takes ``--latency`` seconds, spent
sleeping, so the GPU's time costs no CPU (the workers' own decoding, upsampling and encoding
still do, on the cores the client and scheduler use; ``--size 64`` makes it small). Everything
else is the real build: `build_mosaic` on a Dask client, the runner, the task code (decode the
parent, cut and upsample its tiles, encode PNGs), the client's atomic store writes. The
scheduler runs in its own process, as on a cluster, so the client's CPU is the client's alone.

Per pool size: nodes/s in steady state (between 10% and 90% of the nodes) against the ideal
``workers × batch / latency``, that ratio (the scaling efficiency), the whole build's rate, the
CPU time per node of the client (steady state, and whole build), the scheduler and the workers
together, the PNG bytes per node, how busy the machine's cores were (other processes included:
the header gives the load average), and the peak RSS of every process together. The tree is
grid ``[n, g]``, depth 2, chosen so each size runs ``--seconds`` to twice that at the ideal
rate.

    python -m benchmarks.bench_scale [--workers 1 2 4 8 16] [--latency 0.5] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from distributed import Client

from benchmarks._machine import print_machine
from benchmarks.bench_build import PeakRSS
from benchmarks.sim_engine import MODEL, SimulatedGPU, simulated_gpu
from hypermosaic.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DASK = Path(sys.executable).with_name("dask")
# Trees of grid [n, g], depth 2, smallest first: g >= 4, so siblings fill batches of up to 16
TREES = sorted(((n, g) for n in (2, 4, 8, 16) for g in (4, 8, 16)),
               key=lambda tree: tree[0] ** 2 * (1 + tree[1] ** 2))


@dataclass
class Sample:
    """One progress event: when, the client's CPU seconds so far, nodes done."""

    wall: float
    cpu: float
    done: int


@contextmanager
def cluster(workers: int, folder: Path) -> Iterator[tuple[Client, list[psutil.Process]]]:
    """A scheduler process and ``workers`` single-threaded worker processes on this machine
    (yielded in that order)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    file = folder / f"scheduler-{workers}.json"

    def start(*command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(DASK), *command, "--scheduler-file", str(file)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    scheduler = start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard")
    started = [scheduler]
    try:
        while not file.exists():
            time.sleep(0.1)
        started += [start("worker", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                          "--memory-limit", "0") for _ in range(workers)]
        with Client(scheduler_file=str(file)) as client:
            client.wait_for_workers(workers, timeout=300)
            try:
                yield client, [psutil.Process(p.pid) for p in started]
            finally:
                client.shutdown()  # the scheduler and its workers
    finally:
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tree_grids(workers: int, batch: int, latency: float, seconds: float) -> tuple[int, int]:
    """The smallest tree of `TREES` with at least half of ``seconds`` of work at the ideal
    rate."""
    nodes = seconds * workers * batch / latency
    return next((t for t in TREES if t[0] ** 2 * (1 + t[1] ** 2) >= nodes / 2), TREES[-1])


def measure(workers: int, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Build one tree on a pool of ``workers``; returns its figures."""
    from hypermosaic.build import build_mosaic
    from hypermosaic.build.config import build_config_from_dict

    grids = tree_grids(workers, args.batch, args.latency, args.seconds)
    config = build_config_from_dict(
        {"seed": 1, "size": args.size, "grid": list(grids), "depth": 2,
         "engine": "diffusion", "out": str(folder / f"build-{workers}"),
         "primary": {"image": "images/chelsea.png"},
         "diffusion": {"model": MODEL, "batch_size": args.batch}},
        base=EXAMPLES, source="bench",
    )
    samples: list[Sample] = []

    def progress(event: Progress) -> None:
        if event.unit == "nodes":
            samples.append(Sample(time.perf_counter(), time.process_time(), event.done))

    with cluster(workers, folder) as (client, processes), simulated_gpu(args.latency):
        client.register_plugin(SimulatedGPU(args.latency))
        before = [sum(p.cpu_times()[:2]) for p in processes]
        machine = psutil.cpu_times()
        with PeakRSS() as peak:
            cpu, started = time.process_time(), time.perf_counter()
            result = build_mosaic(config, client=client, publish=False, progress=progress)
            cpu, seconds = time.process_time() - cpu, time.perf_counter() - started
        used = [sum(p.cpu_times()[:2]) - b for p, b in zip(processes, before, strict=True)]
        idle = psutil.cpu_times().idle - machine.idle
    assert result.ok and result.computed == result.total, result
    first = next(s for s in samples if s.done >= 0.1 * result.total)
    last = next(s for s in samples if s.done >= 0.9 * result.total)
    steady = (last.done - first.done) / (last.wall - first.wall)
    ideal = workers * args.batch / args.latency
    return {
        "nodes": result.computed, "seconds": seconds, "steady": steady, "ideal": ideal,
        "overall": result.computed / seconds,
        "client_ms": 1000 * (last.cpu - first.cpu) / (last.done - first.done),
        "client_all_ms": 1000 * cpu / result.computed,
        "scheduler_ms": 1000 * used[0] / result.computed,
        "workers_ms": 1000 * sum(used[1:]) / result.computed,
        "busy": 1 - idle / (seconds * psutil.cpu_count()),
        "peak_mb": peak.mb,
        "bytes": sum(p.stat().st_size for p in (folder / f"build-{workers}").rglob("*.png")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per batch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="node side in pixels")
    parser.add_argument("--seconds", type=float, default=15, help="ideal build time per size")
    args = parser.parse_args()
    print_machine()
    print(f"simulated GPU: {args.latency} s per batch of {args.batch}, {args.size} px PNG "
          "nodes; scheduler, client and each worker in their own processes; load average "
          f"{os.getloadavg()[0]:.1f} (other processes share these cores)")
    print(f"{'workers':>7} {'nodes':>6} {'nodes/s':>8} {'ideal':>7} {'effic.':>7} "
          f"{'whole':>7} {'client ms/node':>14} {'(whole)':>7} {'sched ms/node':>13} "
          f"{'kB/node':>7} {'CPU busy':>8} {'peak RSS':>9}")
    with tempfile.TemporaryDirectory(prefix="hm-bench-scale-") as tmp:
        for workers in args.workers:
            fig = measure(workers, args, Path(tmp))
            print(f"{workers:7d} {fig['nodes']:6,.0f} {fig['steady']:8.1f} {fig['ideal']:7.1f} "
                  f"{fig['steady'] / fig['ideal']:7.1%} {fig['overall']:7.1f} "
                  f"{fig['client_ms']:14.2f} {fig['client_all_ms']:7.2f} "
                  f"{fig['scheduler_ms']:13.2f} {fig['workers_ms']:7.2f} "
                  f"{fig['bytes'] / fig['nodes'] / 1e3:7.0f} {fig['busy']:8.0%} "
                  f"{fig['peak_mb']:6,} MB", flush=True)
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"client peak RSS {client_peak:,} MB; 'whole' is the rate over the whole build "
          "(start and tail included), 'peak RSS' that of all processes together")


if __name__ == "__main__":
    main()
