"""`hypermosaic explore` under a simulated viewer: zoom step to sharp tiles, and a request storm.

A recolor build of depth 1 is made once; every run starts from a copy of it, so every node below
depth 1 is made live. The simulated viewer zooms into a fixed point the way the page
(``hypermosaic/data/explore/live.js``) does: each step halves the view's width around the point;
once the view is two levels below its root it re-roots on the child under the centre (the rect
is then in that child's square); the depth it asks for is ``wantedDepth``'s (the deepest level
whose nodes show at half their pixels or more in a ``--window`` wide window). After a step's
view is sent it waits for an answer to that view with ``missing == 0``, re-sending the view
80 ms after a ``landed`` message (the page's debounce). The step's seconds are "zoom to sharp";
the table gives each step's root, depth, nodes of that depth across the window and the batches
it lacked. With grid 4 a level takes two steps, and the second needs no node (its view lies
inside the first's, at the same depth): it shows the round trip only. Percentiles are over the
steps that made nodes.

1. recolor: ``hypermosaic explore --workers N`` as a subprocess (1 and 2 workers): per-step
   seconds, p50/p95, the 2-worker speed-up, the peak RSS of the server's process tree.
2. simulated: the explore app assembled in this process as ``explore/run.py`` does, on a Dask
   LocalCluster of threads, the recolor engine's ``tiles`` replaced by a sleep of ``--latency``
   seconds per batch returning its inits (a GPU's img2img: the pool waits, the CPU does not).
   Ideal per step = sum over the depths it needs of ceil(batches / workers) x latency; the ratio
   measured / ideal is the scheduling overhead (task set-up, PNG encoding, the scheduler, the
   socket round trips and the page's debounce).
3. storm: against the server of 1 with the last ``--workers`` count, after its zoom:
   ``--storm`` requests at once, ``--rounds`` times: node images (raw HTTP/1.1, every
   connection opened first and the requests then written together), 10 ``/live/status`` and a
   ``--views`` share of views (one WebSocket each, a deep view apiece). RSS of the explore
   process and of its tree (Dask workers too) before, at peak (sampled every 20 ms) and 3 s
   after; HTTP answers 200 / 503 (and whether Retry-After came) / other; views answered /
   ``closed 1013`` (past the server's viewer limit: accepted, then closed with that code) /
   other; ``/live/status`` after.

The simulated viewer, the memory watch and the storm are in `benchmarks.live_viewer`; this
module runs the parts and prints the tables.

Every timing here is skewed by other work on the machine: "others busy" says how many cores the
rest of the machine kept busy during each run (the default scale is meant for an idle 2-core
machine, about 90 s).

    python -m benchmarks.bench_live [--size 256] [--grid 4] [--levels 6] [--window 1024x768]
        [--latency 0.25] [--workers 1,2] [--storm 500] [--rounds 3] [--views 0.1]
        [--point 0.6,0.4] [--skip recolor|simulated]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil

from benchmarks._machine import print_machine
from benchmarks.live_viewer import Step, StepResult, Watch, storm, zoom, zoom_steps
from hypermosaic.build import load_build_config
from hypermosaic.store import Store
from hypermosaic.tree import address_key

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MB = 1024 * 1024


# --- 1. the recolor engine, `hypermosaic explore` as a subprocess --------------------------------

def write_config(folder: Path, size: int, grid: int) -> Path:
    path = folder / "live.toml"
    path.write_text(
        f'seed = 7\nsize = {size}\ngrid = {grid}\ndepth = 1\nengine = "recolor"\n'
        f'out = "{folder / "built"}"\n\n'
        f'[primary]\nimage = "{EXAMPLES / "images" / "chelsea.png"}"\n\n'
        '[tiles]\nstrength = 0.7\n\n[recolor]\nsource = "primary"\n'
    )
    return path


@contextlib.contextmanager
def explore_process(config_path: Path, out: Path,
                    workers: int) -> Iterator[tuple[str, psutil.Process]]:
    """``hypermosaic explore`` in a subprocess; yields its URL and process; Ctrl-C at the end."""
    command = [sys.executable, "-m", "hypermosaic", "explore", str(config_path),
               "--out", str(out), "--workers", str(workers), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        found = re.search(r"Exploring at (\S+)", line)
        if not found:
            raise RuntimeError(f"explore did not start: {line}{process.communicate()[1]}")
        yield found.group(1), psutil.Process(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def recolor_runs(config_path: Path, built: Path, steps: list[Step], args: argparse.Namespace,
                 work: Path) -> tuple[dict[int, list[StepResult]], dict[int, Watch], dict]:
    """Part 1 (and part 3 on the last server): results and watches by workers, storm
    figures."""
    results, watches, storm_figures = {}, {}, {}
    for workers in args.workers:
        out = work / f"recolor-{workers}"
        shutil.copytree(built, out)
        with explore_process(config_path, out, workers) as (url, process):
            config = load_build_config(config_path, {"out": str(out)})
            with Watch(process) as watch:
                results[workers] = asyncio.run(zoom(url, steps, config, Store(out)))
            watches[workers] = watch
            if workers == args.workers[-1] and args.storm:
                storm_figures = storm(url, process, Store(out), args.storm, args.rounds,
                                      args.views)
    return results, watches, storm_figures


# --- 2. a simulated engine of fixed latency, the app in this process ----------------------------

def simulated_runs(config_path: Path, built: Path, steps: list[Step], args: argparse.Namespace,
                   work: Path) -> tuple[dict[int, list[StepResult]], dict[int, Watch]]:
    from distributed import Client, LocalCluster

    from hypermosaic.build import NodeMaker, check_inputs
    from hypermosaic.build.recolor import RecolorEngine
    from hypermosaic.explore.app import LiveHub, live_lifespan, live_routes
    from hypermosaic.publish import make_app, start_server
    from hypermosaic.store import folder_lock

    latency = args.latency

    def tiles(self, inits, jobs, context):  # a GPU's img2img: the pool waits, the CPU does not
        time.sleep(latency)
        return inits.copy()

    original, RecolorEngine.tiles = RecolorEngine.tiles, tiles
    results, watches = {}, {}
    try:
        for workers in args.workers:
            out = work / f"simulated-{workers}"
            shutil.copytree(built, out)
            config = load_build_config(config_path, {"out": str(out)})
            with (folder_lock(out),
                  LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                               dashboard_address=None, silence_logs=logging.CRITICAL) as cluster,
                  Client(cluster) as client):
                maker = NodeMaker(config, Store(out, config.format), client, check_inputs(config))
                hub = LiveHub(config, maker, max_in_flight=2 * max(1, len(client.nthreads())) + 1)
                app = make_app(out, routes=live_routes(hub, out.name), lifespan=live_lifespan(hub))
                server = start_server(app)
                try:
                    with Watch(psutil.Process()) as watch:
                        results[workers] = asyncio.run(
                            zoom(server.url, steps, config, maker.store))
                    watches[workers] = watch
                finally:
                    server.stop()
                    hub.scheduler.stop()
                    maker.close()
    finally:
        RecolorEngine.tiles = original
    return results, watches



# --- the report ----------------------------------------------------------------------------------

def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p95 = np.percentile(values, [50, 95])
    return f"{p50:.2f} / {p95:.2f}"


def ideal(batches: dict[int, int], workers: int, latency: float) -> float:
    """Seconds the pool needs at best: each depth after its parents, batches spread evenly."""
    return sum(math.ceil(count / workers) * latency for count in batches.values())


def megabytes(pair: tuple[int, int]) -> str:
    return f"{pair[0] // MB:,} ({pair[1] // MB:,})"


def report(steps: list[Step], needed: list[dict[int, int]], recolor: dict, simulated: dict,
           watches: dict, storm_figures: dict, args: argparse.Namespace) -> None:
    workers = args.workers
    print(f"zoom into {args.point} of a recolor build (size {args.size}, grid {args.grid}, "
          f"built depth 1), window {args.window[0]}x{args.window[1]}: seconds from a step's "
          "view to an answer with missing == 0")
    print(f"{'step':>4} {'root':<16} {'depth':>5} {'across':>6} {'batches':>7}  "
          + "".join(f"{f'rec {w}w':>7}" for w in recolor)
          + "".join(f"{f'sim {w}w':>7}{'ideal':>6}{'ratio':>6}" for w in simulated))
    for i, (step, need) in enumerate(zip(steps[1:], needed, strict=True)):
        row = (f"{i + 1:>4} {address_key(step.root):<16} {step.depth:>5} {step.across:>6.1f} "
               f"{sum(need.values()):>7}  ")
        row += "".join(f"{results[i].seconds:>7.2f}" for results in recolor.values())
        for w, results in simulated.items():
            best = ideal(need, w, args.latency)
            ratio = f"{results[i].seconds / best:>6.2f}" if best else f"{'-':>6}"
            row += f"{results[i].seconds:>7.2f}{best:>6.2f}{ratio}"
        print(row)

    working = [i for i, need in enumerate(needed) if need]
    idle = [i for i, need in enumerate(needed) if not need]
    total_needed = sum(sum(need.values()) for need in needed)
    print(f"\n{'':<24}{'p50 / p95 s':>13}{'no-work p50':>12}{'total s':>8}{'made/needed':>12}"
          f"{'peak RSS MB':>13}{'others busy':>12}")
    for label, runs in (("recolor", recolor), ("simulated", simulated)):
        for w, results in runs.items():
            watch = watches[label, w]
            print(f"{f'{label}, {w} worker(s)':<24}"
                  f"{percentiles([results[i].seconds for i in working]):>13}"
                  f"{np.median([results[i].seconds for i in idle]) if idle else 0:>12.3f}"
                  f"{sum(r.seconds for r in results):>8.2f}"
                  f"{f'{sum(r.made for r in results)}/{total_needed}':>12}"
                  f"{megabytes((watch.own, watch.tree)):>13}{f'{watch.others:.2f} cores':>12}")
    for w, results in simulated.items():
        best = np.array([ideal(needed[i], w, args.latency) for i in working])
        got = np.array([results[i].seconds for i in working])
        print(f"simulated, {w} worker(s): measured / ideal {got.sum() / best.sum():.2f}x in "
              f"total ({got.sum():.2f} / {best.sum():.2f} s); per step p50 "
              f"{np.median(got / best):.2f}x, p95 {np.percentile(got / best, 95):.2f}x")
    if len(recolor) > 1:
        first, last = (recolor[w] for w in (workers[0], workers[-1]))
        speed_up = sum(first[i].seconds for i in working) / sum(last[i].seconds for i in working)
        print(f"recolor speed-up, {workers[-1]} vs {workers[0]} worker(s): {speed_up:.2f}x on the "
              "steps that make nodes")
    print("(peak RSS: the explore process (its tree with the Dask workers); simulated: this "
          "process, server and threads' pool together; others busy: cores the rest of the "
          "machine kept busy meanwhile, on average)")

    if storm_figures:
        print(f"\nstorm: {args.storm} requests at once against the {workers[-1]}-worker server "
              f"({round(args.storm * args.views)} views, 10 /live/status, the rest node images of "
              f"{storm_figures['nodes']} stored); RSS MB of the explore process (its tree)")
        print(f"{'round':>5} {'before':>11} {'peak':>11} {'after 3 s':>11} {'s':>5}  answers; "
              "status after")
        for k, r in enumerate(storm_figures["rounds"], 1):
            http = ", ".join(f"{code}: {n}" for code, n in sorted(r.http.items()))
            views = ", ".join(f"{kind}: {n}" for kind, n in sorted(r.views.items()))
            after = ", ".join(f"{key} {r.status.get(key)}"
                              for key in ("viewers", "in_flight", "waiting", "made"))
            print(f"{k:>5} {megabytes(r.before):>11} {megabytes(r.peak):>11} "
                  f"{megabytes(r.after):>11} {r.seconds:>5.2f}  http {http}; views {views}; "
                  f"{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--levels", type=int, default=6, help="levels below the built depth")
    parser.add_argument("--window", type=lambda s: tuple(int(v) for v in s.split("x")),
                        default=(1024, 768), help="the viewer's window, WxH pixels")
    parser.add_argument("--point", type=lambda s: tuple(float(v) for v in s.split(",")),
                        default=(0.6, 0.4), help="where to zoom, in the primary's unit square")
    parser.add_argument("--latency", type=float, default=0.25, help="simulated s per batch")
    parser.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 2], help="comma-separated; the storm uses the last")
    parser.add_argument("--storm", type=int, default=500, help="requests at once (0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="storms, one after the other")
    parser.add_argument("--views", type=float, default=0.1, help="share of the storm: views")
    parser.add_argument("--skip", choices=["recolor", "simulated"], action="append", default=[],
                        help="skip a part (the storm runs on the recolor server)")
    args = parser.parse_args()
    print_machine()

    from hypermosaic.build import build_mosaic

    with tempfile.TemporaryDirectory(prefix="hm-bench-live-") as tmp:
        work = Path(tmp)
        config_path = write_config(work, args.size, args.grid)
        config = load_build_config(config_path)
        build_mosaic(config, publish=False, workers=min(2, psutil.cpu_count() or 1))
        built = Path(config.out)
        steps = zoom_steps(config, args.point,
                           args.levels * max(1, round(math.log2(args.grid))), args.window)
        started = time.perf_counter()
        recolor, simulated, watches, storm_figures = {}, {}, {}, {}
        if "recolor" not in args.skip:
            recolor, by_workers, storm_figures = recolor_runs(config_path, built, steps, args,
                                                              work)
            watches.update({("recolor", w): watch for w, watch in by_workers.items()})
        if "simulated" not in args.skip:
            simulated, by_workers = simulated_runs(config_path, built, steps, args, work)
            watches.update({("simulated", w): watch for w, watch in by_workers.items()})
        runs = [*recolor.values(), *simulated.values()]
        if not runs:
            raise SystemExit("nothing to run")
        needed = [result.needed for result in runs[0]]
        if any([result.needed for result in results] != needed for results in runs):
            print("warning: the runs' views lacked different batches", file=sys.stderr)
        report(steps, needed, recolor, simulated, watches, storm_figures, args)
        print(f"\n(the parts took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
