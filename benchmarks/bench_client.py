"""Does the client serialise the pool? Its own work per node, against the build's wall time.

Workers return encoded images; the client alone receives them, writes each node file
atomically, queues the children and submits the next batches (`TreeRunner._finish` and
`_submit`, `Store.write_node` inside the first). This times those methods in the client while a
recolor build runs on the pool (a local cluster sized for the machine, or
``--scheduler-address``) and prints:

- the client's busy time as a fraction of the tree's wall time (well under 1: the loop mostly
  waits for workers, so more workers would be fed; near 1: the client is the bottleneck);
- the same split into receive-and-write (`_finish`, of which `write_node`) and submit;
- nodes/s over the tree, and the client's milliseconds per node;
- the client process's CPU time over the tree (every thread, its event loop's too), which a
  loaded machine inflates less than the wall times above;
- peak memory (``getrusage`` max RSS) of this process, and of its waited-for children (the
  local cluster's processes, once closed).

    python -m benchmarks.bench_client [--grid 4] [--depth 3] [--size 64] [--workers N]
        [--scheduler-address tcp://HOST:PORT]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._machine import print_machine
from hypermosaic.build import build_mosaic
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.build.runner import TreeRunner
from hypermosaic.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def timed(owner: type, name: str, spent: dict[str, float]) -> None:
    """Wrap ``owner.name`` so that every call adds its seconds to ``spent[name]``, and this
    process's CPU seconds (all its threads: the client's event loop too) to
    ``spent[name + ' cpu']``."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started
            spent[f"{name} cpu"] += time.process_time() - cpu

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--scheduler-address")
    args = parser.parse_args()

    spent: dict[str, float] = defaultdict(float)
    for owner, name in [(TreeRunner, "run"), (TreeRunner, "_finish"),
                        (TreeRunner, "_submit"), (Store, "write_node")]:
        timed(owner, name, spent)
    with tempfile.TemporaryDirectory(prefix="hm-bench-client-") as tmp:
        config = build_config_from_dict(
            {"seed": 1, "size": args.size, "grid": args.grid, "depth": args.depth,
             "out": str(Path(tmp) / "build"), "primary": {"image": "images/chelsea.png"},
             "tiles": {"strength": 0.6}},
            base=EXAMPLES, source="bench")
        result = build_mosaic(config, publish=False, workers=args.workers,
                              scheduler_address=args.scheduler_address)
    # 1. The client's share of the tree's wall time (`run` holds the other three).
    wall = spent["run"]
    busy = spent["_finish"] + spent["_submit"]
    nodes = result.computed
    print(f"tree: {nodes:,} nodes of {args.size} px (grid {args.grid}, depth {args.depth}) in "
          f"{wall:.2f} s = {nodes / wall:,.0f} nodes/s")
    print(f"client busy: {busy:.2f} s = {busy / wall:.0%} of the wall time, "
          f"{1000 * busy / nodes:.2f} ms per node")
    print(f"  receive and write (_finish): {spent['_finish']:.2f} s, of which write_node "
          f"{spent['write_node']:.2f} s; submit: {spent['_submit']:.2f} s")
    cpu = spent["run cpu"]
    print(f"client CPU during the tree: {cpu:.2f} s = {cpu / wall:.0%} of one core, "
          f"{1000 * cpu / nodes:.2f} ms per node")
    # 2. Peak memory: ru_maxrss is in KiB on Linux.
    client = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(f"peak RSS: client {client:,} MiB; largest waited-for child process {children:,} MiB")
    print_machine()  # last: its torch probe is a child process, which would count above


if __name__ == "__main__":
    main()
