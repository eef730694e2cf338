"""Diffusion engine: a batch of tiles per pipeline call against one call per tile, same work.

Tiny random Stable Diffusion (`hypermosaic.pipelines.tiny`), 64 px tiles, CPU by default. Both
routes run the same jobs through `DiffusionEngine.tiles`; the baseline gives it one tile at a
time. Prints seconds for each, the ratio, the largest pixel difference between the routes, and
peak RSS.

    python benchmarks/bench_diffusion_batch.py --tiles 16 --batch-size 8
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hypermosaic.engines import TileContext, TileJob
from hypermosaic.pipelines.engine import DiffusionEngine
from hypermosaic.pipelines.tiny import save_tiny_pipeline
from hypermosaic.tree import node_seed


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
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    args = parser.parse_args()
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

    start = time.perf_counter()
    batched = engine.tiles(inits, jobs, context)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = np.concatenate(
        [engine.tiles(inits[i : i + 1], jobs[i : i + 1], context) for i in range(args.tiles)]
    )
    t_single = time.perf_counter() - start

    diff = int(np.abs(batched.astype(int) - single.astype(int)).max())
    print(f"tiny SD, {args.tiles} tiles of {args.size} px, {args.steps} steps x strength "
          f"{args.strength}, {engine.device}, CPU threads {args.threads}")
    print(f"batched (batch_size {args.batch_size}): {t_batched:.2f} s "
          f"({args.tiles / t_batched:.1f} tiles/s)")
    print(f"one call per tile:         {t_single:.2f} s ({args.tiles / t_single:.1f} tiles/s)")
    print(f"speed-up (one-by-one / batched): {t_single / t_batched:.2f}x")
    print(f"max pixel difference between the routes: {diff}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
