"""The viewer page, the read-only server, and a real browser zooming into a build."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.build import build_mosaic
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.errors import InputError
from hypermosaic.publish.server import make_server, server_url
from hypermosaic.publish.viewer import read_dzi, write_viewer

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


SECRET = b"outside the output directory"


@pytest.fixture()
def served(tmp_path):
    """A server over a root holding a file, a folder, and links that lead outside it."""
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>viewer</p>")
    (root / "sub" / "tile.jpeg").write_bytes(b"tile")
    (root / "empty").mkdir()
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path / "elsewhere", root / "linkdir")
    server = make_server(root, port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fetch(server, target: str, method: str = "GET") -> tuple[int, bytes]:
    """Send ``target`` exactly as written (no client-side normalisation)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest(method, target, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_server_serves_files_read_only(served):
    assert fetch(served, "/") == (200, b"<p>viewer</p>")
    assert fetch(served, "/sub/tile.jpeg") == (200, b"tile")
    assert fetch(served, "/sub/tile.jpeg?v=2") == (200, b"tile")
    assert fetch(served, "/sub/tile.jpeg", "HEAD") == (200, b"")
    assert fetch(served, "/sub/missing.jpeg")[0] == 404
    assert fetch(served, "/empty/")[0] == 404  # no listings
    assert fetch(served, "/sub/tile.jpeg", "PUT")[0] == 405
    assert fetch(served, "/index.html", "DELETE")[0] == 405
    assert server_url(served).startswith("http://127.0.0.1:")


def test_a_refused_body_does_not_desynchronise_a_kept_alive_connection(served):
    """A POST's body is read and dropped with the 405, so the GET that follows on the same
    connection is answered as itself; a body too large to read closes the connection."""
    host, port = served.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    body = b"GET /../secret.txt HTTP/1.1\r\n\r\n" * 100
    connection.request("POST", "/sub/tile.jpeg", body=body)
    refused = connection.getresponse()
    assert (refused.status, refused.getheader("Allow")) == (405, "GET, HEAD")
    refused.read()
    assert not refused.will_close
    sock = connection.sock
    connection.request("GET", "/sub/tile.jpeg")
    answer = connection.getresponse()
    assert (answer.status, answer.read()) == (200, b"tile")
    assert connection.sock is sock  # the same connection, still in step
    connection.putrequest("PUT", "/sub/tile.jpeg")
    connection.putheader("Content-Length", str(10 << 20))
    connection.endheaders()
    huge = connection.getresponse()
    assert huge.status == 405 and huge.getheader("Connection") == "close"
    huge.read()
    assert huge.will_close
    connection.close()


@pytest.mark.slow
def test_a_stalled_client_is_disconnected_and_blocks_no_one(tmp_path):
    """A client that sends half a request line and then nothing is cut off after the
    server's ``client_timeout``; meanwhile other clients are served."""
    (tmp_path / "index.html").write_bytes(b"<p>viewer</p>")
    server = make_server(tmp_path, port=0, client_timeout=2.0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        stalled = socket.create_connection(server.server_address[:2], timeout=10)
        stalled.sendall(b"GET /index.ht")
        assert fetch(server, "/") == (200, b"<p>viewer</p>")
        stalled.settimeout(0.1)
        with pytest.raises(TimeoutError):  # served while the stalled one still waits
            stalled.recv(1024)
        stalled.settimeout(10)
        assert stalled.recv(1024) == b""  # then closed by the server, well before our 10 s
        stalled.close()
    finally:
        server.shutdown()
        server.server_close()


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


@pytest.mark.parametrize("target", [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/link.txt",
    "/linkdir/secret.txt",
    "/%6c%69%6e%6b.txt",
    "//../secret.txt",
    "/%00/secret.txt",
    "/%ff%fe",
    "http://127.0.0.1/../secret.txt",
])
def test_server_refuses_to_leave_its_root(served, target):
    status, body = fetch(served, target)
    assert status in (403, 404)
    assert SECRET not in body


def test_server_refuses_a_missing_directory(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        make_server(tmp_path / "none", port=0)


@pytest.fixture()
def serve_process(published):
    """`hypermosaic serve OUT_DIR --port 0` as a user runs it; yields the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hypermosaic", "serve", str(published), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert url is not None, line
    yield url.group(0)
    process.terminate()
    process.wait(timeout=10)


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
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
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
            assert errors == []
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
