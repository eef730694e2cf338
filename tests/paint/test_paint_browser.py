"""A real browser paints a stroke with a semantic brush over a photo; the frames follow, and
the exported config renders with `hypermosaic canvas` to the last frame."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.paint import blank_painting, write_config
from tests.explore.test_live_browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import running_server

SIDE = 64
CURRENT = "() => paintState.version > 0 && paintState.head.version === paintState.version"


def frame(url: str) -> np.ndarray:
    with urllib.request.urlopen(url + "api/frame.png") as answer:
        return np.asarray(Image.open(io.BytesIO(answer.read())).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def lcm_dir(tmp_path_factory):
    from tests.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("lcm") / "tiny-lcm", "lcm")


@pytest.mark.slow
def test_a_stroke_changes_the_frame_under_it_and_exports_the_canvas(lcm_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    y, x = np.mgrid[0:SIDE, 0:SIDE]
    photo = np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    painting = dataclasses.replace(blank_painting(str(lcm_dir), SIDE, SIDE, seed=3),
                                   photo=photo, feather=2)
    start = write_config(painting, tmp_path / "start")
    out = tmp_path / "out"
    errors: list[str] = []
    with running_server("paint", "--config", str(start), "--port", "0", "--workers", "1",
                        "--out", str(out)) as (url, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 560})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.wait_for_function("() => paintState.frames >= 2", timeout=120000)
            before = frame(url)
            assert np.array_equal(before, photo)  # nothing painted: the photo, exactly
            # pick the second palette entry and paint a vertical stroke near the left edge
            page.locator('.entry[data-index="1"] input[type=radio]').check()
            page.fill("#size", "40")  # CSS px: 5 canvas px
            box = page.locator("#draw").bounding_box()
            assert box is not None
            scale = box["width"] / SIDE
            page.mouse.move(box["x"] + 10 * scale, box["y"] + 12 * scale)
            page.mouse.down()
            page.mouse.move(box["x"] + 10 * scale, box["y"] + 52 * scale, steps=8)
            page.mouse.up()
            page.wait_for_function(CURRENT, timeout=120000)
            frames = page.evaluate("() => paintState.frames")
            page.wait_for_function(f"() => paintState.frames >= {frames + 1}", timeout=60000)
            after = frame(url)
            changed = np.abs(after - before).max(axis=-1)
            assert changed[14:50, 8:13].mean() > 2  # under the stroke
            assert changed[:, 24:].max() == 0  # far from it (beyond the stroke and feather)
            shots = Path(os.environ.get("HYPERMOSAIC_SCREENSHOTS", tmp_path))
            page.screenshot(path=str(shots / "paint.png"))
            page.click("#export")
            page.wait_for_function("() => paintState.exported", timeout=30000)
            exported = Path(page.evaluate("() => paintState.exported.path"))
            latency = page.evaluate("() => paintState.latencies")
        finally:
            browser.close()
    assert not errors, errors
    assert latency
    assert exported == out / "painting.toml"
    rendered = tmp_path / "canvas"
    subprocess.run([sys.executable, "-m", "hypermosaic", "canvas", str(exported), "--out",
                    str(rendered), "--workers", "1"], check=True, capture_output=True)
    canvas = np.asarray(Image.open(rendered / "painting-3.png")).astype(int)
    last = np.asarray(Image.open(out / "painting-frame.png")).astype(int)
    assert np.abs(canvas - last).max() <= 2
