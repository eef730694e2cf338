"""The live scheduler: fair between viewers, drops what left the view, gives up on failures."""

from __future__ import annotations

import threading
import time

import pytest

from hypermosaic.build import NodeMaker, build_mosaic, check_inputs, node_batch
from hypermosaic.explore.scheduler import LiveScheduler
from hypermosaic.store import Store
from hypermosaic.tree import parse_address
from tests.helpers import make_config


@pytest.fixture()
def maker(examples_dir, tmp_path, dask_client):
    """A NodeMaker over a grid-2 recolor build of depth 1 (batches of 4 siblings)."""
    config = make_config(examples_dir, tmp_path, grid=2, depth=1)
    build_mosaic(config, client=dask_client, publish=False)
    node_maker = NodeMaker(config, Store(config.out), dask_client, check_inputs(config))
    yield node_maker
    node_maker.close()


class Recorder:
    def __init__(self) -> None:
        self.landed: list[list] = []
        self.failed: list[tuple[list, str]] = []
        self.event = threading.Event()

    def on_landed(self, nodes) -> None:
        self.landed.append(nodes)
        self.event.set()

    def on_failed(self, nodes, error) -> None:
        self.failed.append((nodes, error))
        self.event.set()


def wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def batches(maker, *keys):
    return [node_batch(maker.config, parse_address(key)) for key in keys]


def test_viewers_take_turns_and_each_list_keeps_its_order(maker):
    record = Recorder()
    scheduler = LiveScheduler(maker, 1, record.on_landed, record.on_failed)
    scheduler.want(1, batches(maker, "0_0/0_0", "0_1/0_0", "1_0/0_0"))
    scheduler.want(2, batches(maker, "1_1/0_0"))
    scheduler.start()
    try:
        wait_for(lambda: len(record.landed) == 4)
    finally:
        scheduler.stop()
    parents = [nodes[0][:1] for nodes in record.landed]
    assert parents == [parse_address(k) for k in ("0_0", "1_1", "0_1", "1_0")]
    assert scheduler.stats.made == 16 and scheduler.stats.batches == 4


def test_a_new_view_drops_the_work_of_the_old_one(maker):
    record = Recorder()
    scheduler = LiveScheduler(maker, 1, record.on_landed, record.on_failed)
    scheduler.want(1, batches(maker, "0_0/0_0", "0_1/0_0", "1_0/0_0"))
    scheduler.want(1, batches(maker, "1_1/0_0"))  # the viewer moved on before any started
    scheduler.want(2, batches(maker, "1_0/0_0"))
    scheduler.forget(2)  # and this one closed its tab
    scheduler.start()
    try:
        wait_for(lambda: record.landed)
        time.sleep(0.3)
    finally:
        scheduler.stop()
    assert [nodes[0][:1] for nodes in record.landed] == [parse_address("1_1")]
    assert not maker.store.has(parse_address("0_0/0_0"))
    assert not maker.store.has(parse_address("1_0/0_0"))


def test_a_batch_that_keeps_failing_is_given_up_and_the_rest_goes_on(maker):
    maker.store.node_path(parse_address("0_0")).write_bytes(b"not an image")
    record = Recorder()
    scheduler = LiveScheduler(maker, 2, record.on_landed, record.on_failed)
    scheduler.want(1, batches(maker, "0_0/0_0", "0_1/0_0"))
    scheduler.start()
    try:
        wait_for(lambda: record.failed and record.landed)
        scheduler.want(1, batches(maker, "0_0/0_0"))  # asked again: not retried
        time.sleep(0.3)
    finally:
        scheduler.stop()
    [(nodes, error)] = record.failed
    assert nodes == list(batches(maker, "0_0/0_0")[0].children)
    assert error == ("Error: unable to load from buffer VipsForeignLoad: buffer is not in a "
                     "known format") and scheduler.stats.failed == 1
    assert [n[0][:1] for n in record.landed] == [parse_address("0_1")]
