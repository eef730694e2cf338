"""A focus build in a real browser: OpenSeadragon asks only for the tiles its sparse pyramid has
(no 404) and shows an unexpanded region as the deepest tile there, scaled up."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from hypermosaic.build import build_mosaic
from hypermosaic.publish import canvas_image
from hypermosaic.store import Store
from tests.helpers import make_config, running_server
from tests.publish.test_viewer import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 800, 600
CLEAR = np.s_[130:570]  # screenshot rows clear of the buttons, the navigator and the help line


@pytest.fixture(scope="module")
def focus_build(examples_dir, tmp_path_factory, dask_client):
    """64 px nodes on 4x4 grids, depth 3 (a 4096 px canvas, levels 0 to 12), expanded along
    the path 1_2/2_2/2_2 with one neighbour on each side: 284 of the 4,681 nodes."""
    config = make_config(examples_dir, tmp_path_factory.mktemp("sparse") / "build", size=64,
                         grid=4, depth=3, focus={"path": [[1, 2]], "neighbours": 1})
    assert build_mosaic(config, client=dask_client).ok
    return config


@pytest.fixture()
def served(focus_build):
    """`hypermosaic serve OUT_DIR --port 0` as a user runs it; yields the URL it prints."""
    with running_server("serve", str(focus_build.out), "--port", "0") as (url, _):
        yield url


EXISTING = """() => {
    const source = viewer.world.getItemAt(0).source, found = [];
    for (let level = 0; level <= source.maxLevel; level++) {
        const n = source.getNumTiles(level);
        for (let y = 0; y < n.y; y++)
            for (let x = 0; x < n.x; x++)
                if (source.tileExists(level, x, y)) found.push(`${level}/${x}_${y}`);
    }
    return found;
}"""
WATCH = """() => {
    window.drawn = new Set();
    window.updates = 0;
    viewer.addHandler('tile-drawn', e => window.drawn.add(e.tile.level));
    viewer.addHandler('update-viewport', () => window.updates++);
}"""
ZOOM = """([x, y]) => {
    window.drawn.clear();
    window.updates = 0;
    const viewport = viewer.viewport;
    viewport.zoomTo(viewport.getMaxZoom(), null, true);
    viewport.panTo(viewport.imageToViewportCoordinates(x, y), true);
}"""
SETTLED = """() => window.updates > 0 && viewer.world.getItemAt(0).getFullyLoaded()
    && !viewer.world.needsDraw()"""
SHOWN = """() => {
    const r = viewer.viewport.viewportToImageRectangle(viewer.viewport.getBounds(true));
    return [r.x, r.y, r.width, r.height];
}"""


def zoom_in(page, x: float, y: float) -> tuple[np.ndarray, list[float], int]:
    """Zoom all the way in on image pixel ``(x, y)``; the screenshot (the clear rows), the
    image rectangle shown and the deepest level drawn."""
    page.evaluate(ZOOM, [x, y])
    page.wait_for_function(SETTLED, timeout=30000)
    shown = page.evaluate(SHOWN)
    deepest = page.evaluate("() => Math.max(...window.drawn)")
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    return np.asarray(shot, np.float32)[CLEAR], shown, deepest


def scaled_up(image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """``box`` of ``image`` scaled to the page, bilinear as the canvas drawer draws it."""
    resized = image.convert("RGB").resize((WIDTH, HEIGHT), Image.BILINEAR, box=box)
    return np.asarray(resized, np.float32)[CLEAR]


def canvas_at(config, shown: list[float]) -> np.ndarray:
    """The full-resolution canvas under the shown rectangle (``canvas_image``), scaled up."""
    canvas = canvas_image(Store(config.out), config.plan(), access="random")
    x, y = int(shown[0]), int(shown[1])
    crop = Image.fromarray(canvas.crop(x, y, int(shown[2]) + 2, int(shown[3]) + 2).numpy())
    return scaled_up(crop, (shown[0] - x, shown[1] - y, shown[0] - x + shown[2],
                            shown[1] - y + shown[3]))


def test_browser_asks_only_for_written_tiles_and_scales_up_the_rest(focus_build, served):
    from playwright.sync_api import sync_playwright

    plan, files = focus_build.plan(), focus_build.out / "mosaic_files"
    top = math.ceil(math.log2(plan.canvas_size))
    written = {f"{p.parent.name}/{p.stem}" for p in files.glob("*/*.png")}
    on_path = [o + plan.span(plan.depth) / 2 for o in plan.origin(plan.path)]
    far = (512.0, 3584.0)  # the middle of depth-1 cell 3_0, far from the path: never expanded
    assert not Store(focus_build.out).has(((3, 0),))

    def tile_at(level: int) -> tuple[int, int, int]:
        side = plan.size * 2 ** (top - level)
        return side, int(far[0]) // side, int(far[1]) // side

    # the deepest tile written there: the viewer draws it scaled up
    level = max(lv for lv in range(top + 1) if "{}/{}_{}".format(lv, *tile_at(lv)[1:]) in written)
    assert level < top
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            responses: list[tuple[int, str]] = []
            page.on("response", lambda r: responses.append((r.status, r.url)))
            page.on("requestfailed", lambda r: responses.append((0, r.url)))
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(served)
            page.wait_for_function("() => window.viewer && viewer.world.getItemCount() === 1 "
                                   "&& viewer.world.getItemAt(0).getFullyLoaded()", timeout=30000)
            assert set(page.evaluate(EXISTING)) == written  # OpenSeadragon's own tileExists
            page.evaluate(WATCH)

            shot, shown, deepest = zoom_in(page, *on_path)
            assert deepest == top
            assert np.abs(shot - canvas_at(focus_build, shown)).mean() < 4

            shot, shown, deepest = zoom_in(page, *far)
            assert deepest == level
            side, col, row = tile_at(level)
            ratio = plan.size / side
            box = ((shown[0] - col * side) * ratio, (shown[1] - row * side) * ratio,
                   (shown[0] + shown[2] - col * side) * ratio,
                   (shown[1] + shown[3] - row * side) * ratio)
            tile = Image.open(files / str(level) / f"{col}_{row}.png")
            difference = np.abs(shot - scaled_up(tile, box))
            assert difference.mean() < 2 and np.percentile(difference, 99) <= 4
            assert np.abs(shot - canvas_at(focus_build, shown)).mean() < 4
            assert shot.std() > 10  # the primary's detail, not a flat fill

            tiles = [url for _, url in responses if "/mosaic_files/" in url]
            assert any(f"/mosaic_files/{top}/" in url for url in tiles)
            assert [(status, url) for status, url in responses if status != 200] == []
            assert console == [] and errors == []
        finally:
            browser.close()
