"""Videos deeper than their build: the nodes they make, against a batch build of that depth."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from hypermosaic.build import build_mosaic
from hypermosaic.cli import cli
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.progress import Progress
from hypermosaic.tree import Plan, address_key
from hypermosaic.video import VideoSettings, render_video
from hypermosaic.video.camera import zoom_path
from hypermosaic.video.deeper import needed_nodes
from hypermosaic.video.settings import frame_count
from tests.helpers import make_config, node_files
from tests.video.test_video import decode, seam_and_typical

W, H = 128, 72
CENTRAL = [[2, 2]] * 5  # the central path of a grid-4 tree, 5 levels deep
# the frames of one level show the children of the 3 x 3 nodes around the path one level up:
# 9 batches of 16 siblings (a recolor batch holds all of a parent's children)
BATCHES_PER_LEVEL = 9


def settings(**changes) -> VideoSettings:
    return VideoSettings(width=W, height=H, fps=8, seconds_per_level=1, crf=12, **changes)


@pytest.fixture(scope="module")
def shallow(examples_dir, tmp_path_factory, dask_client) -> Path:
    """A finished depth-1 recolor build: grid 4, 64 px nodes (17 nodes)."""
    out = tmp_path_factory.mktemp("shallow") / "build"
    build_mosaic(make_config(examples_dir, out, grid=4, depth=1), client=dask_client,
                 publish=False)
    return out


def copy_of(build: Path, tmp_path: Path) -> Path:
    return shutil.copytree(build, tmp_path / "build")


def config_file(examples_dir: Path, tmp_path: Path, **changes) -> Path:
    """A TOML build config equal to the `shallow` fixture's (whose ``out`` is elsewhere)."""
    lines = [f'primary = {{ image = "{examples_dir / "images/chelsea.png"}" }}',
             'tiles = { strength = 0.6 }']
    keys = {"seed": 3, "size": 64, "grid": 4, "depth": 1, "engine": '"recolor"',
            "out": '"somewhere/else"', **changes}
    path = tmp_path / "build.toml"
    path.write_text("\n".join([*(f"{k} = {v}" for k, v in keys.items()), *lines]) + "\n")
    return path


def depths(out: Path) -> Counter:
    """How many node images the store under ``out`` holds at each depth."""
    return Counter(len(path.relative_to(out / "nodes").with_suffix("").parts)
                   - (path.stem == "root") for path in (out / "nodes").rglob("*.png"))


def test_a_deeper_video_makes_a_few_batches_a_level_as_a_batch_build_would(
        examples_dir, shallow, tmp_path, dask_client):
    """From a depth-1 build, a looping video 5 levels deep: it makes the same number of nodes
    at every level below the build (a few batches, whatever the depth), each byte for byte
    as a batch build of depth 5 makes it, and the video is byte for byte the one that build
    gives; its loop is seamless."""
    out = copy_of(shallow, tmp_path)
    config = make_config(examples_dir, tmp_path / "elsewhere", grid=4, depth=1)
    seen: list[Progress] = []
    result = render_video(out, out / "zoom.mp4", settings=settings(depth=5), config=config,
                          scheduler_address=dask_client.scheduler.address,
                          progress=seen.append)
    assert result.target == tuple(map(tuple, CENTRAL))
    made = depths(out)
    assert made[0] == 1 and made[1] == 16  # the build's
    per_level = BATCHES_PER_LEVEL * 16
    assert [made[depth] for depth in range(2, 6)] == [per_level] * 4  # in proportion to depth
    assert result.nodes_made == 4 * per_level
    nodes = [event for event in seen if event.unit == "nodes"]
    assert (nodes[0].done, nodes[-1].done, nodes[-1].total) == (0, 4 * per_level, 4 * per_level)
    assert seen[-1].unit == "frames" and seen[-1].done == result.frames == 40

    # a batch build of depth 5 around the same path holds every node made, with equal bytes
    batch = make_config(examples_dir, tmp_path / "batch", grid=4, depth=5,
                        focus={"path": CENTRAL, "neighbours": 2})
    build_mosaic(batch, client=dask_client, publish=False)
    generated, built = node_files(out), node_files(batch.out)
    assert generated.keys() <= built.keys()
    assert generated == {key: built[key] for key in generated}
    # and the video of that build is the same file, frame for frame, bit for bit
    reference = render_video(batch.out, tmp_path / "reference.mp4", settings=settings())
    assert reference.target == result.target and reference.nodes_made == 0
    assert (out / "zoom.mp4").read_bytes() == reference.path.read_bytes()

    frames, _ = decode(result.path)
    seam, typical = seam_and_typical(frames)
    assert seam <= 1.1 * typical


def test_the_nodes_a_video_needs_grow_with_its_depth_not_the_tree():
    """`needed_nodes` for videos 3 to 12 levels deep: the same nodes at every level below the
    first, so the count grows by a constant a level (a tree of that depth has 16**depth)."""
    counts = []
    for depth in (3, 6, 12):
        plan = Plan(64, (4,) * depth)
        s = settings(depth=depth)
        camera = zoom_path(plan, ((2, 2),) * depth, W, H)
        needed = needed_nodes(plan, camera, s, frame_count(s, depth), 8)
        per_depth = Counter(len(address) for address in needed)
        assert [per_depth[d] for d in range(2, depth + 1)] == [per_depth[2]] * (depth - 1)
        counts.append(len(needed))
    assert counts[1] - counts[0] == (counts[2] - counts[1]) / 2  # linear in the depth


def test_deeper_without_config_is_one_line_naming_the_option(shallow, tmp_path):
    out = copy_of(shallow, tmp_path)
    before = sorted(out.rglob("*"))
    runner = CliRunner()
    for args, option in ((["--depth", "3"], "--depth 3"), (["--path", "2_2/1_1"], "--path 2_2/1_1"),
                         (["--scheduler-address", "tcp://127.0.0.1:1"], "--scheduler-address")):
        result = runner.invoke(cli, ["video", str(out), "--size", f"{W}x{H}", *args])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"Error: {option}") and "--config" in line
    assert sorted(out.rglob("*")) == before


def test_a_config_of_other_settings_is_refused_and_nothing_is_made(
        examples_dir, shallow, tmp_path, dask_client):
    out = copy_of(shallow, tmp_path)
    before = node_files(out)
    other = config_file(examples_dir, tmp_path, seed=4)
    result = CliRunner().invoke(cli, [
        "video", str(out), "--size", f"{W}x{H}", "--fps", "8", "--depth", "3",
        "--config", str(other), "--scheduler-address", dask_client.scheduler.address])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {out}: was built with different settings")
    assert node_files(out) == before and not (out / "zoom.mp4").exists()


@pytest.mark.parametrize("changes,message", [
    ({"depth": 0}, "--depth 0: must be at least 1"),
    ({"depth": True}, "--depth True: not an integer"),
    ({"depth": 1, "path": "2_2/2_2"}, "--path 2_2/2_2: 2 levels deep, deeper than --depth 1"),
    ({"depth": 22}, "--depth 22: a zoom 22 levels deep is past the camera's precision "
                    r"\(at most 21 levels"),
])
def test_bad_depths_are_refused_before_any_work(examples_dir, shallow, tmp_path, changes,
                                                message):
    out = copy_of(shallow, tmp_path)
    before = sorted(out.rglob("*"))
    config = make_config(examples_dir, out, grid=4, depth=1)
    with pytest.raises(InputError, match=f"^{message}"):
        render_video(out, out / "x.mp4", settings=settings(**changes), config=config)
    assert sorted(out.rglob("*")) == before


def test_a_shallower_depth_needs_no_config(shallow, tmp_path):
    """``--depth`` within the build: the camera stops at that depth, nothing is made."""
    out = copy_of(shallow, tmp_path)
    result = CliRunner().invoke(cli, ["video", str(out), "--size", f"{W}x{H}", "--fps", "8",
                                      "--seconds-per-level", "1", "--depth", "1"])
    assert result.exit_code == 0, result.output
    assert "8/8" in result.output and "zooming into 2_2" in result.output
    assert "making" not in result.output


def test_ctrl_c_while_making_keeps_what_landed_and_the_rerun_makes_the_rest(
        examples_dir, tmp_path, dask_client):
    """From a folder nothing was built in: Ctrl-C after the first nodes land keeps them (and
    writes no video); the same command again makes only the rest, and the video. On the
    command line, with the nodes' progress bar before the frames'."""
    out = tmp_path / "fresh"
    toml = config_file(examples_dir, tmp_path)
    config = make_config(examples_dir, out, grid=4, depth=1)
    landed: list[int] = []

    def interrupt(event: Progress) -> None:
        if event.unit == "nodes" and event.done > 0:
            landed.append(event.done)
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"^no video written; the (\d+) nodes made so far are "
                                          rf"kept in {out}; run the same command again$"):
        render_video(out, out / "zoom.mp4", settings=settings(depth=3), config=config,
                     scheduler_address=dask_client.scheduler.address, progress=interrupt)
    kept = node_files(out)
    assert len(kept) == 1 + landed[0] and not (out / "zoom.mp4").exists()  # the root, a batch
    result = CliRunner().invoke(cli, [
        "video", str(out), "--size", f"{W}x{H}", "--fps", "8", "--seconds-per-level", "1",
        "--depth", "3", "--config", str(toml),
        "--scheduler-address", dask_client.scheduler.address])
    assert result.exit_code == 0, result.output
    total = 16 + 2 * BATCHES_PER_LEVEL * 16
    assert f"{total - landed[0]}/{total - landed[0]}" in result.output  # the nodes' bar
    assert result.output.index("nodes") < result.output.index("frames")
    assert f"zooming into {address_key(((2, 2),) * 3)}, after making {total - landed[0]} nodes" \
        in result.output
    assert {key: node_files(out)[key] for key in kept} == kept  # nothing made again
    assert len(decode(out / "zoom.mp4")[0]) == 24
