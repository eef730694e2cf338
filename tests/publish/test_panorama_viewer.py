"""The 360° viewer page of a panorama: vendored Pannellum, and a real browser looking round."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.publish import make_app, start_server, write_panorama_viewer
from tests.publish.test_viewer import CHROMIUM, CHROMIUM_ARGS

# Chromium draws WebGL without a GPU through SwiftShader only when asked to.
WEBGL_ARGS = [arg for arg in CHROMIUM_ARGS if arg != "--disable-gpu"] + [
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def panorama(out: Path) -> Path:
    """A 512x256 equirectangular image, periodic in x, and its viewer page."""
    import pyvips

    x = np.linspace(0, 2 * np.pi, 512, endpoint=False)
    image = np.zeros((256, 512, 3), np.uint8)
    image[..., 0] = (127 + 120 * np.sin(x))[None]
    image[..., 1] = np.linspace(0, 255, 256)[:, None]
    image[..., 2] = 90
    pyvips.Image.new_from_array(image).pngsave(str(out / "p.png"))
    return write_panorama_viewer(out, "p.png", "p.html")


def test_the_page_loads_the_vendored_pannellum_with_its_licence(tmp_path):
    page = panorama(tmp_path).read_text()
    assert '<script src="pannellum/pannellum.js">' in page
    assert f"panorama: {json.dumps('p.png')}" in page
    data = Path(__file__).parents[2] / "hypermosaic" / "data" / "pannellum"
    assert "Pannellum 2.5.7" in (data / "README.md").read_text()
    for name in ("pannellum.js", "pannellum.css", "COPYING"):
        assert (tmp_path / "pannellum" / name).read_bytes() == (data / name).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium here (make test has one)")
def test_a_browser_shows_the_panorama_and_looks_round_the_seam(tmp_path):
    from playwright.sync_api import sync_playwright

    panorama(tmp_path)
    server = start_server(make_app(tmp_path))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=WEBGL_ARGS)
            try:
                page = browser.new_page(viewport={"width": 640, "height": 480})
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))
                page.goto(server.url + "p.html")
                page.wait_for_function("() => window.viewer && viewer.isLoaded()",
                                       timeout=30000)
                shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
                assert shot.std() > 10  # the panorama, not a blank or error panel
                page.evaluate("() => viewer.setYaw(-175, false)")  # across the seam
                assert page.evaluate("() => viewer.getYaw()") == pytest.approx(-175)
                assert errors == []
            finally:
                browser.close()
    finally:
        server.stop()
