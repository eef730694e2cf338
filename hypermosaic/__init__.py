"""hypermosaic: hypermosaics and ultra-large generated images.

One entry function per command, each taking a validated config (or a config file) and the
command line's options as keyword arguments, reporting through an optional progress callback
and returning a result object::

    import hypermosaic

    result = hypermosaic.build_mosaic("examples/demo.toml", depth=2)
    hypermosaic.render_video(result.out, gif=True)

The core imports without torch; the torch/diffusers parts live in `hypermosaic.pipelines`,
reached only through `hypermosaic.registry`, and the click commands in `hypermosaic.cli`. The
entry functions are imported on first use, so ``import hypermosaic`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hypermosaic.build import build_mosaic
    from hypermosaic.canvas import paint_canvases
    from hypermosaic.explore import explore_build
    from hypermosaic.frame import frame_print
    from hypermosaic.paint import paint
    from hypermosaic.progress import Progress
    from hypermosaic.publish import publish_build, serve_build
    from hypermosaic.upscale import upscale_images
    from hypermosaic.video import render_video

__all__ = [
    "Progress",
    "build_mosaic",
    "explore_build",
    "frame_print",
    "paint",
    "paint_canvases",
    "publish_build",
    "render_video",
    "serve_build",
    "upscale_images",
]

_ENTRY_POINTS = {
    "Progress": "hypermosaic.progress",
    "build_mosaic": "hypermosaic.build",
    "explore_build": "hypermosaic.explore",
    "frame_print": "hypermosaic.frame",
    "paint": "hypermosaic.paint",
    "paint_canvases": "hypermosaic.canvas",
    "publish_build": "hypermosaic.publish",
    "render_video": "hypermosaic.video",
    "serve_build": "hypermosaic.publish",
    "upscale_images": "hypermosaic.upscale",
}


def __getattr__(name: str) -> Any:
    """Import an entry function's package the first time the function is asked for."""
    if name in _ENTRY_POINTS:
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'hypermosaic' has no attribute {name!r}")
