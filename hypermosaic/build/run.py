"""`hypermosaic build`: the recursive hypermosaic, built (or resumed) and published.

The steps: the config is validated (`hypermosaic.build.config`), every input is checked before
anything is written (`hypermosaic.build.checks`), the store is checked against the config's
fingerprints, the tree is streamed through the Dask pool (`hypermosaic.build.runner`) and the
result is published (`hypermosaic.publish`) on the same pool.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyvips
from distributed import Client

from hypermosaic.build.checks import check_inputs, engine_spec, worker_threads
from hypermosaic.build.config import BuildConfig, resolve_build_config
from hypermosaic.build.estimate import Estimate, check_room, estimate
from hypermosaic.build.fingerprint import fingerprints as config_fingerprints
from hypermosaic.build.grow import new_manifest
from hypermosaic.build.runner import BuildResult, TreeRunner
from hypermosaic.build.tasks import Encoding, build_state, state_names
from hypermosaic.errors import Interrupted
from hypermosaic.executor import check_scheduler_address, open_client, release_states
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.publish import publication_source, publish_build
from hypermosaic.store import Store, disk_full, folder_lock
from hypermosaic.tree import address_key

__all__ = ["build_mosaic"]


def build_mosaic(
    config: BuildConfig | Path | str,
    *,
    depth: int | None = None,
    out: Path | str | None = None,
    seed: int | None = None,
    engine: str | None = None,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    force: bool = False,
    yes: bool = False,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    publish: bool = True,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build (or resume) the hypermosaic of ``config`` (a validated config, or the path of a
    TOML file that ``depth``, ``out``, ``seed``, ``engine`` and the diffusion ``model``,
    ``device`` and ``dtype`` override) into its ``out``.

    Raises `InputError`, before anything is written, for a bad config, primary image, recolor
    source folder or model, a store built from other settings (unless ``force``), an output
    folder another run holds or that cannot be written, or a build larger than the disk or
    memory can hold (unless ``yes``); and during the work for a full disk. Tiles that keep
    failing do not raise: they are listed in ``result.failed`` (``result.ok`` is false; the
    CLI turns that into a `hypermosaic.errors.BuildError`), everything else is kept. Ctrl-C
    raises `hypermosaic.errors.Interrupted`: finished nodes are kept. ``progress`` receives
    ``nodes`` (its first event's note is the estimate), then ``outputs`` while publishing.
    """
    started = time.perf_counter()
    config = resolve_build_config(config, "build_mosaic", depth=depth, out=out, seed=seed,
                                  engine=engine, model=model, device=device, dtype=dtype)

    # 1. Check inputs and room before anything is written.
    primary_image = check_inputs(config)
    check_scheduler_address(scheduler_address)
    needed = estimate(config)
    check_room(config, needed, yes=yes)
    try:
        with folder_lock(Path(config.out)):
            return _build(config, primary_image, needed, force=force, workers=workers,
                          scheduler_address=scheduler_address, client=client,
                          publish=publish, progress=progress, started=started)
    except KeyboardInterrupt:
        raise Interrupted(f"finished nodes are kept in {config.out}; run the same command "
                          "again to resume") from None
    except (OSError, pyvips.Error) as exc:  # libvips' own error when publishing
        full = disk_full(exc, Path(config.out), needed.disk)
        if full is None:
            raise
        raise full from None


def _build(config: BuildConfig, primary_image: np.ndarray | None, needed: Estimate, *,
           force: bool, workers: int | None, scheduler_address: str | None,
           client: Client | None, publish: bool, progress: ProgressCallback | None,
           started: float) -> BuildResult:
    """The build proper, in its locked output folder (numbered steps continue
    `build_mosaic`'s)."""
    plan = config.plan()
    store = Store(config.out, config.format)
    fingerprints = config_fingerprints(config)
    store.check_compatible(fingerprints, force)
    store.remove_temporaries()

    # 2. Record what is being built, so a killed run is recognised and resumed; the manifest
    # says nothing is published until publishing ends. A finished build published from these
    # very nodes and settings is left untouched: a re-run does no work and writes nothing.
    # Nodes made live below this depth keep their fingerprints (`hypermosaic.build.grow`).
    result = BuildResult(out=store.root, total=plan.count(), estimate=str(needed))
    stored = store.load_manifest() or {}
    recorded = stored.get("fingerprints", {})
    deeper = {depth: value for depth, value in recorded.items() if int(depth) > plan.depth}
    manifest = new_manifest(config, {**fingerprints, **deeper})
    outputs = _still_published(config, store, stored, manifest)
    if outputs is not None:
        result.reused, result.outputs = result.total, outputs
        report(progress, "nodes", result.total, result.total, skipped=result.total,
               note=result.estimate)
        result.seconds = time.perf_counter() - started
        return result
    store.save_manifest(manifest)

    # 3. Run the tree on the pool.
    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=config.uses_torch
    )
    build = fingerprints[str(plan.depth)][:8]
    with pool as active:
        result.dashboard = active.dashboard_link
        active.register_plugin(build_state(build, engine_spec(config), worker_threads(config)))
        runner = TreeRunner(config, plan, store, Encoding(config.format, config.quality), active,
                            result, progress, build)
        try:
            runner.primary(primary_image)
            if result.reused < result.total:  # the published pyramid no longer shows it all
                store.clear_published()
            runner.run()
        finally:
            runner.cancel()
            release_states(active, *state_names(build))  # frees the workers' models
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
            result.outputs = publish_build(store, plan, config.publish, active, config.quality,
                                           progress)
            manifest.update(published=True, outputs={
                k: str(v.relative_to(store.root)) for k, v in result.outputs.items()},
                published_from=publication_source(store, plan, config.publish,
                                                  config.quality))
            store.save_manifest(manifest)
    result.seconds = time.perf_counter() - started
    return result


def _still_published(config: BuildConfig, store: Store, stored: dict[str, Any],
                     manifest: dict[str, Any]) -> dict[str, Path] | None:
    """The outputs of a stored build that a re-run of ``config`` would leave as they are, or
    None: the stored ``manifest`` records the same build (``manifest``'s keys), complete and
    published, its outputs are there, and the nodes and publish settings are those it was
    published from (`publication_source`). Then no node is missing and no output is stale."""
    progress = ("complete", "failed", "published", "outputs")
    if not stored.get("complete") or not stored.get("published") or any(
            stored.get(key) != value for key, value in manifest.items() if key not in progress):
        return None
    outputs = {name: store.root / path for name, path in stored.get("outputs", {}).items()}
    if not all(path.exists() for path in outputs.values()):
        return None
    source = publication_source(store, config.plan(), config.publish, config.quality)
    return outputs if stored.get("published_from") == source else None

