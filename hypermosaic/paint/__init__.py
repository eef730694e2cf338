"""`hypermosaic paint`: semantic brushes in the browser, the canvas streaming beside them
(StreamMultiDiffusion's Semantic Palette on `hypermosaic canvas`'s regions).

Entry point: `paint`. `Painting` is what the page edits; `write_config` / `read_painting`
turn it into a canvas config and back; `paint_app` is the server's app on an open pool.
"""

from __future__ import annotations

from hypermosaic.paint.painting import Brush, Painting, read_painting, write_config
from hypermosaic.paint.run import blank_painting, paint, paint_app

__all__ = ["Brush", "Painting", "blank_painting", "paint", "paint_app", "read_painting",
           "write_config"]
