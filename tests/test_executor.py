"""The worker pool's shared state (`hypermosaic.executor`) and progress events
(`hypermosaic.progress`) on a real cluster of two worker processes."""

from __future__ import annotations

import pickle
import threading
import uuid

from hypermosaic.executor import ModelCache, WorkerState, worker_state
from hypermosaic.progress import EventChannel, Progress, emitter, report


def test_a_model_loads_once_per_key_whatever_the_threads() -> None:
    cache, loads = ModelCache(), []

    def load() -> object:
        loads.append(1)
        return object()

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("m", load)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and all(model is got[0] for model in got)
    assert cache.get("other", load) is not got[0] and len(loads) == 2
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.models == {} and cache.models  # sent to a worker empty
    cache.clear()
    assert cache.models == {}


def test_each_worker_loads_once_and_events_reach_the_client(dask_client) -> None:
    dask_client.register_plugin(WorkerState("hypermosaic-test", data={"x": 7}))

    def task(index: int, topic: str) -> tuple[str, int, str]:
        state = worker_state("hypermosaic-test")
        model = state.models.get("model", lambda: uuid.uuid4().hex)
        emit = emitter(topic)
        sender = threading.Thread(target=emit, args=([index],))  # as libvips calls back
        sender.start()
        sender.join()
        return state.name, state.data["x"], model

    received: list[list[int]] = []
    with EventChannel(dask_client, received.append) as channel:
        futures = [dask_client.submit(task, index, channel.topic, pure=False)
                   for index in range(12)]
        results = dask_client.gather(futures)
        channel.settle(lambda: len(received) == 12)
    assert {(name, x) for name, x, _ in results} == {("hypermosaic-test", 7)}
    workers = {dask_client.who_has(f)[f.key][0] for f in futures}
    assert len({model for *_, model in results}) == len(workers)  # one model per worker
    assert sorted(index for (index,) in received) == list(range(12))


def test_report_is_silent_without_a_callback() -> None:
    seen: list[Progress] = []
    report(None, "tiles", 1, 2)
    report(seen.append, "tiles", 1, 2, skipped=1)
    assert seen == [Progress("tiles", 1, 2, skipped=1)]
