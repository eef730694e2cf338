"""Diffusion engine: a batch of tiles per pipeline call against one call per tile, same work.

Tiny random Stable Diffusion (`tests.tiny`), 64 px tiles, CPU by default. Both
routes run the same jobs through `DiffusionEngine.tiles`; the baseline gives it one tile at a
time. Prints the best of ``--repeats`` timings of each, the ratio, the largest pixel difference
between the routes, and peak RSS.

    python -m benchmarks.bench_diffusion_batch --tiles 16 --batch-size 8   # from the repo root
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._machine import print_machine
from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.pipelines.img2img import DiffusionEngine
from hypermosaic.tree import node_seed
from tests.tiny import save_tiny_pipeline


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        model = save_tiny_pipeline(Path(folder) / "tiny-sd")
        engine = DiffusionEngine(str(model), batch_size=args.batch_size, device=args.device)
    grid = int(np.ceil(np.sqrt(args.tiles)))
    addresses = [((i // grid, i % grid),) for i in range(args.tiles)]
    jobs = [
        TileJob(address=a, seed=node_seed(0, a), prompt=f"tile {a[0][0]}", negative_prompt="",
                strength=args.strength, steps=args.steps, guidance=7.5)
        for a in addresses
    ]
    inits = np.random.default_rng(0).integers(
        0, 256, (args.tiles, args.size, args.size, 3), dtype=np.uint8
    )
    context = TileContext(parent=inits[0], grid=grid, primary=inits[0])
    engine.tiles(inits[:1], jobs[:1], context)  # warm-up: first-call allocations

    def batched_route() -> np.ndarray:
        return engine.tiles(inits, jobs, context)

    def single_route() -> np.ndarray:
        return np.concatenate(
            [engine.tiles(inits[i : i + 1], jobs[i : i + 1], context) for i in range(args.tiles)]
        )

    routes = {"batched": batched_route, "single": single_route}
    times: dict[str, list[float]] = {name: [] for name in routes}
    images: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # alternate the routes; best of the repeats (shared machine)
        for name, route in routes.items():
            start = time.perf_counter()
            images[name] = route()
            times[name].append(time.perf_counter() - start)
    t_batched, t_single = min(times["batched"]), min(times["single"])
    batched, single = images["batched"], images["single"]

    diff = int(np.abs(batched.astype(int) - single.astype(int)).max())
    print(f"tiny SD, {args.tiles} tiles of {args.size} px, {args.steps} steps x strength "
          f"{args.strength}, {engine.device}, CPU threads {args.threads}, best of {args.repeats}")
    print(f"batched (batch_size {args.batch_size}): {t_batched:.2f} s "
          f"({args.tiles / t_batched:.1f} tiles/s)")
    print(f"one call per tile:         {t_single:.2f} s ({args.tiles / t_single:.1f} tiles/s)")
    print(f"speed-up (one-by-one / batched): {t_single / t_batched:.2f}x")
    print(f"max pixel difference between the routes: {diff}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
