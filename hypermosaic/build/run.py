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

from distributed import Client

from hypermosaic.build.checks import check_inputs, engine_spec, torch_threads
from hypermosaic.build.config import BuildConfig, load_build_config
from hypermosaic.build.fingerprint import fingerprints as config_fingerprints
from hypermosaic.build.runner import BuildResult, TreeRunner
from hypermosaic.build.tasks import Encoding, build_state
from hypermosaic.executor import open_client
from hypermosaic.progress import ProgressCallback
from hypermosaic.publish import publish_build
from hypermosaic.store import Store
from hypermosaic.tree import Plan, address_key

__all__ = ["build_mosaic"]


def build_mosaic(
    config: BuildConfig | Path | str,
    *,
    depth: int | None = None,
    out: Path | str | None = None,
    seed: int | None = None,
    engine: str | None = None,
    force: bool = False,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    publish: bool = True,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build (or resume) the hypermosaic of ``config`` (a validated config, or the path of a
    TOML file that ``depth``, ``out``, ``seed`` and ``engine`` override) into its ``out``.

    Raises `InputError`, before anything is written, for a bad config, primary image, recolor
    source folder or model, or a store built from other settings (unless ``force``). Tiles
    that keep failing do not raise: they are listed in ``result.failed`` (``result.ok`` is
    false; the CLI turns that into a `hypermosaic.errors.BuildError`), everything else is kept.
    ``progress`` receives ``nodes`` (then ``outputs`` while publishing).
    """
    started = time.perf_counter()
    if not isinstance(config, BuildConfig):
        config = load_build_config(config, {"depth": depth, "out": out, "seed": seed,
                                            "engine": engine})
    plan = config.plan()
    store = Store(config.out, config.format)

    # 1. Check inputs before anything is written.
    primary_image = check_inputs(config)
    fingerprints = config_fingerprints(config)
    store.check_compatible(fingerprints, force)
    store.remove_temporaries()

    # 2. Record what is being built, so a killed run is recognised and resumed.
    result = BuildResult(out=store.root, total=plan.count())
    manifest = _manifest(config, plan, fingerprints, complete=False)
    store.save_manifest(manifest)

    # 3. Run the tree on the pool.
    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=config.uses_torch
    )
    with pool as active:
        result.dashboard = active.dashboard_link
        active.register_plugin(build_state(engine_spec(config), torch_threads(config)))
        runner = TreeRunner(config, plan, store, Encoding(config.format, config.quality), active,
                            result, progress, fingerprints[str(plan.depth)][:8])
        try:
            runner.primary(primary_image)
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
            result.outputs = publish_build(store, plan, config.publish, active, config.quality,
                                           progress)
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
