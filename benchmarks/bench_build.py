"""Recolor build through to DeepZoom, and assembly against two references in the same run.

Default scale (the issue's): depth 2, grid 16, 256 px nodes = 65,792 nodes, a 65,536 px canvas.

1. build:  `build_mosaic` without publishing: wall time, nodes/s.
2. ours:   `write_deepzoom` from the node files (quadtree pyramid on the Dask pool).
3. bound:  pyvips `dzsave` of a lazily generated image of the same size (no input files).
4. naive:  one `arrayjoin` of every node file, then `dzsave` (skip with --skip-naive).

Each assembly variant runs in its own process so that its peak RSS is its own. Peak RSS is the
peak of the *sum* over the whole process tree (this process, its Dask nanny and worker
processes), sampled every 0.2 s with psutil: the figure the 1 GB target is about. Prints
seconds, ratios to the bound, and peak RSS.

    python -m benchmarks.bench_build [--grid 16] [--depth 2] [--size 256] [--skip-naive]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from benchmarks._machine import print_machine

if TYPE_CHECKING:
    from hypermosaic.build.config import BuildConfig
    from hypermosaic.store import Store
    from hypermosaic.tree import Plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tree_rss() -> int:
    """Resident bytes of this process and all its descendants, now."""
    me = psutil.Process()
    total = 0
    for process in [me, *me.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # a worker that exited between listing and reading
            continue
    return total


class PeakRSS:
    """Samples `tree_rss` in a thread while in the ``with`` block; ``mb`` is the peak seen."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss())

    @property
    def mb(self) -> int:
        return self.peak // (1024 * 1024)


def make_config(out: Path, grid: int, depth: int, size: int) -> BuildConfig:
    from hypermosaic.build.config import build_config_from_dict

    return build_config_from_dict(
        {"seed": 1, "size": size, "grid": grid, "depth": depth, "out": str(out),
         "primary": {"image": "images/chelsea.png"}, "tiles": {"strength": 0.6}},
        base=EXAMPLES, source="bench",
    )


def variant(name: str, out: Path, grid: int, depth: int, size: int) -> dict:
    """Run one assembly variant in this process; returns its figures."""
    from hypermosaic.executor import open_client
    from hypermosaic.publish.run import write_deepzoom
    from hypermosaic.store import Store

    config = make_config(out, grid, depth, size)
    plan, store = config.plan(), Store(out)
    target = out / f"bench-{name}"
    with PeakRSS() as peak:
        started = time.perf_counter()
        if name == "ours":
            with open_client() as client:
                started = time.perf_counter()
                write_deepzoom(store, plan, config.publish, client)
                seconds = time.perf_counter() - started
        else:
            assemble_reference(name, store, plan, target, size)
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": peak.mb}


def assemble_reference(name: str, store: Store, plan: Plan, target: Path, size: int) -> None:
    """The two references: ``bound`` (a generated image, no files) and ``naive``."""
    import pyvips

    if name == "bound":
        xy = pyvips.Image.xyz(plan.canvas_size, plan.canvas_size)
        pattern = ((xy[0] * 7 + xy[1] * 13) & 255).cast("uchar")
        image = pattern.bandjoin([xy[0].cast("uchar"), xy[1].cast("uchar")])
        image.dzsave(str(target), tile_size=size, overlap=0, suffix=".png", layout="dz")
    else:
        leaves = sorted(
            (a for a in plan.nodes() if len(a) == plan.depth), key=lambda a: plan.origin(a)[::-1]
        )
        images = [pyvips.Image.new_from_file(str(store.node_path(a))) for a in leaves]
        across = plan.canvas_size // size
        pyvips.Image.arrayjoin(images, across=across).dzsave(
            str(target), tile_size=size, overlap=0, suffix=".png", layout="dz"
        )


def run_variant(name: str, out: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--variant", name, "--out", str(out),
               "--grid", str(args.grid), "--depth", str(args.depth), "--size", str(args.size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for leftover in (out / f"bench-{name}_files", out / "mosaic_files"):
        shutil.rmtree(leftover, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--variant", choices=["ours", "bound", "naive"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(variant(args.variant, args.out, args.grid, args.depth, args.size)))
        return
    print_machine()

    from hypermosaic.build import build_mosaic

    with tempfile.TemporaryDirectory(prefix="hm-bench-") as tmp:
        out = Path(tmp) / "build"
        config = make_config(out, args.grid, args.depth, args.size)
        with PeakRSS() as peak:
            started = time.perf_counter()
            result = build_mosaic(config, publish=False)
            seconds = time.perf_counter() - started
        canvas = config.plan().canvas_size
        print(f"build: {result.total:,} nodes of {args.size} px (canvas {canvas:,} px) in "
              f"{seconds:.1f} s = {result.computed / seconds:,.1f} nodes/s; "
              f"peak RSS {peak.mb:,} MB (client and all Dask processes together)")
        names = ["bound", "ours"] + ([] if args.skip_naive else ["naive"])
        figures = {name: run_variant(name, out, args) for name in names}
        bound = figures["bound"]["seconds"]
        for name, fig in figures.items():
            ratio = fig["seconds"] / bound
            print(f"assembly {name:5s}: {fig['seconds']:7.1f} s  {ratio:4.2f}x bound  "
                  f"peak RSS {fig['peak_rss_mb']:,} MB")


if __name__ == "__main__":
    main()
