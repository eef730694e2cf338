"""The simulated viewer of `benchmarks.bench_live`: the page's geometry, its WebSocket client,
the memory and load watch, and the request storm.

The viewer zooms the way ``hypermosaic/data/explore/live.js`` does (`zoom_steps`, with the
page's ``wantedDepth`` and ``maybeReroot``) and answers the server as the page does
(`until_sharp`: re-send the view `DEBOUNCE` after a ``landed`` message, at once after a
``resync``). `Watch` samples the peak RSS of a process tree and how busy the rest of the
machine was. `storm` opens hundreds of connections at once: node images over raw HTTP/1.1,
``/live/status`` and views, one WebSocket each; past the server's viewer limit
(`hypermosaic.explore.app.MAX_VIEWERS`) a view is accepted and then closed with code 1013,
which `one_view` counts as ``closed 1013``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hypermosaic.build import BuildConfig, node_batch
from hypermosaic.explore.plan import LEVELS, View, ViewMessage, view_nodes
from hypermosaic.store import Store
from hypermosaic.tree import Address, address_key

__all__ = ["DEBOUNCE", "STEP_TIMEOUT", "Step", "StepResult", "StormRound", "Watch", "get_text",
           "needed_batches", "rss", "storm", "wanted_depth", "zoom", "zoom_steps"]

DEBOUNCE = 0.08
"""The page's delay before re-sending its view after a ``landed`` message (``soon()``)."""
STEP_TIMEOUT = 300.0


# --- the viewer's geometry (live.js) ------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One view the simulated viewer sends: root, rect in the root's square, depth."""

    root: Address
    rect: tuple[float, float, float, float]
    depth: int
    across: float  # nodes of the deepest level across the window

    def message(self, seq: int) -> str:
        return json.dumps({"type": "view", "root": address_key(self.root),
                           "rect": list(self.rect), "depth": self.depth, "seq": seq})


def wanted_depth(config: BuildConfig, root: Address, width: float, pixels: int) -> int:
    """live.js ``wantedDepth``: a level is wanted once its nodes show at half their pixels."""
    per_side, level = 1, 0
    while (level < LEVELS and
           pixels / width / (per_side * config.grid_at(len(root) + level)) >= config.size / 2):
        per_side *= config.grid_at(len(root) + level)
        level += 1
    return len(root) + level


def zoom_steps(config: BuildConfig, point: tuple[float, float], steps: int,
               window: tuple[int, int]) -> list[Step]:
    """The views of a zoom into ``point`` (in the primary's unit square) from the whole root,
    halving the width each step, re-rooting as live.js ``maybeReroot`` does. Coordinates are
    kept in the current root's square, so any depth is exact."""
    root: Address = ()
    (x, y), width, aspect = point, 1.0, window[1] / window[0]
    views = []
    for step in range(steps + 1):
        if step:
            width /= 2
        g0, g1 = config.grid_at(len(root)), config.grid_at(len(root) + 1)
        while width < 1 / (g0 * g1):  # two levels in: the child under the centre
            col, row = (min(g0 - 1, max(0, math.floor(v * g0))) for v in (x, y))
            root += ((row, col),)
            x, y, width = x * g0 - col, y * g0 - row, width * g0
            g0, g1 = config.grid_at(len(root)), config.grid_at(len(root) + 1)
        height = width * aspect
        depth = wanted_depth(config, root, width, window[0])
        across = width * math.prod(config.grid_at(d) for d in range(len(root), depth))
        views.append(Step(root, (x - width / 2, y - height / 2, x + width / 2, y + height / 2),
                          depth, across))
    return views


def needed_batches(config: BuildConfig, store: Store, step: Step) -> dict[int, int]:
    """Batches a view still needs, by the depth of their nodes (the whole view, not only the
    nodes whose parent is stored, which is all the server's first answer counts)."""
    view = View.parse(ViewMessage.model_validate_json(step.message(0)), config.grid_at)
    every = view_nodes(view, config.grid_at, lambda address: True, limit=1 << 20).present
    batches = {node_batch(config, a) for a in every if a and not store.has(a)}
    return dict(Counter(len(batch.parent) + 1 for batch in batches))


# --- the simulated viewer ------------------------------------------------------------------------

@dataclass
class StepResult:
    seconds: float
    needed: dict[int, int]  # batches the view lacked when sent, by depth
    made: int  # batches the server made during the step (/live/status)


async def status(url: str) -> dict:
    return json.loads(await asyncio.to_thread(get_text, url + "live/status"))


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


async def until_sharp(socket, step: Step, seq: int) -> None:
    """Send ``step``'s view and answer the server as the page does until an answer to this view
    says nothing is missing. TimeoutError after `STEP_TIMEOUT`, RuntimeError for a failed
    node."""
    deadline = time.monotonic() + STEP_TIMEOUT
    resend: float | None = None
    await socket.send(step.message(seq))
    while True:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{address_key(step.root)} depth {step.depth}: never sharp")
        wait = deadline - now if resend is None else max(0.0, resend - now)
        try:
            message = json.loads(await asyncio.wait_for(socket.recv(), wait))
        except TimeoutError:
            if resend is not None and time.monotonic() >= resend:
                resend = None
                await socket.send(step.message(seq))
            continue
        kind = message["type"]
        if kind == "nodes" and message["seq"] == seq and message["missing"] == 0:
            return
        elif kind == "landed" and resend is None:
            resend = time.monotonic() + DEBOUNCE
        elif kind == "resync":
            await socket.send(step.message(seq))
        elif kind in ("failed", "error"):
            raise RuntimeError(f"server says {message}")


async def zoom(url: str, steps: list[Step], config: BuildConfig,
               store: Store) -> list[StepResult]:
    """Run the zoom against the server at ``url`` (serving ``store``); step 0 (the built
    view) is not timed."""
    results = []
    async with connect("ws" + url[4:] + "live", max_size=None) as socket:
        await until_sharp(socket, steps[0], 0)
        for seq, step in enumerate(steps[1:], 1):
            needed = needed_batches(config, store, step)
            before = (await status(url))["batches"]
            started = time.perf_counter()
            await until_sharp(socket, step, seq)
            seconds = time.perf_counter() - started
            results.append(StepResult(seconds, needed, (await status(url))["batches"] - before))
    return results


# --- memory and the machine's load -------------------------------------------------------------

def rss(process: psutil.Process) -> tuple[int, int]:
    """Resident bytes of ``process`` and of it with all its descendants, now."""
    own = total = 0
    for index, member in enumerate([process, *process.children(recursive=True)]):
        try:
            value = member.memory_info().rss
        except psutil.Error:  # a worker that exited between listing and reading
            continue
        own = value if index == 0 else own
        total += value
    return own, total


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Watch:
    """While in the ``with`` block, samples in a thread the peak `rss` of ``process`` (own,
    tree) and the CPU seconds of it, its descendants and this process; ``others`` is then the
    average number of cores the rest of the machine kept busy (other users' work skews every
    timing here: the default scale is meant for an idle 2-core machine)."""

    def __init__(self, process: psutil.Process, interval: float = 0.2) -> None:
        self.process, self.interval = process, interval
        self.own = self.tree = 0
        self.others = 0.0
        self._cpu: dict[int, tuple[float, float]] = {}  # pid: (first seen, last seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            own, tree = rss(self.process)
            self.own, self.tree = max(self.own, own), max(self.tree, tree)
            for member in {me, self.process, *self.process.children(recursive=True)}:
                with contextlib.suppress(psutil.Error):
                    times = member.cpu_times()
                    first, _ = self._cpu.get(member.pid, (times.user + times.system, 0.0))
                    self._cpu[member.pid] = (first, times.user + times.system)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Watch:
        self._started, self._busy = time.perf_counter(), busy_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        ours = sum(last - first for first, last in self._cpu.values())
        wall = time.perf_counter() - self._started
        self.others = max(0.0, busy_seconds() - self._busy - ours) / wall



# --- the storm (part 3 of bench_live) -----------------------------------------------------------

@dataclass
class StormRound:
    before: tuple[int, int]
    peak: tuple[int, int]
    after: tuple[int, int]
    seconds: float
    http: Counter = field(default_factory=Counter)
    views: Counter = field(default_factory=Counter)
    status: dict = field(default_factory=dict)


async def http_get(host: str, port: int, path: str, gate: asyncio.Event) -> str:
    """One GET on its own connection, written once ``gate`` opens; the answer's status (and
    ``+retry`` for a 503 with Retry-After), the body read and dropped."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"connect {type(exc).__name__}"
    try:
        await gate.wait()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await reader.read(65536)
            if not chunk:
                break
            head += chunk
        while await reader.read(65536):
            pass
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        if not lines[0]:
            return "closed"
        code = lines[0].split()[1]
        retry = any(line.lower().startswith("retry-after:") for line in lines[1:])
        return code + ("+retry" if code == "503" and retry else "")
    except OSError as exc:
        return f"error {type(exc).__name__}"
    finally:
        writer.close()


async def one_view(url: str, message: str, gate: asyncio.Event, done: asyncio.Event) -> str:
    """One viewer: connect, send a view once ``gate`` opens, read its answer, stay until
    ``done``. A closed socket is named by its close code (``closed 1013``: past the server's
    viewer limit), a refused handshake by its HTTP status."""
    try:
        async with connect("ws" + url[4:] + "live", open_timeout=60) as socket:
            await gate.wait()
            await socket.send(message)
            while json.loads(await socket.recv())["type"] != "nodes":
                pass
            await done.wait()
            return "answered"
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}"
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else '-'}"
    except (OSError, TimeoutError) as exc:
        return f"error {type(exc).__name__}"


async def storm_round(url: str, paths: list[str], views: list[str]) -> tuple[Counter, Counter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    gate, done = asyncio.Event(), asyncio.Event()
    gets = [asyncio.create_task(http_get(host, port, path, gate)) for path in paths]
    sockets = [asyncio.create_task(one_view(url, view, gate, done)) for view in views]
    await asyncio.sleep(0.5)  # every connection open (the server counts none until a request)
    gate.set()
    http = Counter(await asyncio.gather(*gets))
    done.set()
    return http, Counter(await asyncio.gather(*sockets))


def storm(url: str, process: psutil.Process, store: Store, requests: int, rounds: int,
          share: float) -> dict:
    """Part 3 of bench_live: ``rounds`` storms of ``requests`` requests at once, a ``share``
    of them views; figures per round."""
    rng = random.Random(1)
    nodes = sorted(path.relative_to(store.nodes_dir).with_suffix("").as_posix()
                   for path in store.nodes_dir.rglob("*.png"))
    deep = [key for key in nodes if 2 <= key.count("/") + 1 <= 4]
    n_views = round(requests * share)
    figures = []
    for _ in range(rounds):
        paths = [f"/nodes/{rng.choice(nodes)}.png" for _ in range(requests - n_views - 10)]
        paths += ["/live/status"] * 10
        views = [json.dumps({"type": "view", "root": rng.choice(deep), "rect": [0, 0, 1, 1],
                             "depth": 1_000, "seq": 1}) for _ in range(n_views)]
        before = rss(process)
        with Watch(process, interval=0.02) as watch:
            started = time.perf_counter()
            http, answered = asyncio.run(storm_round(url, paths, views))
            seconds = time.perf_counter() - started
        time.sleep(3)
        figures.append(StormRound(before, (watch.own, watch.tree), rss(process), seconds, http,
                                  answered, json.loads(get_text(url + "live/status"))))
    return {"rounds": figures, "nodes": len(nodes)}
