"""`hypermosaic build`: the recursive hypermosaic, streamed down the tile tree on Dask.

Children are submitted as soon as their parent's image exists (no barrier between levels), most
recent parents first so the frontier stays small, with a bound on batches in flight. Workers
return encoded images; this process alone writes them, atomically, so a killed build loses at
most the tiles in flight and a re-run recomputes nothing that is finished.

A batch is a fixed chunk of siblings: a parent's planned children in raster order, cut into
runs of ``batch_size`` (`sibling_batches`). Batch-mates may change a diffusion tile's pixels at
the level of float rounding, so batches are a pure function of the plan, never of what is
already stored or of what failed: a resume or a retry re-runs a node's whole batch and writes
only the nodes still missing, so the bytes equal those of an uninterrupted build.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Future, wait

from hypermosaic.config import BICUBIC, BuildConfig
from hypermosaic.engines import PrimaryJob, TileJob, create_engine
from hypermosaic.errors import InputError
from hypermosaic.executor import cpu_count, open_client
from hypermosaic.images import encode, load_image, resize, square_crop
from hypermosaic.store import Store
from hypermosaic.tasks import (
    Encoding,
    EnginePlugin,
    PrimaryImagePlugin,
    Upscalers,
    make_primary,
    make_tiles,
    make_tiles_task,
    torch_threads,
)
from hypermosaic.tree import ROOT, Address, Plan, address_key, node_seed

__all__ = [
    "BuildResult",
    "ProgressHook",
    "batch_size",
    "regenerate_node",
    "run_build",
    "sibling_batches",
    "tile_jobs",
]

RECOLOR_BATCH = 64
ATTEMPTS = 2  # submissions of a batch before its missing nodes are reported as failed
ProgressHook = Callable[[int, int], None]


@dataclass
class BuildResult:
    """What a build did; ``failed`` maps a node address to its last error."""

    out: Path
    total: int
    computed: int = 0
    reused: int = 0
    failed: dict[Address, str] = field(default_factory=dict)
    missing: int = 0
    seconds: float = 0.0
    dashboard: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing


def tile_jobs(config: BuildConfig, children: list[Address]) -> list[TileJob]:
    """The jobs of some planned nodes: their prompts, settings and address-derived seeds."""
    jobs = []
    for address in children:
        depth = len(address)
        level = config.level(depth)
        row, col = address[-1]
        prompt, negative = level.prompts_for(depth, row, col)
        jobs.append(TileJob(
            address=address,
            seed=node_seed(config.seed, address),
            prompt=prompt,
            negative_prompt=negative,
            strength=level.strength,
            steps=level.steps,
            guidance=level.guidance,
            init_upscale=level.init_upscale,
        ))
    return jobs


def batch_size(config: BuildConfig) -> int:
    """Tiles per task: the diffusion ``batch_size`` (it is in the fingerprints), or a fixed 64."""
    return RECOLOR_BATCH if config.engine == "recolor" else config.diffusion.batch_size


def sibling_batches(plan: Plan, parent: Address, size: int) -> list[list[Address]]:
    """The fixed batches of a parent's planned children: raster order, runs of ``size``."""
    children = plan.children(parent)
    return [children[start : start + size] for start in range(0, len(children), size)]


def regenerate_node(config: BuildConfig, address: Address) -> bytes:
    """Compute one node's encoded image in this process, from its stored parent.

    The node's whole batch (`sibling_batches`) is computed, as the build computed it, and this
    node's bytes returned: they equal the build's, since a node depends only on its parent,
    the primary image, its settings, its address-derived seed and its fixed batch-mates.
    """
    plan = config.plan()
    address = plan.validate_address(address)
    if not address:
        raise InputError("address: the root is not computed from a parent")
    parent = address[:-1]
    batch = next((b for b in sibling_batches(plan, parent, batch_size(config)) if address in b),
                 None)
    if batch is None:
        raise InputError(f"address: {address_key(address)} is not in this build's plan")
    store = Store(config.out, config.format)
    for needed in (parent, ROOT):
        if not store.has(needed):
            raise InputError(f"{store.node_path(needed)}: missing; build the parent first")
    with torch_threads(_torch_threads(config)):
        engine = create_engine(config.engine, _engine_settings(config))
        grid = plan.grids[len(parent)]
        images = make_tiles(engine, store.read_node(parent), store.read_node(ROOT), grid,
                            tile_jobs(config, batch), Encoding(config.format, config.quality),
                            _upscalers(config))
    return images[batch.index(address)]


def _check_init_upscalers(config: BuildConfig) -> None:
    """`InputError` naming the key for an ESRGAN ``init_upscale`` that cannot load (a damaged
    weights file, registry weights missing) or would never run: a scale of 1, or a tile crop
    too large for even one pass (``size / grid * scale > size``, leaving it all to bicubic)."""
    if not config.init_upscalers:
        return
    from hypermosaic.pipelines.esrgan import MODELS, model_scale, ncnn_model_files

    scales: dict[str, int] = {}
    for depth in range(1, config.depth + 1):
        name = config.level(depth).init_upscale
        if name == BICUBIC:
            continue
        key = config.init_upscale_key(depth)
        if name not in scales:  # each model is read once, however many levels use it
            try:
                if name in MODELS:
                    ncnn_model_files(MODELS[name].ncnn_stem)
                scales[name] = model_scale(name)
            except InputError as exc:
                raise InputError(f"{key}: {exc}") from None
        crop = config.size // config.grids[depth - 1]
        if scales[name] < 2 or crop * scales[name] > config.size:
            raise InputError(
                f"{key}: {name} (scale {scales[name]}) cannot enlarge the {crop} px tiles of "
                f"level {depth} within size {config.size}; use bicubic there, or a finer grid"
            )


def _torch_threads(config: BuildConfig) -> int:
    """Torch threads of every worker that runs torch (and of `regenerate_node`): pixels
    depend on it."""
    return cpu_count() if config.uses_torch else 0


def _upscalers(config: BuildConfig) -> Upscalers:
    """The init upscalers on ``diffusion``'s device and dtype (``auto``: float16 on CUDA,
    float32 on CPU, whatever the CPU: the dtype is in the fingerprints)."""
    return Upscalers(config.diffusion.device, config.diffusion.dtype)


def _engine_settings(config: BuildConfig) -> dict[str, Any]:
    if config.engine == "recolor":
        return config.recolor.model_dump()
    return config.diffusion.model_dump()


@dataclass
class _Batch:
    parent: Address
    index: int  # which of the parent's `sibling_batches`
    children: list[Address]
    attempt: int = 0


def run_build(
    config: BuildConfig,
    *,
    force: bool = False,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    on_start: Callable[[BuildResult, int], None] | None = None,
    on_progress: ProgressHook | None = None,
    publish: bool = True,
) -> BuildResult:
    """Build (or resume) the hypermosaic of ``config`` into ``config.out``.

    Raises `InputError`, before anything is written, for a bad primary image, recolor source
    folder or model, or a store built from other settings (unless ``force``). Tiles that keep
    failing do not raise: they are listed in ``result.failed`` (``result.ok`` is false;
    the CLI turns that into a `hypermosaic.errors.BuildError`), everything else is kept.
    """
    started = time.perf_counter()
    plan = config.plan()
    store = Store(config.out, config.format)
    encoding = Encoding(config.format, config.quality)

    # 1. Check inputs before anything is written.
    primary_image = None
    if config.primary.image is not None:
        primary_image = resize(square_crop(load_image(config.primary.image)), config.size,
                               config.size)
    if config.engine == "recolor" and config.recolor.source not in ("primary", "parent"):
        from hypermosaic.recolor import load_sources

        load_sources(config.recolor.source)
    if config.engine == "diffusion":
        from hypermosaic.pipelines.models import locate_model

        locate_model(config.diffusion.model, config.diffusion.config)
    _check_init_upscalers(config)
    fingerprints = config.fingerprints()
    store.check_compatible(fingerprints, force)
    store.remove_temporaries()

    # 2. Record what is being built, so a killed run is recognised and resumed.
    result = BuildResult(out=store.root, total=plan.count())
    manifest = _manifest(config, plan, fingerprints, complete=False)
    store.save_manifest(manifest)

    # 3. Run the tree on the pool.
    engine_settings = _engine_settings(config)
    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=config.uses_torch
    )
    with pool as active:
        result.dashboard = active.dashboard_link
        active.register_plugin(EnginePlugin(
            config.engine, engine_settings, torch_threads=_torch_threads(config),
            upscalers=_upscalers(config),
        ))
        runner = _TreeRunner(config, plan, store, encoding, active, result, on_progress,
                             fingerprints[str(plan.depth)][:8])
        try:
            runner.primary(primary_image)
            if on_start is not None:
                on_start(result, result.reused)
            runner.run()
        finally:
            runner.cancel()
            result.failed = dict(sorted(result.failed.items()))  # tree order, not finish order
            result.missing = max(0, result.total - result.reused - result.computed
                                 - len(result.failed))
            manifest.update(
                complete=result.ok,
                failed={address_key(a): e for a, e in result.failed.items()},
            )
            store.save_manifest(manifest)

        # 4. Publish on the same pool: DeepZoom, preview and optional BigTIFF.
        if publish:
            from hypermosaic.assemble import publish_build

            result.outputs = publish_build(store, plan, config.publish, active, config.quality)
            manifest["outputs"] = {k: str(v.relative_to(store.root)) for k, v in
                                   result.outputs.items()}
            store.save_manifest(manifest)
    result.seconds = time.perf_counter() - started
    return result


def _manifest(config: BuildConfig, plan: Plan, fingerprints: dict[str, str],
              complete: bool) -> dict[str, Any]:
    return {
        "size": plan.size,
        "grids": list(plan.grids),
        "depth": plan.depth,
        "focus": None if plan.focus is None else [list(step) for step in plan.focus],
        "neighbours": plan.neighbours,
        "node_format": config.format,
        "seed": config.seed,
        "engine": config.engine,
        "fingerprints": fingerprints,
        "complete": complete,
        "failed": {},
    }


class _TreeRunner:
    """Streams fixed batches of sibling tiles down the tree with a bound on work in flight."""

    def __init__(self, config: BuildConfig, plan: Plan, store: Store, encoding: Encoding,
                 client: Client, result: BuildResult, on_progress: ProgressHook | None,
                 prefix: str) -> None:
        self.config = config
        self.plan = plan
        self.store = store
        self.encoding = encoding
        self.client = client
        self.result = result
        self.on_progress = on_progress
        self.batch_size = batch_size(config)
        self.queue: deque[_Batch] = deque()
        self.in_flight: dict[Future, _Batch] = {}
        self.prefix = prefix

    @property
    def max_in_flight(self) -> int:
        return 2 * max(1, len(self.client.nthreads())) + 1

    def primary(self, image: Any) -> None:
        """Store (or reuse) the root image and hand it to every worker."""
        if self.store.has(ROOT):
            self.result.reused += 1
        elif image is not None:
            self.store.write_node(ROOT, encode(image, self.encoding.format, self.encoding.quality))
            self.result.computed += 1
        else:
            primary = self.config.primary
            job = PrimaryJob(node_seed(self.config.seed, ROOT), primary.prompt or "",
                             primary.negative_prompt, primary.steps, primary.guidance,
                             self.config.size)
            data = self.client.submit(make_primary, job, self.encoding,
                                      key=f"primary-{self.prefix}", retries=1).result()
            self.store.write_node(ROOT, data)
            self.result.computed += 1
        self.client.register_plugin(PrimaryImagePlugin(self.store.read_node(ROOT)))
        for address in self._existing_below(ROOT):
            self._enqueue_children(address)

    def _existing_below(self, address: Address) -> Iterator[Address]:
        """Stored nodes at and below ``address`` (counted as reused), parents first."""
        stack = [address]
        while stack:
            node = stack.pop()
            yield node
            for child in self.plan.children(node):
                if self.store.has(child):
                    self.result.reused += 1
                    stack.append(child)

    def _enqueue_children(self, parent: Address) -> None:
        """Queue every fixed batch of the parent's children that has a node still missing."""
        for index, batch in enumerate(sibling_batches(self.plan, parent, self.batch_size)):
            if not all(self.store.has(child) for child in batch):
                self.queue.append(_Batch(parent, index, batch))

    def _submit(self, batch: _Batch) -> None:
        grid = self.plan.grids[len(batch.parent)]
        key = (f"tiles-{self.prefix}-{address_key(batch.parent)}-{batch.index}"
               f"x{self.batch_size}-{address_key(batch.children[0][-1:])}"
               f"x{len(batch.children)}-{batch.attempt}")
        future = self.client.submit(
            make_tiles_task, self.store.read_node(batch.parent), grid,
            tile_jobs(self.config, batch.children), self.encoding, key=key, retries=1,
        )
        self.in_flight[future] = batch

    def run(self) -> None:
        """Until the tree is done: keep the pool fed, store results, enqueue grandchildren."""
        self._report()
        while self.queue or self.in_flight:
            while self.queue and len(self.in_flight) < self.max_in_flight:
                self._submit(self.queue.pop())
            done, _ = wait(list(self.in_flight), return_when="FIRST_COMPLETED")
            for future in done:
                self._finish(future, self.in_flight.pop(future))
            self._report()

    def _finish(self, future: Future, batch: _Batch) -> None:
        """Write the batch's nodes that are still missing (stored batch-mates are kept)."""
        try:
            images = future.result()
        except Exception as exc:  # noqa: BLE001 - any task error is reported per tile
            self._retry_or_fail(batch, exc)
            return
        finally:
            future.release()
        for address, data in zip(batch.children, images, strict=True):
            if self.store.has(address):
                continue
            self.store.write_node(address, data)
            self.result.computed += 1
            if self.plan.is_expanded(address):
                self._enqueue_children(address)

    def _retry_or_fail(self, batch: _Batch, exc: BaseException) -> None:
        """Resubmit a failed batch; after `ATTEMPTS` submissions report its missing nodes.

        Diffusion batch-mates decide pixels, so its batch is resubmitted whole. Recolor tiles do
        not depend on one another, so its batch is split into single tiles: one bad tile then
        costs only itself.
        """
        if isinstance(exc, InputError):
            raise exc
        if batch.attempt + 1 < ATTEMPTS:
            retries = [batch.children]
            if self.config.engine == "recolor":
                retries = [[child] for child in batch.children if not self.store.has(child)]
            self.queue.extend(_Batch(batch.parent, batch.index, children, batch.attempt + 1)
                              for children in retries)
            return
        for address in batch.children:
            if not self.store.has(address):
                self.result.failed[address] = f"{type(exc).__name__}: {exc}"

    def _report(self) -> None:
        if self.on_progress is not None:
            done = self.result.computed + self.result.reused
            self.on_progress(done, self.result.total)

    def cancel(self) -> None:
        """Drop the work in flight (Ctrl-C or an error); stored nodes stay."""
        if self.in_flight:
            self.client.cancel(list(self.in_flight))
            self.in_flight.clear()
