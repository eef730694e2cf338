"""A real browser zooms six levels below the built depth: nodes are made while it zooms."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from hypermosaic.build import build_mosaic
from hypermosaic.tree import address_key
from tests.helpers import make_config, node_files, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-extensions", "--disable-sync", "--no-first-run", "--mute-audio",
]
POINT = (0.37, 0.61)  # where the browser zooms in, in the primary image's unit square
BELOW = 6
SETTLED = """() => window.live && live.settled() && viewer.world.getItemCount() === 1
    && viewer.world.getItemAt(0).getFullyLoaded()"""


def path_to(point: tuple[float, float], depth: int, grid: int):
    x, y = point
    steps = []
    for _ in range(depth):
        col, row = int(x * grid), int(y * grid)
        steps.append((row, col))
        x, y = x * grid - col, y * grid - row
    return tuple(steps)


@pytest.fixture()
def explore(examples_dir, tmp_path, dask_client):
    """A grid-4 recolor build of depth 1, explored by `hypermosaic explore CONFIG --port 0`."""
    toml = tmp_path / "live.toml"
    image = (examples_dir / "images" / "chelsea.png").resolve()
    toml.write_text(f'seed = 5\nsize = 128\ngrid = 4\ndepth = 1\nout = "out"\n'
                    f'[primary]\nimage = "{image}"\n[tiles]\nstrength = 0.6\n')
    build_mosaic(toml, client=dask_client)
    with running_server("explore", str(toml), "--port", "0", "--workers", "2") as (url, process):
        yield url, tmp_path / "out", process


@pytest.mark.slow
def test_zooming_six_levels_below_the_build_makes_sharp_nodes_equal_to_a_batch_build(
        explore, examples_dir, tmp_path, dask_client):
    from playwright.sync_api import sync_playwright

    url, out, _ = explore
    statuses: list[tuple[int, str]] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 512, "height": 384})
            page.on("response", lambda r: statuses.append((r.status, r.url)))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(url)
            page.wait_for_function(SETTLED, timeout=60000)
            page.evaluate(f"() => viewer.viewport.panTo(new OpenSeadragon.Point{POINT}, true)")
            for _ in range(4 * BELOW):
                if page.evaluate("() => live.depth()") >= 1 + BELOW:
                    break
                page.evaluate("() => viewer.viewport.zoomBy(2, viewer.viewport.getCenter())")
                page.wait_for_timeout(700)  # the zoom animation (0.6 s) and a re-root
                page.wait_for_function(SETTLED, timeout=120000)
            assert page.evaluate("() => live.depth()") == 1 + BELOW
            # HYPERMOSAIC_SCREENSHOTS=docs/images keeps the picture docs/live.md shows
            shots = Path(os.environ.get("HYPERMOSAIC_SCREENSHOTS", tmp_path))
            page.screenshot(path=str(shots / "live.png"))
            shared = page.url
            bounds = page.evaluate("() => viewer.viewport.getBounds().toString()")
            root = page.evaluate("() => live.root()")
            # the link reopens the same view
            again = browser.new_page(viewport={"width": 512, "height": 384})
            again.on("pageerror", lambda error: errors.append(str(error)))
            again.goto(shared)
            again.wait_for_function(SETTLED, timeout=60000)
            assert again.evaluate("() => live.root()") == root
            assert again.evaluate("() => viewer.viewport.getBounds().toString()") == bounds
        finally:
            browser.close()
    assert errors == []
    assert [s for s in statuses if s[0] >= 400] == []
    deepest = path_to(POINT, 1 + BELOW, 4)
    assert (200, f"{url}nodes/{address_key(deepest)}.png") in statuses
    # the nodes made live equal a batch build's (a focus build down the same path)
    batch = make_config(examples_dir, tmp_path / "batch", seed=5, size=128, grid=4,
                        depth=1 + BELOW, focus={"path": [list(s) for s in deepest]})
    build_mosaic(batch, client=dask_client, publish=False)
    made, built = node_files(out), node_files(batch.out)
    assert f"nodes/{address_key(deepest)}.png" in made
    assert {k: made[k] for k in built} == built


@pytest.mark.slow
def test_ctrl_c_while_nodes_are_made_keeps_every_finished_node_whole(explore, examples_dir,
                                                                      tmp_path, dask_client):
    """Ctrl-C in the middle of a deep view's work: the server stops at once, cleanly, and the
    store holds only whole nodes, each equal to a batch build's."""
    from websockets.sync.client import connect

    url, out, process = explore
    deep = "1_1/2_2/3_3"
    with connect(url.replace("http", "ws") + "live") as socket:
        view = {"type": "view", "root": deep, "rect": [0, 0, 1, 1], "depth": 6, "seq": 1}
        socket.send(json.dumps(view))
        landed = 0
        while landed < 2:  # two ancestors made, the third one's batch on its way
            message = json.loads(socket.recv(timeout=30))
            if message["type"] == "landed":
                landed += 1
                socket.send(json.dumps(view))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    made = node_files(out)
    assert not list(out.rglob("*.tmp"))
    batch = make_config(examples_dir, tmp_path / "batch", seed=5, size=128, grid=4, depth=3,
                        focus={"path": [[1, 1], [2, 2], [3, 3]]})
    build_mosaic(batch, client=dask_client, publish=False)
    built = node_files(batch.out)
    assert "nodes/1_1/2_2/3_3.png" in made  # the ancestors the deep link needed
    assert {k: made[k] for k in made.keys() & built.keys()} == {
        k: built[k] for k in made.keys() & built.keys()}
