"""Which build, which plan and which node: what the camera falls through and into.

`open_build` opens the store (a finished build; with the build's config, one in any state),
`video_plan` continues its plan below the built depth when the video goes deeper (the config's
grids, the last one repeating), and `choose_path` picks the target: a given path, the build's
focus or the central path, continued through central tiles.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hypermosaic.errors import InputError
from hypermosaic.store import Store
from hypermosaic.tree import Address, Plan, address_key, parse_address
from hypermosaic.video.settings import VideoSettings

if TYPE_CHECKING:
    from hypermosaic.build import BuildConfig

__all__ = ["MAX_CANVAS", "choose_path", "open_build", "video_plan"]

MAX_CANVAS = 2**48
"""Most canvas pixels across the zoom's target depth: the camera works in float canvas
coordinates, which keep a hundredth of a pixel of accuracy up to there (2**-53 relative)."""


def open_build(build_dir: Path, config: BuildConfig | None = None) -> tuple[Store, Plan]:
    """Open a finished build; with its ``config``, which makes what is missing, one in any
    state (incomplete, or not begun: then the config's plan). Raises InputError if it is
    missing, unreadable or (without a config) incomplete."""
    build_dir = Path(build_dir)
    if config is not None:
        if Store(build_dir).load_manifest() is None:
            return Store(build_dir, config.format), config.plan()
        store = Store.open(build_dir)
        return store, store.plan()
    if not build_dir.is_dir():
        raise InputError(f"{build_dir}: no such build directory")
    store = Store.open(build_dir)
    manifest = store.load_manifest() or {}
    if manifest.get("complete") is not True:
        raise InputError(
            f"{build_dir}: the build is incomplete (still running or interrupted); "
            "run `hypermosaic build` again to finish it, or pass --config to make what the "
            "video needs"
        )
    return store, store.plan()


def _central(plan: Plan, depth: int) -> tuple[int, int]:
    grid = plan.grids[depth]
    return grid // 2, grid // 2


def choose_path(store: Store, plan: Plan, path: str | None, depth: int | None = None,
                stored: bool = True) -> Address:
    """The node the camera zooms into: ``path``, else the build's focus, else the central path,
    continued through central tiles to ``depth`` steps (None: while those nodes are stored,
    down to the plan's depth).

    With ``stored`` (no config to make what is missing) every node on the path must be
    stored. Raises InputError for a path outside the grids or, with ``stored``, through nodes
    the build lacks.
    """
    if plan.depth == 0:
        raise InputError(f"{store.root}: the build has depth 0; there is nothing to zoom into")
    if path is not None:
        try:
            target = plan.validate_address(parse_address(path))
        except ValueError as exc:
            raise InputError(f"--path {path}: {exc}") from None
    elif plan.focus is not None:
        target = tuple(plan.focus[: plan.depth if depth is None else depth])
    else:
        target = ()
    goal = plan.depth if depth is None else depth
    if not stored:
        return target + tuple(_central(plan, level) for level in range(len(target), goal))
    for level in range(len(target) + 1):
        if not store.has(target[:level]):
            _missing(store, target, target[:level], f"path {address_key(target)}")
    while len(target) < goal:
        child = target + (_central(plan, len(target)),)
        if not store.has(child):
            if depth is not None:
                _missing(store, child, child, f"--depth {depth}")
            break
        target = child
    if not target:
        raise InputError(f"{store.root}: no node below the primary image is stored")
    return target


def _missing(store: Store, target: Address, node: Address, wanted: str) -> NoReturn:
    """Refuse a path through ``node``, which the build lacks. Raises InputError."""
    deepest = store.deepest_available(target)
    raise InputError(
        f"{store.root}: the build is too shallow for {wanted}: node {address_key(node)} is "
        f"missing (deepest stored: {address_key(deepest)}); pass --config BUILD.toml, the "
        "build's config, to make it"
    )


def video_plan(plan: Plan, settings: VideoSettings, config: BuildConfig | None,
               root: Path) -> Plan:
    """The plan the camera flies through: the build's ``plan``, continued below its depth with
    the ``config``'s grids when ``--depth`` (or a longer ``--path``) goes deeper.

    Raises InputError naming the option when it goes deeper without a config, or so deep that
    the canvas would exceed `MAX_CANVAS` pixels at the target's depth.
    """
    steps = 0 if settings.path is None else len(parse_address(settings.path))
    depth = settings.depth if settings.depth is not None else max(plan.depth, steps)
    if settings.depth is not None:
        option = f"--depth {settings.depth}"
    else:
        option = f"--path {settings.path}" if steps > plan.depth else str(root)
    if depth > plan.depth:
        if config is None:
            raise InputError(
                f"{option}: deeper than the build in {root} (depth {plan.depth}); pass "
                "--config BUILD.toml, the build's config, to make the nodes below it"
            )
        grids = plan.grids + tuple(config.grid_at(d) for d in range(plan.depth, depth))
        plan = Plan(plan.size, grids, plan.focus, plan.neighbours)
    deepest = max(d for d in range(plan.depth + 1)
                  if plan.size * math.prod(plan.grids[:d]) <= MAX_CANVAS)
    if depth > deepest:
        raise InputError(
            f"{option}: a zoom {depth} levels deep is past the camera's precision (at most "
            f"{deepest} levels with this build's size and grids); choose --depth {deepest} or "
            "less"
        )
    return plan
