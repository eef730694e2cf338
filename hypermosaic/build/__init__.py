"""`hypermosaic build`: a primary image cut into a grid, every tile turned into a full
sub-image that keeps the tile's look, recursively; streamed on Dask and published.

Entry point: `build_mosaic`. The config schema is `BuildConfig` (`load_build_config` reads a
TOML file); `regenerate_node` recomputes one node exactly as the build made it; `NodeMaker`
makes any node, below the built depth too, on demand (for the live viewer and deeper videos).
"""

from __future__ import annotations

from hypermosaic.build.checks import check_inputs
from hypermosaic.build.config import (
    BuildConfig,
    build_config_from_dict,
    load_build_config,
    resolve_build_config,
)
from hypermosaic.build.grow import NodeBatch, NodeMaker, check_store, node_batch, unbounded_plan
from hypermosaic.build.regenerate import regenerate_node
from hypermosaic.build.run import build_mosaic
from hypermosaic.build.runner import BuildResult

__all__ = [
    "BuildConfig",
    "BuildResult",
    "NodeBatch",
    "NodeMaker",
    "build_config_from_dict",
    "build_mosaic",
    "check_inputs",
    "check_store",
    "load_build_config",
    "node_batch",
    "regenerate_node",
    "resolve_build_config",
    "unbounded_plan",
]
