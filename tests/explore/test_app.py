"""The live page and its socket: views answered with what is stored, landed nodes announced."""

from __future__ import annotations

import json
import re

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from hypermosaic.build import NodeMaker, build_mosaic, check_inputs
from hypermosaic.explore.app import MESSAGE_LIMIT, LiveHub, live_lifespan, live_routes
from hypermosaic.store import Store
from tests.helpers import make_config, node_files


@pytest.fixture()
def hub(examples_dir, tmp_path, dask_client):
    config = make_config(examples_dir, tmp_path / "live", grid=2, depth=1)
    build_mosaic(config, client=dask_client, publish=False)
    maker = NodeMaker(config, Store(config.out), dask_client, check_inputs(config))
    live = LiveHub(config, maker, max_in_flight=3)
    yield live
    live.scheduler.stop()
    maker.close()


@pytest.fixture()
def client(hub):
    app = Starlette(routes=live_routes(hub, "demo"), lifespan=live_lifespan(hub))
    with TestClient(app) as test_client:
        yield test_client


def view(depth: int, root: str = "root", seq: int = 1) -> str:
    return json.dumps({"type": "view", "root": root, "rect": [0, 0, 1, 1], "depth": depth,
                       "seq": seq})


def test_the_page_carries_the_geometry_and_its_scripts_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>hypermosaic live: demo</title>" in page.text
    settings = json.loads(re.search(r'id="settings" type="application/json">(.*?)</script>',
                                    page.text).group(1))
    assert settings == {"size": 64, "grids": [2], "ext": "png", "levels": 3}
    assert client.get("/static/explore/live.js").text.startswith("// hypermosaic live viewer")
    assert client.get("/static/openseadragon/openseadragon.min.js").status_code == 200


def test_a_view_is_answered_then_its_missing_nodes_land(client, hub, examples_dir, tmp_path,
                                                        dask_client):
    with client.websocket_connect("/live") as socket:
        socket.send_text(view(depth=2))
        answer = socket.receive_json()
        assert answer == {"type": "nodes", "root": "root", "seq": 1, "missing": 16,
                          "present": ["root", "0_0", "0_1", "1_0", "1_1"]}
        landed: set[str] = set()
        while len(landed) < 16:
            message = socket.receive_json()
            assert message["type"] == "landed"
            landed.update(message["nodes"])
        assert {key.count("/") for key in landed} == {1}
        socket.send_text(view(depth=2, seq=2))
        assert socket.receive_json()["missing"] == 0
    assert client.get("/live/status").json()["made"] == 16
    # the same nodes as a depth-2 batch build
    batch = make_config(examples_dir, tmp_path / "batch", grid=2, depth=2)
    build_mosaic(batch, client=dask_client, publish=False)
    assert node_files(hub.store.root) == node_files(batch.out)


def test_a_bad_message_is_answered_with_one_line_and_the_socket_goes_on(client):
    with client.websocket_connect("/live") as socket:
        socket.send_text('{"type": "view", "root": "9_9", "rect": [0, 0, 1, 1], "depth": 1}')
        assert socket.receive_json() == {
            "type": "error", "message": "bad view message: root: step 9_9 is outside the "
                                        "2x2 grid"}
        socket.send_text("not json")
        assert socket.receive_json()["type"] == "error"
        socket.send_text(view(depth=0))
        assert socket.receive_json()["present"] == ["root"]
        socket.send_text(" " * (MESSAGE_LIMIT + 1))
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == 1009


def test_a_viewer_past_the_limit_hears_why_it_is_refused(client, monkeypatch):
    monkeypatch.setattr("hypermosaic.explore.app.MAX_VIEWERS", 1)
    with client.websocket_connect("/live") as first:
        first.send_text(view(depth=0))
        assert first.receive_json()["type"] == "nodes"
        with client.websocket_connect("/live") as second:
            with pytest.raises(WebSocketDisconnect) as refused:
                second.receive_json()
        assert (refused.value.code, refused.value.reason) == (
            1013, "too many viewers; try again later")
