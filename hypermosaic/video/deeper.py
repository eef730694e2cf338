"""Videos deeper than their build: the nodes the zoom draws and the store lacks, made first.

Given the build's config (``hypermosaic video OUT_DIR --config BUILD.toml --depth D``) the
camera may fall below the depth the build reached, down any path of the config's unbounded
tree (below its ``depth`` the grid's last entry repeats). Before a frame is rendered, every
node some frame draws and the store lacks (`needed_nodes`: what both renderers paste over the
whole video, so no frame shows a node enlarged) is made on the Dask pool by
`hypermosaic.build.NodeMaker`, in its fixed batch of siblings, byte for byte as a batch build
of that depth makes it; so the video is the one such a build gives. A level's views span the
same number of that level's nodes at any depth, so a video D levels deep costs a few batches a
level, in proportion to D, not grid**D.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import Future, as_completed

from hypermosaic.build import (
    BuildConfig,
    NodeBatch,
    NodeMaker,
    check_inputs,
    check_store,
    load_build_config,
    node_batch,
)
from hypermosaic.errors import BuildError, InputError, Interrupted
from hypermosaic.executor import check_scheduler_address, open_client
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.store import Store, disk_full
from hypermosaic.tree import Address, Plan, address_key
from hypermosaic.video.camera import ZoomPath, frame_views
from hypermosaic.video.regions import Cells, address_at, frame_cells
from hypermosaic.video.settings import VideoSettings

__all__ = ["NodeSource", "make_nodes", "missing_batches", "needed_nodes", "open_source"]


@dataclass(frozen=True)
class NodeSource:
    """What makes the nodes a video lacks: the build's ``config`` (its ``out`` the build's
    folder), its primary image (None: generated from the prompt) and the pool to make them on
    (``workers`` local processes, or the cluster at ``scheduler_address``)."""

    config: BuildConfig
    primary: np.ndarray | None
    workers: int | None = None
    scheduler_address: str | None = None

    def make_missing(self, store: Store, plan: Plan, camera: ZoomPath, settings: VideoSettings,
                     frames: int, fade: int, progress: ProgressCallback | None = None) -> int:
        """Make the nodes the video's frames draw and ``store`` lacks (`needed_nodes`,
        `make_nodes`); returns how many were written."""
        needed = needed_nodes(plan, camera, settings, frames, fade)
        batches = missing_batches(self.config, store, needed)
        return make_nodes(self, store, batches, progress) if batches else 0


def open_source(config: BuildConfig | str | Path, build_dir: Path, workers: int | None,
                scheduler_address: str | None) -> NodeSource:
    """The build's ``config`` (a validated one or a TOML file) with ``build_dir`` as its
    ``out``, its inputs checked. Raises InputError naming the key, file or option."""
    check_scheduler_address(scheduler_address)
    if isinstance(config, BuildConfig):
        config = config.model_copy(update={"out": Path(build_dir)})
    else:
        config = load_build_config(config, {"out": str(build_dir)})
    return NodeSource(config, check_inputs(config), workers, scheduler_address)


def needed_nodes(plan: Plan, camera: ZoomPath, settings: VideoSettings, frames: int,
                 fade: int) -> list[Address]:
    """Every node a frame of the video draws (the camera's and the loop miniature's regions,
    `hypermosaic.video.regions.frame_cells`), with its ancestors, shallow first."""
    blocks: set[Cells] = set()
    width, height = settings.width, settings.height
    for views in frame_views(camera, settings, frames, fade):
        if views.weight < 1:
            blocks.update(frame_cells(plan, width, height, views.camera))
        if views.weight > 0:
            blocks.update(frame_cells(plan, width, height, views.miniature))
    spots = {(block.depth, *spot) for block in blocks for spot in block.spots()}
    wanted: set[Address] = set()
    for depth, row, col in spots:
        address = address_at(plan, depth, row, col)
        wanted.update(address[:level] for level in range(depth + 1))
    return sorted(wanted, key=lambda address: (len(address), address))


def missing_batches(config: BuildConfig, store: Store,
                    needed: list[Address]) -> list[NodeBatch]:
    """The fixed batches that make the ``needed`` nodes ``store`` lacks (the root aside: the
    `NodeMaker` stores it when it opens)."""
    batches: list[NodeBatch] = []
    covered: set[Address] = set()
    for address in needed:
        if address and address not in covered and not store.has(address):
            batch = node_batch(config, address)
            batches.append(batch)
            covered.update(batch.children)
    return batches


def make_nodes(source: NodeSource, store: Store, batches: list[NodeBatch],
               progress: ProgressCallback | None = None) -> int:
    """Make ``batches`` on the pool (each as soon as its parent is stored), writing every node
    as its batch lands, so Ctrl-C loses only the batches in flight; returns the nodes written.
    ``progress`` receives `hypermosaic.progress.Progress` events in ``nodes``.

    Raises InputError for a store built from other settings or an engine that cannot run
    (the `NodeMaker`'s checks), BuildError for a batch that failed twice, `Interrupted` on
    Ctrl-C: whatever landed is kept.
    """
    check_store(source.config, store)  # before the pool starts: a mismatch is one quick line
    total = sum(not store.has(address) for batch in batches for address in batch.children)
    made = 0
    try:
        with open_client(source.workers, source.scheduler_address,
                         gpu=source.config.uses_torch) as client:
            maker = NodeMaker(source.config, store, client, source.primary)
            report(progress, "nodes", 0, total)  # after its checks: a refusal draws no bar
            try:
                for written in _landed(maker, batches):
                    made += len(written)
                    report(progress, "nodes", made, total)
            except BuildError as exc:
                raise BuildError(f"{exc}; the {made} nodes made so far are kept in "
                                 f"{store.root}; run the same command again") from exc.__cause__
            finally:
                maker.close()
    except KeyboardInterrupt:
        raise Interrupted(f"no video written; the {made} nodes made so far are kept in "
                          f"{store.root}; run the same command again") from None
    return made


def _landed(maker: NodeMaker, batches: list[NodeBatch]) -> Iterator[list[Address]]:
    """Submit each batch once its parent is stored and yield the nodes it wrote as it lands:
    a batch starts as soon as its parent arrives, not its whole level. Raises BuildError for
    a batch that failed (an InputError as itself)."""
    waiting: dict[Address, list[NodeBatch]] = defaultdict(list)
    for batch in batches:
        waiting[batch.parent].append(batch)
    running = as_completed()
    submitted: dict[Future, NodeBatch] = {}

    def start(parent: Address) -> None:
        for batch in waiting.pop(parent, []):
            future = maker.submit(batch)
            submitted[future] = batch
            running.add(future)

    for parent in [parent for parent in waiting if maker.store.has(parent)]:
        start(parent)
    for future in running:
        batch = submitted.pop(future)
        try:
            written = maker.store_result(future, batch)
        except InputError:
            raise
        except Exception as exc:  # a full disk while storing (one line), or the task's error
            full = disk_full(exc, maker.store.root)
            if full is not None:
                raise full from None
            raise BuildError(f"making the nodes below {address_key(batch.parent)} failed "
                             f"({type(exc).__name__}: {exc})") from exc
        yield written
        for child in batch.children:
            start(child)
