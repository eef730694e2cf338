"""The viewer page, the read-only server, and a real browser zooming into a build."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.build import build_mosaic
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.errors import InputError
from hypermosaic.publish.viewer import read_dzi, write_viewer
from tests.helpers import running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-extensions", "--disable-sync", "--no-first-run", "--mute-audio",
]


@pytest.fixture(scope="module")
def published(examples_dir, tmp_path_factory, dask_client) -> Path:
    """A build published as DeepZoom: 64 px nodes, grid 4, depth 2 (a 1024 px canvas)."""
    out = tmp_path_factory.mktemp("viewer") / "build"
    config = build_config_from_dict(
        {"seed": 2, "size": 64, "grid": 4, "depth": 2, "engine": "recolor",
         "primary": {"image": "images/chelsea.png"}, "out": str(out)},
        base=examples_dir, source="test.toml",
    )
    build_mosaic(config, client=dask_client)
    return out


def test_viewer_page_carries_the_descriptor_and_openseadragon(published):
    page = (published / "index.html").read_text()
    inline = json.loads(re.search(r"tileSources: (\{.*?\n\})", page, re.S).group(1))
    assert inline == read_dzi(published / "mosaic.dzi")
    image = inline["Image"]
    assert image["Size"] == {"Width": 1024, "Height": 1024}
    assert image["Url"] == "mosaic_files/"
    assert (published / "mosaic_files" / "10" / f"0_0.{image['Format']}").is_file()
    osd = published / "openseadragon"
    assert (osd / "openseadragon.min.js").read_bytes().startswith(b"//! openseadragon")
    assert "Redistribution and use" in (osd / "LICENSE.txt").read_text()
    assert (osd / "images" / "zoomin_rest.png").is_file()
    assert 'src="openseadragon/openseadragon.min.js"' in page


def test_write_viewer_refuses_a_missing_or_bad_descriptor(tmp_path):
    with pytest.raises(InputError, match="no DeepZoom descriptor"):
        write_viewer(tmp_path, "mosaic.dzi")
    (tmp_path / "mosaic.dzi").write_text("<Image/>")
    with pytest.raises(InputError, match="not a DeepZoom descriptor"):
        write_viewer(tmp_path, "mosaic.dzi")
    assert not (tmp_path / "index.html").exists()


def test_make_test_provisions_the_chromium_the_browser_test_uses():
    """`make test` installs chromium at the path the browser test launches when it is missing,
    `.ci/run` is just that command, and docs/testing.md says so."""
    repo = Path(__file__).resolve().parents[2]
    makefile = (repo / "Makefile").read_text()
    assert f"CHROMIUM ?= {CHROMIUM}\n" in makefile
    assert "\ntest: setup chromium\n" in makefile and "\nchromium:\n" in makefile
    script = (repo / ".ci" / "run").read_text()
    assert script.rstrip().splitlines()[-1] == "make test" and "apt-get" not in script
    assert CHROMIUM in (repo / "docs" / "testing.md").read_text()


@pytest.fixture()
def serve_process(published):
    """`hypermosaic serve OUT_DIR --port 0` as a user runs it; yields the URL it prints."""
    with running_server("serve", str(published), "--port", "0") as (url, _):
        yield url


WAIT_DRAWN = """level => window.drawn !== undefined && window.drawn.has(level)
    && viewer.world.getItemAt(0).getFullyLoaded()"""
RECORD_DRAWN = """() => {
    window.drawn = new Set();
    viewer.addHandler('tile-drawn', e => window.drawn.add(e.tile.level));
    viewer.viewport.zoomTo(viewer.viewport.getMaxZoom(), null, true);
    viewer.viewport.panTo(new OpenSeadragon.Point(0.37, 0.61), true);
    return viewer.world.getItemAt(0).source.maxLevel;
}"""


def zoom_to_the_deepest_level(page) -> int:
    page.wait_for_function("() => window.viewer && viewer.world.getItemCount() === 1 "
                           "&& viewer.world.getItemAt(0).getFullyLoaded()", timeout=30000)
    deepest = page.evaluate(RECORD_DRAWN)
    page.wait_for_function(WAIT_DRAWN, arg=deepest, timeout=30000)
    return deepest


def assert_not_blank(png: bytes) -> None:
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    assert shot.std() > 10  # a mosaic, not a flat page
    assert shot.mean() > 40  # and not the dark background


@pytest.mark.slow
def test_browser_zooms_into_the_deepest_level(published, serve_process):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            refused: list[str] = []  # answered >= 400 (or not at all); the favicon too
            page.on("response", lambda r: r.status >= 400 and refused.append(r.url))
            page.on("requestfailed", lambda request: refused.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(serve_process)
            deepest = zoom_to_the_deepest_level(page)
            assert deepest == 10  # ceil(log2(1024))
            tiles = [url for url in requested if f"/mosaic_files/{deepest}/" in url]
            assert tiles, requested
            assert_not_blank(page.screenshot())
            # the page works straight from the file system too (descriptor inline)
            page.goto((published / "index.html").as_uri())
            assert zoom_to_the_deepest_level(page) == 10
            assert_not_blank(page.screenshot())
            assert errors == [] and refused == []
        finally:
            browser.close()


def test_serve_refuses_a_folder_without_a_viewer_naming_the_builds_inside(published, tmp_path):
    from click.testing import CliRunner

    from hypermosaic.cli import cli

    result = CliRunner().invoke(cli, ["serve", str(published.parent)])
    assert result.exit_code == 2
    assert result.output == (f"Error: {published.parent}: no viewer here (index.html); serve "
                             f"one of the builds inside: {published}\n")
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "not a published build" in result.output
