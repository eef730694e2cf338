"""`hypermosaic build`: a primary image cut into a grid, every tile turned into a full
sub-image that keeps the tile's look, recursively; streamed on Dask and published.

Entry point: `build_mosaic`. The config schema is `BuildConfig` (`load_build_config` reads a
TOML file); `regenerate_node` recomputes one node exactly as the build made it.
"""

from __future__ import annotations

from hypermosaic.build.config import BuildConfig, build_config_from_dict, load_build_config
from hypermosaic.build.regenerate import regenerate_node
from hypermosaic.build.run import build_mosaic
from hypermosaic.build.runner import BuildResult

__all__ = [
    "BuildConfig",
    "BuildResult",
    "build_config_from_dict",
    "build_mosaic",
    "load_build_config",
    "regenerate_node",
]
