"""A real cluster, started the way the README says: ``dask scheduler`` and ``dask worker``
processes from the command line, and ``hypermosaic build`` / ``upscale`` attached to it with
``--scheduler-address``, each as a user runs them. The outputs must equal the local default's
byte for byte, also when a worker is killed or added mid-build; a killed scheduler stops the
build with one line and a rerun resumes; a worker that cannot run this hypermosaic is named.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from tests.helpers import EXAMPLES, astronaut, node_bytes, save_srvgg

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the venv's `dask` command
READY_S = 60  # generous: a loaded CI machine starts processes slowly
# Faults need a build that lasts: 4,369 nodes, several seconds on two workers.
DEEP = 'seed = 3\nsize = 64\ngrid = 4\ndepth = 3\n[tiles]\nstrength = 0.6\n'
SHALLOW = DEEP.replace("depth = 3", "depth = 2")


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on free local ports, each in its own
    process group (a worker's nanny and its worker process die together), logs in ``logs``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self._start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"])
        try:
            self.client = Client(self.address, timeout=f"{READY_S}s")
        except BaseException:
            self.kill("scheduler")
            raise

    def add_worker(self, name: str, python: list[str] | None = None) -> str:
        """Start a worker named ``name`` (with ``python``: ``python -m`` the worker CLI in
        another environment) and return its address once the scheduler knows it."""
        command = [*python, "-m", "distributed.cli.dask_worker"] if python else [
            str(BIN / "dask"), "worker"]
        self._start(name, [*command, self.address, "--nthreads", "1", "--nworkers", "1",
                           "--no-dashboard", "--name", name])
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            for address, info in self.client.scheduler_info(n_workers=-1)["workers"].items():
                if info["name"] == name:
                    return str(address)
            assert self.processes[name].poll() is None, self.log(name)
            time.sleep(0.1)
        raise AssertionError(f"worker {name} did not connect:\n{self.log(name)}")

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s whole process group, as a machine that dies (its leader may have
        exited and left children: the group outlives it)."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        self.client.close()
        for name in self.processes:
            self.kill(name)

    def _start(self, name: str, command: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.logs,
                start_new_session=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A scheduler and two workers, killed (process groups) at the end whatever happened."""
    running = Cluster(tmp_path / "cluster")
    try:
        for name in ("w0", "w1"):
            running.add_worker(name)
        yield running
    finally:
        running.close()


def _config(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c.toml"
    path.write_text(f'{body}[primary]\nimage = "{EXAMPLES / "images/chelsea.png"}"\n')
    return path


def _hypermosaic(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hypermosaic", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen[str], status: int = 0) -> tuple[str, str]:
    """Stdout and stderr (the bars and the summary) of ``process``, which exits ``status``."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == status, out + err
    return out, err


def _build(config: Path, out: Path, *options: str) -> subprocess.Popen[str]:
    return _hypermosaic("build", config, "--out", out, *options)


@pytest.fixture(scope="module")
def deep_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The deep config and its nodes built by the local default (no scheduler address)."""
    folder = tmp_path_factory.mktemp("deep")
    config = _config(folder, DEEP)
    _finished(_build(config, folder / "local", "--no-publish"))
    return config, node_bytes(folder / "local")


def _wait_for_nodes(out: Path, count: int, build: subprocess.Popen[str]) -> None:
    """Until ``count`` node files exist under ``out``, the build still running."""
    deadline = time.monotonic() + READY_S
    while sum(1 for _ in (out / "nodes").rglob("*.png")) < count:
        assert build.poll() is None, "the build ended before the fault"
        assert time.monotonic() < deadline, "the build made no progress"
        time.sleep(0.05)


def test_build_and_upscale_on_the_cluster_equal_the_local_default(cluster: Cluster,
                                                                  tmp_path: Path) -> None:
    config = _config(tmp_path, SHALLOW)
    _finished(_build(config, tmp_path / "local"))
    _finished(_build(config, tmp_path / "remote", "--scheduler-address", cluster.address))
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert node_bytes(remote) == node_bytes(local) and len(node_bytes(local)) == 273
    assert (remote / "preview.png").read_bytes() == (local / "preview.png").read_bytes()

    from PIL import Image

    photo, model = tmp_path / "photo.png", save_srvgg(tmp_path / "tiny.safetensors", 2)
    Image.fromarray(astronaut(48, 64)).save(photo)
    options = ("--model", str(model), "--device", "cpu", "--dtype", "float32", "--tile", "32")
    _finished(_hypermosaic("upscale", photo, "--out", tmp_path / "local.png", *options))
    _finished(_hypermosaic("upscale", photo, "--out", tmp_path / "remote.png", *options,
                           "--scheduler-address", cluster.address))
    assert (tmp_path / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()


def test_a_worker_killed_and_one_added_mid_build(cluster: Cluster, tmp_path: Path,
                                                 deep_local: tuple[Path, dict[str, bytes]]
                                                 ) -> None:
    config, expected = deep_local
    out = tmp_path / "out"
    build = _build(config, out, "--no-publish", "--scheduler-address", cluster.address)
    _wait_for_nodes(out, 300, build)
    added = cluster.add_worker("w2")
    assert build.poll() is None, "the build ended before the fault"
    cluster.kill("w1")  # its batches in flight are lost, and run elsewhere
    _, summary = _finished(build)
    assert "4,369 nodes (4,369 computed, 0 reused)" in summary
    assert node_bytes(out) == expected
    executed = cluster.client.run(lambda dask_worker: dask_worker.state.executed_count,
                                  workers=[added])
    assert executed[added] > 0  # the added worker got batches


def test_a_killed_scheduler_stops_the_build_with_one_line_and_a_rerun_resumes(
        tmp_path: Path, deep_local: tuple[Path, dict[str, bytes]]) -> None:
    config, expected = deep_local
    out = tmp_path / "out"
    first = Cluster(tmp_path / "first")
    try:
        for name in ("w0", "w1"):
            first.add_worker(name)
        build = _build(config, out, "--no-publish", "--scheduler-address", first.address)
        _wait_for_nodes(out, 300, build)
        first.kill("scheduler")
        _, errors = _finished(build, status=1)
    finally:
        first.close()
    assert "Traceback" not in errors
    assert errors.strip().splitlines()[-1] == (
        f"Error: --scheduler-address {first.address}: lost the scheduler; what finished is "
        "kept, run the same command again to resume")
    kept = len(node_bytes(out))
    assert 300 <= kept < len(expected)

    second = Cluster(tmp_path / "second")
    try:
        for name in ("w0", "w1"):
            second.add_worker(name)
        _, summary = _finished(_build(config, out, "--no-publish", "--scheduler-address",
                                      second.address))
    finally:
        second.close()
    assert f"{kept:,} reused" in summary
    assert node_bytes(out) == expected


def test_workers_that_cannot_run_this_hypermosaic_are_named(tmp_path: Path) -> None:
    """Two real environments beside the venv's: one without hypermosaic (a venv that sees the
    venv's packages through a path, so not its editable install), and one with a copy of
    hypermosaic of another version on its path."""
    import shutil

    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    other = tmp_path / "other"
    shutil.copytree(Path(__file__).resolve().parents[2] / "hypermosaic", other / "hypermosaic",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "hypermosaic" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "0.0.0+'))
    pythons = {}
    for name, paths in {"bare": [site], "other": [other, site]}.items():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / name],
                       check=True)
        env_site = next((tmp_path / name / "lib").glob("python3*/site-packages"))
        (env_site / "paths.pth").write_text("".join(f"{path}\n" for path in paths))
        pythons[name] = [str(tmp_path / name / "bin" / "python")]

    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.add_worker("good")
        bare = cluster.add_worker("bare", pythons["bare"])
        old = cluster.add_worker("other", pythons["other"])
        config = _config(tmp_path, SHALLOW)
        _, errors = _finished(_build(config, tmp_path / "out", "--scheduler-address",
                                     cluster.address), status=2)
    finally:
        cluster.close()
    assert "Traceback" not in errors and len(errors.strip().splitlines()) == 1, errors
    assert f"worker {bare} cannot import hypermosaic" in errors
    assert "No module named 'hypermosaic'" in errors
    assert f"worker {old} runs hypermosaic 0.0.0+" in errors
