"""The zoomable viewer of a build: a static ``index.html`` with OpenSeadragon beside the DeepZoom.

The page carries the DeepZoom descriptor inline, so it needs no request for the ``.dzi`` and works
opened straight from the file system (``file://``) as well as through `hypermosaic serve` or any
static server. Its DisplayRects come along, so OpenSeadragon asks only for the tiles a sparse
pyramid has, and an empty icon keeps the browser from asking for a ``/favicon.ico``: a viewer
session logs no 404. OpenSeadragon is vendored in the package data (BSD-3-Clause, its licence copied
along) and uses the canvas drawer, which draws tiles loaded from ``file://`` too. A canvas's
360° panorama gets a page of its own (`write_panorama_viewer`) with Pannellum, vendored alike.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path

from hypermosaic.errors import InputError
from hypermosaic.publish.descriptor import DZI_NS
from hypermosaic.store import atomic_write

__all__ = ["write_viewer", "write_panorama_viewer", "read_dzi", "VIEWER_NAME", "OSD_DIR",
           "PANNELLUM_DIR"]

VIEWER_NAME = "index.html"
OSD_DIR = "openseadragon"
PANNELLUM_DIR = "pannellum"
PANNELLUM_FILES = ("pannellum.js", "pannellum.css", "COPYING")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>
  html, body {{ margin: 0; height: 100%; background: #111; color: #ccc; font: 14px sans-serif; }}
  #viewer {{ position: absolute; inset: 0; }}
  #help {{ position: absolute; left: 8px; bottom: 6px; opacity: 0.6; pointer-events: none; }}
</style>
</head>
<body>
<div id="viewer"></div>
<div id="help">scroll or pinch to zoom, drag to pan, 0 to reset</div>
<script src="{osd}/openseadragon.min.js"></script>
<script>
  window.viewer = OpenSeadragon({{
    id: "viewer",
    prefixUrl: "{osd}/images/",
    tileSources: {source},
    drawer: "canvas",
    showNavigator: true,
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    animationTime: 0.8
  }});
</script>
</body>
</html>
"""


PANORAMA_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{lib}/pannellum.css">
<style>
  html, body {{ margin: 0; height: 100%; background: #111; }}
  #panorama {{ position: absolute; inset: 0; }}
</style>
</head>
<body>
<div id="panorama"></div>
<script src="{lib}/pannellum.js"></script>
<script>
  window.viewer = pannellum.viewer("panorama", {{
    type: "equirectangular",
    panorama: {image},
    autoLoad: true,
    showZoomCtrl: true,
    compass: false
  }});
</script>
</body>
</html>
"""


def write_panorama_viewer(out_dir: Path, image_name: str, page_name: str) -> Path:
    """Write ``page_name`` and ``pannellum/`` into ``out_dir``: a 360° viewer of the
    equirectangular panorama ``image_name`` beside it (drag to look round, scroll to zoom).

    Pannellum is vendored in the package data (MIT, its ``COPYING`` copied along). Browsers
    refuse WebGL textures from ``file://`` pages, so the page is opened through a server.
    Returns the page's path; every file is written atomically.
    """
    out_dir = Path(out_dir)
    source = files("hypermosaic") / "data" / PANNELLUM_DIR
    for name in PANNELLUM_FILES:
        atomic_write(out_dir / PANNELLUM_DIR / name, (source / name).read_bytes())
    page = PANORAMA_PAGE.format(title=html.escape(f"hypermosaic: {Path(image_name).stem}"),
                                lib=PANNELLUM_DIR,
                                image=json.dumps(image_name).replace("</", "<\\/"))
    path = out_dir / page_name
    atomic_write(path, page.encode("utf-8"))
    return path


def read_dzi(path: Path) -> dict[str, object]:
    """The DeepZoom descriptor as OpenSeadragon's inline form ``{"Image": {...}}``.

    Its DisplayRects, if any, become ``"DisplayRect": [{"Rect": {...}}]`` with ``MinLevel`` and
    ``MaxLevel`` inside each ``Rect``, the form OpenSeadragon's DziTileSource reads. Raises
    InputError if the file is missing or is not a DeepZoom ``Image`` descriptor.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise InputError(f"{path}: no DeepZoom descriptor here") from None
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"{path}: unreadable DeepZoom descriptor: {exc}") from None
    size = root.find(f"{{{DZI_NS}}}Size")
    if root.tag != f"{{{DZI_NS}}}Image" or size is None:
        raise InputError(f"{path}: not a DeepZoom descriptor (no Image/Size)")
    try:
        image: dict[str, object] = {
            "xmlns": DZI_NS,
            "Url": f"{path.stem}_files/",
            "Format": root.attrib["Format"],
            "Overlap": int(root.attrib["Overlap"]),
            "TileSize": int(root.attrib["TileSize"]),
            "Size": {"Width": int(size.attrib["Width"]), "Height": int(size.attrib["Height"])},
        }
        rects = [_display_rect(node) for node in root.iter(f"{{{DZI_NS}}}DisplayRect")]
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: bad DeepZoom descriptor attribute {exc}") from None
    if rects:
        image["DisplayRect"] = rects
    return {"Image": image}


def _display_rect(node: ET.Element) -> dict[str, dict[str, int]]:
    """One ``DisplayRect`` element as ``{"Rect": {X, Y, Width, Height, MinLevel, MaxLevel}}``."""
    rect = node.find(f"{{{DZI_NS}}}Rect")
    if rect is None:
        raise KeyError("Rect")
    return {"Rect": {**{key: int(rect.attrib[key]) for key in ("X", "Y", "Width", "Height")},
                     **{key: int(node.attrib[key]) for key in ("MinLevel", "MaxLevel")}}}


def _copy_openseadragon(target: Path) -> None:
    """Copy the vendored OpenSeadragon (script, button images, licence) into ``target``."""
    source = files("hypermosaic") / "data" / OSD_DIR
    for name in ("openseadragon.min.js", "LICENSE.txt"):
        atomic_write(target / name, (source / name).read_bytes())
    for image in (source / "images").iterdir():
        if image.name.endswith(".png"):
            atomic_write(target / "images" / image.name, image.read_bytes())


def write_viewer(out_dir: Path, dzi_name: str = "mosaic.dzi") -> Path:
    """Write ``index.html`` and ``openseadragon/`` into ``out_dir`` beside ``dzi_name``.

    Returns the page's path. Raises InputError if the descriptor is missing or malformed; every
    file is written atomically, so a page being viewed is never seen half-written.
    """
    out_dir = Path(out_dir)
    source = read_dzi(out_dir / dzi_name)
    _copy_openseadragon(out_dir / OSD_DIR)
    inline = json.dumps(source, indent=2).replace("</", "<\\/")
    page = PAGE.format(title=html.escape(f"hypermosaic: {out_dir.name}"), osd=OSD_DIR,
                       source=inline)
    path = out_dir / VIEWER_NAME
    atomic_write(path, page.encode("utf-8"))
    return path
