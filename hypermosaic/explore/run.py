"""`hypermosaic explore CONFIG`: the build's store in a browser, grown live below what was built.

The steps: the config is read as `hypermosaic build` reads it (same file, same overrides), its
inputs are checked, the output folder is locked (one run per folder: a build and a live session
never write the same store), the Dask pool is opened (local, or ``--scheduler-address``), the
`hypermosaic.build.NodeMaker` registers the build's worker states (the engine loads there
once), and the server runs until Ctrl-C, which loses only the batches in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from distributed import Client

from hypermosaic.build import (
    BuildConfig,
    NodeMaker,
    check_inputs,
    check_store,
    resolve_build_config,
)
from hypermosaic.errors import Interrupted
from hypermosaic.executor import check_scheduler_address, open_client
from hypermosaic.explore.app import LiveHub, live_lifespan, live_routes
from hypermosaic.publish import make_app, run_server
from hypermosaic.store import Store, folder_lock

__all__ = ["explore_build"]


def explore_build(
    config: BuildConfig | Path | str,
    *,
    out: Path | str | None = None,
    seed: int | None = None,
    engine: str | None = None,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    workers: int | None = None,
    scheduler_address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the live viewer of ``config`` (a validated config or a TOML path, with the
    overrides ``hypermosaic build`` takes) until interrupted; ``on_ready(url)`` once listening.

    Raises `InputError` before any work for a bad config or input, a store built from other
    settings, a folder another run holds, or an address the server cannot listen on.
    """
    config = resolve_build_config(config, "explore_build", out=out, seed=seed, engine=engine,
                                  model=model, device=device, dtype=dtype)
    primary_image = check_inputs(config)
    check_scheduler_address(scheduler_address)
    store = Store(config.out, config.format)
    try:
        with folder_lock(Path(config.out)):
            check_store(config, store)  # before the pool starts: a mismatch is one quick line
            with open_client(workers, scheduler_address, gpu=config.uses_torch) as client:
                _serve(config, NodeMaker(config, store, client, primary_image), client, host,
                       port, verbose, on_ready)
    except KeyboardInterrupt:
        raise Interrupted(f"the nodes made so far are kept in {config.out}") from None


def _serve(config: BuildConfig, maker: NodeMaker, client: Client, host: str, port: int,
           verbose: bool, on_ready: Callable[[str], None] | None) -> None:
    """Run the live server on an open pool until Ctrl-C; the scheduler and the workers'
    states are released however it ends."""
    hub = LiveHub(config, maker, max_in_flight=2 * max(1, len(client.nthreads())) + 1)
    app = make_app(maker.store.root, routes=live_routes(hub, Path(config.out).name),
                   lifespan=live_lifespan(hub))
    try:
        run_server(app, host=host, port=port, verbose=verbose, on_ready=on_ready)
    finally:
        hub.scheduler.stop()
        maker.close()
