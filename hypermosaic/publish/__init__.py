"""Publishing: a build's DeepZoom pyramid, preview and BigTIFF, its viewer page and server.

`publish_build` writes what a build shows (`hypermosaic.build` calls it after the tiles);
`serve_build` serves a build folder read-only to a browser (``hypermosaic serve``);
`staged_deepzoom` is the one way any command writes a DeepZoom pair atomically.
"""

from __future__ import annotations

from hypermosaic.publish.assemble import canvas_image
from hypermosaic.publish.config import PublishConfig
from hypermosaic.publish.deepzoom import staged_deepzoom
from hypermosaic.publish.run import DZI_NAME, publication_source, publish_build
from hypermosaic.publish.server import (
    RunningServer,
    make_app,
    run_server,
    serve_build,
    start_server,
)
from hypermosaic.publish.viewer import read_dzi, write_panorama_viewer, write_viewer

__all__ = [
    "DZI_NAME",
    "PublishConfig",
    "RunningServer",
    "canvas_image",
    "make_app",
    "publication_source",
    "publish_build",
    "read_dzi",
    "run_server",
    "serve_build",
    "staged_deepzoom",
    "start_server",
    "write_panorama_viewer",
    "write_viewer",
]
