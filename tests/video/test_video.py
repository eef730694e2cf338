"""The zoom video: decoded with PyAV, measured in pixels, against the build it came from."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageSequence

from hypermosaic.build import build_mosaic
from hypermosaic.build.config import build_config_from_dict
from hypermosaic.cli import cli
from hypermosaic.cli.video import _parse_size
from hypermosaic.errors import InputError, Interrupted
from hypermosaic.progress import Progress
from hypermosaic.store import LOCK_NAME, folder_lock
from hypermosaic.tree import parse_address
from hypermosaic.video import VideoSettings, render_video
from hypermosaic.video import run as video
from hypermosaic.video.camera import View, ease, level_for, progress_at, zoom_path
from hypermosaic.video.encode import GifEncoder, VideoWriter
from hypermosaic.video.frames import FrameRenderer, NodeCache
from hypermosaic.video.planes import planes_to_rgb, rgb_to_planes
from hypermosaic.video.run import AHEAD, ahead, zoom_frames
from hypermosaic.video.settings import frame_count, settings_from_options
from hypermosaic.video.target import choose_path, open_build
from tests.helpers import per_frame_palette_gif

W, H = 128, 72
PATH = "1_0/0_1/0_1"  # a path whose zoom fixed point lies well inside the frame


def build(examples_dir: Path, out: Path, client, **raw) -> Path:
    raw = {"seed": 5, "size": 64, "grid": 2, "depth": 3, "engine": "recolor",
           "primary": {"image": "images/chelsea.png"}, "tiles": {"strength": 0.6},
           "out": str(out), **raw}
    config = build_config_from_dict(raw, base=examples_dir, source="test.toml")
    build_mosaic(config, client=client, publish=raw.get("publish", {}).get("deepzoom", True))
    return out


@pytest.fixture(scope="module")
def mosaic(examples_dir, tmp_path_factory, dask_client) -> Path:
    """A full depth-3 recolor build (64 px nodes, grid 2) with its preview."""
    return build(examples_dir, tmp_path_factory.mktemp("video") / "build", dask_client)


@pytest.fixture(scope="module")
def focused(examples_dir, tmp_path_factory, dask_client) -> Path:
    """A depth-3 build expanded only along one path, without neighbours."""
    return build(examples_dir, tmp_path_factory.mktemp("focus") / "build", dask_client,
                 focus={"path": [[0, 1], [1, 1], [1, 0]], "neighbours": 0},
                 publish={"deepzoom": False})


def decode(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    frames = [frame.to_ndarray(format="rgb24").astype(np.int16)
              for frame in container.decode(video=0)]
    container.close()
    return frames, stream


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def settings(**changes) -> VideoSettings:
    if "seconds" in changes:
        changes.setdefault("seconds_per_level", None)
    return replace(VideoSettings(width=W, height=H, fps=12, seconds_per_level=1, crf=12),
                   **changes)


def test_video_decodes_with_expected_frames_size_and_rate(mosaic, tmp_path):
    out = tmp_path / "zoom.mp4"
    result = render_video(mosaic, out, settings=settings())
    frames, stream = decode(out)
    assert result.frames == 36  # 1 s per level x 3 levels x 12 fps
    assert len(frames) == 36
    assert frames[0].shape == (H, W, 3)
    assert stream.average_rate == 12
    assert stream.codec_context.name == "h264"
    assert result.target == parse_address("1_1/1_1/1_1")  # the central path, no focus


@pytest.mark.parametrize("codec,suffix", [("vp9", ".webm"), ("av1", ".mkv")])
def test_other_codecs_decode(mosaic, tmp_path, codec, suffix):
    out = tmp_path / f"zoom{suffix}"
    render_video(mosaic, out, settings=settings(codec=codec, seconds=1, crf=None))
    frames, stream = decode(out)
    assert len(frames) == 12 and frames[0].shape == (H, W, 3)
    assert stream.codec_context.name in {"vp9", "libvpx-vp9", "libdav1d", "av1"}


def test_gif_preview(mosaic, tmp_path):
    out = tmp_path / "zoom.gif"
    result = render_video(mosaic, out, settings=settings(seconds=1, crf=None))
    frames, _ = decode(out)
    assert result.codec == "gif" and len(frames) == 12
    reference, _ = decode(
        render_video(mosaic, tmp_path / "same.mp4", settings=settings(seconds=1)).path)
    assert mad(frames[5], reference[5]) < 8  # a 256-colour palette of the same frame


def zoom_about(image: Image.Image, point: tuple[float, float], sigma: float) -> np.ndarray:
    """``image`` magnified ``sigma`` times about ``point`` (frame pixels)."""
    px, py = point
    left, top = px * (1 - 1 / sigma), py * (1 - 1 / sigma)
    box = (left, top, left + W / sigma, top + H / sigma)
    return np.asarray(image.resize((W, H), Image.Resampling.BILINEAR, box=box), np.float32)


def fixed_point_in_frame(mosaic: Path, target, loop: bool = True) -> tuple[float, float]:
    """Where the camera's fixed point sits in the frame (frame pixels)."""
    _, plan = open_build(mosaic)
    camera = zoom_path(plan, target, W, H, loop=loop)
    start = camera.start
    return ((camera.fixed[0] - start.left) / (start.right - start.left) * W,
            (camera.fixed[1] - start.top) / (start.bottom - start.top) * H)


def measured_scale(frames: list[Image.Image], point: tuple[float, float], i: int,
                   gap: int) -> float:
    """The magnification from frame i to frame i + gap about ``point``, found by search over
    the pixels (not read from the camera)."""
    sigmas = np.exp(np.linspace(0, np.log(2.0), 300))
    later = np.asarray(frames[i + gap], np.float32)[4:-4, 4:-4]
    errors = [np.abs(zoom_about(frames[i], point, s)[4:-4, 4:-4] - later).mean()
              for s in sigmas]
    return float(sigmas[int(np.argmin(errors))])


def grey_frames(path: Path) -> list[Image.Image]:
    return [Image.fromarray(f.astype(np.uint8)).convert("L") for f in decode(path)[0]]


def test_zoom_is_exponential_measured_in_pixels(mosaic, tmp_path):
    """Frame i+4 is frame i magnified about the fixed point by the same factor all the way
    down; the factor is estimated from the pixels by search, not read from the camera."""
    out = tmp_path / "zoom.mp4"
    result = render_video(mosaic, out, settings=settings(loop=False, path=PATH))
    frames = grey_frames(out)
    _, plan = open_build(mosaic)
    camera = zoom_path(plan, result.target, W, H, loop=False)
    point = fixed_point_in_frame(mosaic, result.target, loop=False)
    assert 8 < point[0] < W - 8 and 8 < point[1] < H - 8
    gap = 4
    expected = (1 / camera.ratio) ** (gap / (result.frames - 1))
    found = [measured_scale(frames, point, i, gap) for i in range(0, result.frames - gap, 4)]
    assert len(found) == 8
    np.testing.assert_allclose(found, expected, rtol=0.02)


def test_cli_ease_slows_the_zoom_at_both_ends(mosaic, tmp_path):
    """``--ease 0.3`` through the CLI: measured in the decoded pixels, the scale factor over
    four frames is smaller at the start and at the end than in the middle, and matches the
    eased camera everywhere."""
    out = tmp_path / "eased.mp4"
    result = CliRunner().invoke(cli, [
        "video", str(mosaic), "--out", str(out), "--size", f"{W}x{H}", "--fps", "12",
        "--seconds", "3", "--crf", "12", "--path", PATH, "--no-loop", "--ease", "0.3"])
    assert result.exit_code == 0, result.output
    frames = grey_frames(out)
    assert len(frames) == 36
    _, plan = open_build(mosaic)
    target = parse_address(PATH)
    ratio = zoom_path(plan, target, W, H, loop=False).ratio
    point = fixed_point_in_frame(mosaic, target, loop=False)
    gap, starts = 4, (0, 16, 31)
    found = [measured_scale(frames, point, i, gap) for i in starts]
    expected = [(1 / ratio) ** (ease((i + gap) / 35, 0.3) - ease(i / 35, 0.3)) for i in starts]
    np.testing.assert_allclose(found, expected, rtol=0.02)
    start, middle, end = found
    assert start < middle and end < middle
    assert start < 1.1 < 1.3 < middle  # not a subtle difference


def seam_and_typical(frames: list[np.ndarray], k: int = 3) -> tuple[float, float]:
    """The MAD across the loop boundary (last frame to first) and the typical MAD between
    consecutive frames there: the median of the k steps before and the k steps after it."""
    steps = [mad(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    return mad(frames[-1], frames[0]), float(np.median(steps[:k] + steps[-k:]))


def test_loop_boundary_is_an_ordinary_step(mosaic, tmp_path):
    """Looping, the jump from the last frame to the first is no bigger than the steps around it
    (10% for the encoder: the first frame is a key frame, the last one is not); without the
    loop the same measure sees the cut from the deepest node back to the whole canvas."""
    looped, _ = decode(render_video(mosaic, tmp_path / "loop.mp4", settings=settings()).path)
    seam, typical = seam_and_typical(looped)
    assert seam <= 1.1 * typical
    cut, _ = decode(
        render_video(mosaic, tmp_path / "cut.mp4", settings=settings(loop=False)).path)
    seam_cut, typical_cut = seam_and_typical(cut)
    assert seam_cut > 1.25 * typical_cut
    assert seam_cut > 1.25 * seam


def test_loop_closes_exactly_on_the_whole_canvas(mosaic):
    """Before encoding: the last frame is exactly a fresh render of the canvas view, and the
    first one exactly a fresh render of the view one ordinary zoom step further in."""
    store, plan = open_build(mosaic)
    s = settings()
    target = choose_path(store, plan, None)
    camera = zoom_path(plan, target, W, H)
    count = frame_count(s, len(target))
    frames = list(zoom_frames(store, plan, camera, s, count, fade=12))
    whole = FrameRenderer(store, plan, W, H).render(camera.view(0))
    first = FrameRenderer(store, plan, W, H).render(camera.view(progress_at(0, count, s)))
    for a, b in zip(frames[-1], whole, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(frames[0], first, strict=True):
        np.testing.assert_array_equal(a, b)
    assert progress_at(count - 1, count, s) == 1.0


def preview_view(mosaic: Path, box, canvas: int, width: int, height: int) -> np.ndarray:
    """The build's preview.png under a canvas ``box`` at frame size, black past the canvas."""
    preview = Image.open(mosaic / "preview.png").convert("RGB")
    scale = preview.width / canvas
    padded = Image.new("RGB", (3 * preview.width, 3 * preview.height))
    padded.paste(preview, (preview.width, preview.height))  # room for boxes past the canvas
    crop = tuple(edge * scale + preview.width for edge in box)
    return np.asarray(padded.resize((width, height), Image.Resampling.BILINEAR, box=crop))


def test_first_frame_matches_the_canvas_preview(mosaic, tmp_path):
    """At 512x288 the frames show the canvas like preview.png: the first one whole (fitted to
    the frame's height, black on either side), the looped one's last frame too."""
    store, plan = open_build(mosaic)
    assert Image.open(mosaic / "preview.png").width == plan.canvas_size == 512
    w, h = 512, 288
    camera = zoom_path(plan, choose_path(store, plan, None), w, h)
    big = settings(width=w, height=h, seconds=1)
    whole = preview_view(mosaic, camera.view(0), plan.canvas_size, w, h)
    assert whole[:, :100].max() == 0 and whole[:, 412:].max() == 0  # the bands are black
    straight, _ = decode(
        render_video(mosaic, tmp_path / "a.mp4", settings=replace(big, loop=False)).path)
    assert mad(straight[0], whole) < 2.5
    looped, _ = decode(render_video(mosaic, tmp_path / "b.mp4", settings=big).path)
    first_view = camera.view(progress_at(0, len(looped), big))
    assert mad(looped[0], preview_view(mosaic, first_view, plan.canvas_size, w, h)) < 2.5
    assert mad(looped[-1], whole) < 2.5
    assert mad(straight[-1], whole) > 15  # and the far end really is somewhere else


def test_deep_frames_come_from_the_sharpest_node(mosaic):
    """A view of exactly one deepest node at the node's resolution shows that node's pixels,
    not its parent's tile enlarged (which exists too, and is blurrier)."""
    store, plan = open_build(mosaic)
    address = parse_address("1_1/0_1/1_0")
    x, y = plan.origin(address)
    side = plan.span(3)
    assert level_for(plan, side / plan.size) == 3
    width, height = plan.size, plan.size // 2
    view_box = (x, y + side / 4, x + side, y + 3 * side / 4)
    frame = planes_to_rgb(FrameRenderer(store, plan, width, height).render(View(*view_box)))
    node = np.asarray(Image.open(store.node_path(address)).convert("RGB"))[16:48]
    round_trip = planes_to_rgb(rgb_to_planes(Image.fromarray(node)))
    parent = Image.open(store.node_path(address[:-1])).convert("RGB")
    top, _, left, _ = plan.tile_box(address)
    enlarged = np.asarray(parent.resize((64, 32), Image.Resampling.BILINEAR,
                                        box=(left, top + 8, left + 32, top + 24)))
    assert mad(frame, round_trip) < 1.5
    assert mad(enlarged, node) > 4 * mad(frame, node)


def test_rendering_does_not_depend_on_history(mosaic):
    """A renderer that zoomed all the way in gives the same pixels as a fresh one."""
    store, plan = open_build(mosaic)
    camera = zoom_path(plan, choose_path(store, plan, PATH), W, H)
    travelled = FrameRenderer(store, plan, W, H)
    for u in np.linspace(0, 0.8, 30):
        travelled.render(camera.view(u))
    for u in (0.8, 0.81):
        fresh = FrameRenderer(store, plan, W, H).render(camera.view(u))
        for a, b in zip(travelled.render(camera.view(u)), fresh, strict=True):
            np.testing.assert_array_equal(a, b)
    assert travelled.regions_built >= 4


def test_focus_path_is_the_default_target_and_gaps_come_from_ancestors(focused, tmp_path):
    result = render_video(focused, tmp_path / "f.mp4", settings=settings(seconds=1))
    assert result.target == ((0, 1), (1, 1), (1, 0))
    store, plan = open_build(focused)
    missing = parse_address("0_0/0_0/0_0")
    assert not store.has(missing) and not store.has(missing[:1])
    # a view of that unexpanded corner is the root's corner, enlarged: the sharpest there is
    x, y = plan.origin(missing)
    side = plan.span(3)
    frame = planes_to_rgb(FrameRenderer(store, plan, 64, 32).render(
        View(x, y, x + side, y + side / 2)))
    root = Image.open(store.node_path(())).convert("RGB")
    corner = np.asarray(root.resize((64, 32), Image.Resampling.BILINEAR, box=(0, 0, 8, 4)))
    assert mad(frame, corner) < 3


def test_ease_ramps_the_speed_at_both_ends():
    steps = np.diff([ease(t / 40, 0.25) for t in range(41)])
    assert ease(0, 0.25) == 0 and ease(1, 0.25) == pytest.approx(1)
    assert steps[0] < 0.2 * steps[20] and steps[-1] < 0.2 * steps[20]
    np.testing.assert_allclose(steps[12:28], steps[20])  # constant speed in the middle
    np.testing.assert_allclose(np.diff([ease(t / 10, 0) for t in range(11)]), 0.1)


def test_bad_inputs_are_refused_and_nothing_is_written(mosaic, focused, tmp_path):
    out = tmp_path / "x.mp4"
    cases = [
        (tmp_path / "nothing", settings(), "no such build directory"),
        (mosaic, settings(width=127), "--size 127x72: width and height must be even"),
        (mosaic, settings(codec="gif"), "--out .*x.mp4: a gif video needs a file ending in .gif"),
        (mosaic, settings(crf=99), "--crf 99: h264 takes 0 to 51"),
        (mosaic, settings(path="2_0"), "--path 2_0: step 2_0 of 2_0 is outside the 2x2 grid"),
        (mosaic, settings(path="1_1/1_1/1_1/1_1"),
         "--path 1_1/1_1/1_1/1_1: deeper than the build in .*build (depth 3); pass --config"),
        (mosaic, settings(seconds=2, seconds_per_level=1), "not both"),
        (mosaic, settings(drift=False), "--no-drift needs --no-loop"),
        (focused, settings(path="0_0/0_0"),
         "too shallow for path 0_0/0_0: node 0_0 is missing (deepest stored: root)"),
    ]
    for build_dir, bad, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            render_video(build_dir, out, settings=bad)
    with pytest.raises(InputError, match="a h264 video needs a file ending in .mp4, .mkv, .mov"):
        render_video(mosaic, tmp_path / "x.webm", settings=settings())
    assert list(tmp_path.iterdir()) == []


def test_incomplete_build_is_refused(mosaic, tmp_path):
    copy = tmp_path / "copy"
    (copy / "nodes").mkdir(parents=True)
    manifest = json.loads((mosaic / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(InputError, match="incomplete"):
        render_video(copy, tmp_path / "x.mp4", settings=settings())


def test_an_interrupted_render_leaves_no_file(mosaic, tmp_path):
    """Ctrl-C mid-render: `Interrupted` (exit status 130 on the command line) saying nothing was
    written, the previous video untouched, no partial file (only the folder's lock file)."""
    out = tmp_path / "x.mp4"
    out.write_bytes(b"the previous video")

    def stop(event: Progress) -> None:
        if event.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"^no video written; run the same command again$"):
        render_video(mosaic, out, settings=settings(), progress=stop)
    assert out.read_bytes() == b"the previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "x.mp4"]


def test_frames_are_made_ahead_one_at_a_time_and_errors_surface():
    made = []

    def frames():
        for i in range(100):
            made.append(i)
            if i == 7:
                raise ValueError("frame 7 failed")
            yield i

    stream = ahead(frames(), 2)
    assert next(stream) == 0
    assert len(made) <= 4  # never a list of frames: at most the queue ahead
    with pytest.raises(ValueError, match="frame 7 failed"):
        list(stream)


def test_cli_writes_the_video_and_reports_errors(mosaic, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.webm"
    result = runner.invoke(cli, ["video", str(mosaic), "--out", str(out), "--size", "96x54",
                                 "--fps", "8", "--seconds", "1", "--path", PATH])
    assert result.exit_code == 0, result.output
    frames, stream = decode(out)
    assert len(frames) == 8 and frames[0].shape == (54, 96, 3)
    assert stream.codec_context.name in {"vp9", "libvpx-vp9"}
    assert "zooming into 1_0/0_1/0_1" in result.output
    bad = runner.invoke(cli, ["video", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2
    assert "Error:" in bad.output and "no such build directory" in bad.output


def test_camera_ends_on_the_target_with_drift_and_keeps_it_in_place_without(mosaic):
    store, plan = open_build(mosaic)
    target = parse_address("0_1/1_1/1_0")
    x, y = plan.origin(target)
    side = plan.span(3)
    centre = (x + side / 2, y + side / 2)

    def where(view: View) -> tuple[float, float]:
        return ((centre[0] - view.left) / (view.right - view.left),
                (centre[1] - view.top) / (view.bottom - view.top))

    drifting = zoom_path(plan, target, W, H)
    end = drifting.view(1)  # the target whole, fitted to the frame's height, centred
    np.testing.assert_allclose(end, (x + side * (1 - W / H) / 2, y, x + side * (1 + W / H) / 2,
                                     y + side), atol=1e-6)
    np.testing.assert_allclose(drifting.view(0), (512 * (1 - W / H) / 2, 0, 512 * (1 + W / H) / 2,
                                                  512), atol=1e-6)
    straight = zoom_path(plan, target, W, H, drift=False)
    spots = [where(straight.view(u)) for u in np.linspace(0, 1, 7)]
    np.testing.assert_allclose(spots, [spots[0]] * 7, atol=1e-9)
    assert where(end) == pytest.approx((0.5, 0.5))
    assert where(drifting.view(0)) != pytest.approx((0.5, 0.5))


def test_a_folder_without_a_build_is_refused(tmp_path):
    """A directory that exists but holds no manifest is no build: one line, exit status 2,
    and nothing is written into it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty: no hypermosaic build here \(no manifest.json\)"):
        render_video(empty, tmp_path / "x.mp4", settings=settings())
    result = CliRunner().invoke(cli, ["video", str(empty)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error:") and "no hypermosaic build here" in line
    assert list(empty.iterdir()) == [] and sorted(tmp_path.iterdir()) == [empty]


def test_no_drift_needs_no_loop_on_the_command_line(mosaic, tmp_path):
    """Without drift the target keeps its place in the frame, so the zoom ends with it
    off-centre, not framed as the canvas was at the start: it cannot loop, and the CLI says so
    before any work; with ``--no-loop`` it renders, and ends on another view than the drift."""
    out = tmp_path / "straight.mp4"
    args = ["video", str(mosaic), "--size", f"{W}x{H}", "--fps", "8", "--seconds", "1"]
    refused = CliRunner().invoke(cli, [*args, "--out", str(out), "--no-drift"])
    assert refused.exit_code == 2
    assert "--no-drift needs --no-loop" in refused.output
    assert not out.exists()
    straight = CliRunner().invoke(cli, [*args, "--out", str(out), "--no-drift", "--no-loop"])
    assert straight.exit_code == 0, straight.output
    drifting = tmp_path / "drifting.mp4"
    result = CliRunner().invoke(cli, [*args, "--out", str(drifting), "--no-loop"])
    assert result.exit_code == 0, result.output
    (first, *_, last), _ = decode(out)
    (drift_first, *_, drift_last), _ = decode(drifting)
    assert np.abs(first.astype(int) - drift_first.astype(int)).mean() < 2  # both: the canvas
    assert np.abs(last.astype(int) - drift_last.astype(int)).mean() > 5  # another end (measured 13)


@pytest.mark.parametrize("text,size", [
    ("4k", (3840, 2160)), ("4K", (3840, 2160)), ("1080p", (1920, 1080)), ("720P", (1280, 720)),
    ("640x360", (640, 360)), ("640X360", (640, 360)),
])
def test_size_names_and_pairs_parse(text, size):
    assert _parse_size(None, None, text) == size


@pytest.mark.parametrize("text", ["4x", "x360", "big", "640*360", "-640x360", "8k"])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(click.BadParameter, match="is not WIDTHxHEIGHT"):
        _parse_size(None, None, text)
    result = CliRunner().invoke(cli, ["video", "nowhere", "--size", text])
    assert result.exit_code == 2 and "is not WIDTHxHEIGHT" in result.output


def test_cli_gif_defaults_to_a_small_slow_preview_beside_the_build(mosaic, tmp_path):
    """``--gif`` alone: OUT_DIR/zoom.gif, 480x270 at 15 fps; the bar reaches the frame total."""
    copy = shutil.copytree(mosaic, tmp_path / "build")
    result = CliRunner().invoke(cli, ["video", str(copy), "--gif", "--seconds", "1"])
    assert result.exit_code == 0, result.output
    assert "15/15" in result.output
    assert f"wrote {copy / 'zoom.gif'}: 15 frames of 480x270 at 15 fps (gif)" in result.output
    container = av.open(str(copy / "zoom.gif"))
    frames = list(container.decode(video=0))
    container.close()
    assert len(frames) == 15 and (frames[0].width, frames[0].height) == (480, 270)
    assert frames[-1].time == pytest.approx(14 / 15, abs=0.01)  # GIF delays are centiseconds


def test_cli_codec_crf_and_seconds_per_level(mosaic, tmp_path):
    """``--codec`` overrides the container's default, ``--crf`` reaches the encoder (x264
    writes its settings into the stream), ``--seconds-per-level`` sets the length."""
    runner = CliRunner()
    small = ["--size", "96x54", "--fps", "8", "--seconds-per-level", "0.5"]
    h264 = tmp_path / "a.mkv"
    result = runner.invoke(cli, ["video", str(mosaic), "--out", str(h264), *small,
                                 "--codec", "h264", "--crf", "30"])
    assert result.exit_code == 0, result.output
    assert "12/12" in result.output  # the progress bar reached the total
    frames, stream = decode(h264)
    assert len(frames) == 12  # 0.5 s per level x 3 levels x 8 fps
    assert stream.codec_context.name == "h264"
    assert b"crf=30.0" in h264.read_bytes()
    vp9 = tmp_path / "b.mkv"  # an .mkv is h264 unless told
    result = runner.invoke(cli, ["video", str(mosaic), "--out", str(vp9), *small,
                                 "--codec", "vp9"])
    assert result.exit_code == 0, result.output
    frames, stream = decode(vp9)
    assert len(frames) == 12 and stream.codec_context.name in {"vp9", "libvpx-vp9"}


@pytest.mark.parametrize("args,message", [
    (["--gif", "--codec", "vp9"], "--codec does not apply to --gif"),
    (["--out", "x.gif", "--codec", "h264"], "--codec does not apply to --gif"),
    (["--out", "x.gif", "--crf", "20"], "--crf does not apply to a GIF"),
    (["--out", "x.mp4", "--codec", "h264", "--crf", "52"], "--crf 52: h264 takes 0 to 51"),
    (["--out", "x.mp4", "--codec", "mpeg2"], "Invalid value for '--codec'"),
])
def test_cli_option_conflicts_are_usage_errors(mosaic, tmp_path, args, message):
    args = [str(tmp_path / arg) if arg.startswith("x.") else arg for arg in args]
    result = CliRunner().invoke(cli, ["video", str(mosaic), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert list(tmp_path.iterdir()) == []
    assert not (mosaic / "zoom.gif").exists()


def test_progress_reaches_the_frame_total(mosaic, tmp_path):
    seen: list[tuple[int, int]] = []
    result = render_video(mosaic, tmp_path / "p.mp4", settings=settings(seconds=1),
                          progress=lambda event: seen.append((event.done, event.total)))
    assert seen == [(done, 12) for done in range(1, 13)] and result.frames == 12


def test_options_take_the_cli_defaults_and_exclude_settings(tmp_path):
    """`render_video`'s options default as ``hypermosaic video``'s do; a prebuilt settings
    beside an option is refused before any work (it would silently win)."""
    plain = settings_from_options(Path("a.mkv"))
    assert (plain.width, plain.height, plain.fps, plain.codec) == (1920, 1080, 30.0, "h264")
    assert settings_from_options(Path("a.webm")).codec == "vp9"
    for gif in (settings_from_options(Path("a.gif")),
                settings_from_options(Path("a.mp4"), gif=True)):
        assert (gif.width, gif.height, gif.fps, gif.codec) == (480, 270, 15.0, "gif")
    given = settings_from_options(Path("a.mp4"), size=(64, 36), fps=8, codec="av1", loop=False)
    assert (given.width, given.height, given.fps) == (64, 36, 8)
    assert (given.codec, given.loop) == ("av1", False)
    with pytest.raises(InputError, match="--codec does not apply to --gif"):
        settings_from_options(Path("a.gif"), codec="h264")
    with pytest.raises(TypeError, match=r"not both"):
        render_video(tmp_path, settings=VideoSettings(), fps=24)
    assert list(tmp_path.iterdir()) == []


def test_render_video_holds_a_bounded_number_of_frames(mosaic, tmp_path, monkeypatch):
    """Frames are made one at a time: however long the video, no more than the few frames
    between renderer and encoder (the queue ahead and the one in each hand) are alive."""
    made: list[weakref.ref] = []
    alive: list[int] = []
    frames_of = video.zoom_frames

    def tracked(*args, **kwargs):
        for planes in frames_of(*args, **kwargs):
            made.append(weakref.ref(planes.y))
            yield planes

    write = VideoWriter.write

    def counting(self, planes):
        alive.append(sum(ref() is not None for ref in made))
        write(self, planes)

    monkeypatch.setattr(video, "zoom_frames", tracked)
    monkeypatch.setattr(VideoWriter, "write", counting)
    result = render_video(mosaic, tmp_path / "long.mp4", settings=settings(seconds=8))
    assert result.frames == len(made) == len(alive) == 96
    assert max(alive) <= AHEAD + 2


def test_a_failing_writer_stops_the_render_thread(mosaic, tmp_path, monkeypatch):
    """An error while encoding (here from the writer) ends the render thread before
    `render_video` raises, rather than leaving it blocked until garbage collection."""
    calls, renderers = [], []

    def failing(self, planes):
        calls.append(1)
        if len(calls) == 3:
            renderers.extend(t for t in threading.enumerate() if t.name == "hypermosaic-render")
            raise RuntimeError("disk full")

    monkeypatch.setattr(VideoWriter, "write", failing)
    # kept: it holds the failed call's frames (and its generator), so no GC cleanup helps
    with pytest.raises(RuntimeError, match="disk full") as raised:  # noqa: F841
        render_video(mosaic, tmp_path / "x.mp4", settings=settings(seconds=4))
    assert len(renderers) == 1  # it was running when writing failed
    assert not renderers[0].is_alive()
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


def test_camera_and_miniature_decode_each_node_once(mosaic, monkeypatch):
    """The loop's miniature renderer shares the camera's node cache: over a looping video
    whose first frames and last (miniature) frames need the same nodes, no node image is
    decoded twice at the same resolution."""
    decodes: Counter = Counter()
    decode_node = NodeCache._decode

    def counted(self, address, mip):
        decodes[address, mip] += 1
        return decode_node(self, address, mip)

    monkeypatch.setattr(NodeCache, "_decode", counted)
    store, plan = open_build(mosaic)
    w, h = 160, 90
    s = settings(width=w, height=h)
    target = choose_path(store, plan, None)
    camera = zoom_path(plan, target, w, h)
    count = frame_count(s, len(target))
    for _ in zoom_frames(store, plan, camera, s, count, fade=12):
        pass
    assert decodes and max(decodes.values()) == 1
    # both ends really need the same nodes: fresh renderers, each with its own cache
    decodes.clear()
    FrameRenderer(store, plan, w, h).render(camera.view(progress_at(0, count, s)))
    first = set(decodes)
    decodes.clear()
    FrameRenderer(store, plan, w, h).render(camera.view(progress_at(count - 2, count, s) - 1))
    assert first & set(decodes)


# --- issue 11: bad numbers, framing, sharp ending, GIF size, Ctrl-C, locks, workers -----------


@pytest.mark.parametrize("fps", [0, 0.0, -1])
def test_fps_zero_is_refused_like_a_negative_one(mosaic, tmp_path, fps):
    """Only None means "the default": an fps of 0 is kept and refused, as -1 always was."""
    assert settings_from_options(Path("a.mp4"), fps=fps).fps == fps
    assert settings_from_options(Path("a.gif"), fps=None).fps == 15
    with pytest.raises(InputError, match=rf"^--fps {fps:g}: must be in \(0, 240\]$"):
        render_video(mosaic, tmp_path / "x.mp4", fps=fps)
    result = CliRunner().invoke(cli, ["video", str(mosaic), "--out", str(tmp_path / "y.mp4"),
                                      "--fps", str(fps)])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: --fps {fps:g}: must be in (0, 240]"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("changes,message", [
    ({"fps": True}, "--fps True: not a number"),
    ({"fps": float("nan")}, "--fps nan: not a number"),
    ({"width": True}, "--size True: not an integer"),
    ({"seconds": False, "seconds_per_level": None}, "--seconds False: not a number"),
    ({"crf": True}, "--crf True: not an integer"),
    ({"ease": True}, "--ease True: not a number"),
    ({"fade": float("nan")}, "--fade nan: not a number"),
])
def test_booleans_and_nan_are_not_numbers(mosaic, tmp_path, changes, message):
    with pytest.raises(InputError, match=f"^{message}$"):
        render_video(mosaic, tmp_path / "x.mp4", settings=replace(settings(), **changes))
    with pytest.raises(InputError, match="--workers True: not an integer"):
        render_video(mosaic, tmp_path / "x.mp4", workers=True)
    assert list(tmp_path.iterdir()) == []


def is_background(planes, window) -> bool:
    """Whether the frame is exactly the black background (YUV 16, 128, 128) in ``window``
    (x0, y0, x1, y1, even)."""
    x0, y0, x1, y1 = window
    half = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
    return bool((planes.y[y0:y1, x0:x1] == 16).all() and (planes.u[half] == 128).all()
                and (planes.v[half] == 128).all())


def test_first_frame_shows_the_whole_primary_fitted_on_a_background(mosaic):
    """The opening frame holds the whole canvas (nothing cropped), fitted to the frame's height
    and centred, on black; the looping video's last frame is exactly that frame."""
    store, plan = open_build(mosaic)
    w, h = 512, 288  # the canvas (512 px) at 288 px: drawn from the leaves, like preview.png
    s = settings(width=w, height=h, seconds=1)
    count = frame_count(s, 3)
    target = choose_path(store, plan, None)
    straight = zoom_path(plan, target, w, h, loop=False)
    first = next(iter(zoom_frames(store, plan, straight, replace(s, loop=False), count, fade=0)))
    x0 = (w - h) // 2
    assert is_background(first, (0, 0, x0, h)) and is_background(first, (x0 + h, 0, w, h))
    whole = preview_view(mosaic, straight.view(0), plan.canvas_size, w, h)
    assert mad(planes_to_rgb(first), whole) < 2.5
    *_, last = zoom_frames(store, plan, zoom_path(plan, target, w, h), s, count, fade=6)
    for a, b in zip(last, first, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_canvas_edge_is_drawn_at_sub_pixel_accuracy(mosaic):
    """While the canvas is narrower than the frame its edges fall between pixels: the edge
    pixel mixes canvas and background in proportion, rather than snapping to whole pixels."""
    store, plan = open_build(mosaic)
    renderer = FrameRenderer(store, plan, W, H)
    edge = 30.5  # the canvas's left edge, in frame pixels, at 4 canvas pixels per frame pixel
    view = View(-edge * 4, 0, (W - edge) * 4, H * 4)
    luma = renderer.render(view).y.astype(int)
    assert (luma[:, :30] == 16).all()  # background
    assert (luma[:, 31:] > 16).mean() > 0.99  # canvas
    inside = luma[:, 32]
    assert 16 < luma[:, 30].mean() < inside.mean()  # half canvas, half background


def test_zoom_stops_where_a_leaf_pixel_is_a_frame_pixel(mosaic):
    """With 64 px nodes in a 72 px high frame the camera stops before the target fills the
    frame: a --no-loop video ends on the target centred and 64 px across, its pixels one to one
    (not enlarged); looping, the camera stops at the same scale. No camera frame is ever finer
    than the nodes."""
    store, plan = open_build(mosaic)
    target = choose_path(store, plan, None)
    leaf = plan.span(3) / plan.size  # canvas pixels per node pixel at depth 3
    sharp = 1 - np.log(72 / 64) / np.log(8)
    s = settings(loop=False)
    count = frame_count(s, 3)
    straight = zoom_path(plan, target, W, H, loop=False)
    assert straight.end == 1.0 and straight.ratio == pytest.approx((1 / 8) ** sharp)
    last_view = straight.view(progress_at(count - 1, count, s))
    assert (last_view.right - last_view.left) / W == pytest.approx(leaf)
    *_, last = zoom_frames(store, plan, straight, s, count, fade=0)
    x, y = plan.origin(target)
    left, top = (x - last_view.left) / leaf, (y - last_view.top) / leaf
    assert (left, top) == (pytest.approx((W - 64) / 2), pytest.approx((H - 64) / 2))
    node = Image.open(store.node_path(target)).convert("RGB")
    round_trip = planes_to_rgb(rgb_to_planes(node))
    assert mad(planes_to_rgb(last)[4:68, 32:96], round_trip) < 1.5
    looping = zoom_path(plan, target, W, H)
    assert looping.end == pytest.approx(sharp)
    for camera, loop in ((straight, False), (looping, True)):
        for t in range(count):
            u = progress_at(t, count, replace(s, loop=loop))
            if u <= camera.end:  # the camera's frames (past the end: the miniature's)
                view = camera.view(u)
                assert (view.right - view.left) / W >= leaf * (1 - 1e-9)
    # a 64 px node in a frame 64 px high or less is sharp all the way: the whole descent
    assert zoom_path(plan, target, 96, 64).end == 1.0


def test_loop_lands_on_the_fitted_canvas_after_the_sharp_stop(mosaic):
    """Looping, the camera stops at its sharp end; the cross-fade ends on that frame, and from
    there the miniature zooms on alone (the next descent's start, with background around it)
    up to the last frame, the fitted canvas: each of those frames is exactly a fresh render of
    the view one descent up, and no frame shows the nodes finer than they are."""
    store, plan = open_build(mosaic)
    camera = zoom_path(plan, choose_path(store, plan, None), W, H)
    s = settings()
    count = frame_count(s, 3)
    progress = [progress_at(t, count, s) for t in range(count)]
    last = max(t for t, u in enumerate(progress) if u <= camera.end)
    assert last < count - 2  # frames past the sharp stop exist at this size
    frames = list(zoom_frames(store, plan, camera, s, count, fade=12))
    for t in range(last, count):
        fresh = FrameRenderer(store, plan, W, H).render(camera.view(progress[t] - 1))
        for a, b in zip(frames[t], fresh, strict=True):
            np.testing.assert_array_equal(a, b)
    before = FrameRenderer(store, plan, W, H).render(camera.view(progress[last - 1]))
    assert mad(planes_to_rgb(frames[last - 1]), planes_to_rgb(before)) > 1  # mid-fade


def test_a_frame_larger_than_the_whole_mosaic_is_refused(mosaic, tmp_path):
    """At 1024x576 even the whole 512 px mosaic would be enlarged: no frame could be sharp."""
    with pytest.raises(InputError, match=r"^--size 1024x576: the whole mosaic is 512 pixels"):
        render_video(mosaic, tmp_path / "x.mp4", settings=settings(width=1024, height=576))
    assert list(tmp_path.iterdir()) == []


def gif_blocks(data: bytes) -> list[dict]:
    """The image blocks of a GIF: offset, size, local colour table (or b""), transparency."""
    assert data[:6] == b"GIF89a" and data[10] & 0x80  # a global colour table
    pos, blocks, transparent = 13 + 3 * 2 ** ((data[10] & 7) + 1), [], False
    while data[pos] != 0x3B:
        if data[pos] == 0x21:  # an extension: graphic control (0xF9) or application
            if data[pos + 1] == 0xF9:
                transparent = bool(data[pos + 3] & 1)
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
            continue
        assert data[pos] == 0x2C
        x, y, w, h = (int.from_bytes(data[pos + i:pos + i + 2], "little") for i in (1, 3, 5, 7))
        flags = data[pos + 9]
        pos += 10
        local = b""
        if flags & 0x80:
            local = data[pos:pos + 3 * 2 ** ((flags & 7) + 1)]
            pos += len(local)
        pos += 1  # LZW minimum code size
        start = pos
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
        blocks.append({"box": (x, y, w, h), "local": local, "transparent": transparent,
                       "bytes": pos - start})
        transparent = False
    return blocks


def test_gif_has_a_palette_per_scene_and_stores_only_what_changed(mosaic, tmp_path):
    """The GIF decodes with PyAV and with Pillow to the same frames (count, size, pixels), close
    to the video's; it has a few palettes, not one a frame; frames after the first are
    differenced (transparent unchanged pixels, or a smaller rectangle); and it is much smaller
    than the same frames each quantised to its own palette, as before."""
    w, h, fps = 240, 136, 12.0
    s = settings(width=w, height=h, seconds=3, crf=None, codec="gif")
    out = render_video(mosaic, tmp_path / "zoom.gif", settings=s).path
    by_av, stream = decode(out)
    with Image.open(out) as image:
        by_pillow = [np.asarray(frame.convert("RGB")).astype(np.int16)
                     for frame in ImageSequence.Iterator(image)]
    assert len(by_av) == len(by_pillow) == 36 and by_av[0].shape == (h, w, 3)
    for a, b in zip(by_av, by_pillow, strict=True):
        np.testing.assert_array_equal(a, b)
    store, plan = open_build(mosaic)
    camera = zoom_path(plan, choose_path(store, plan, None), w, h)
    rendered = [planes_to_rgb(p) for p in zoom_frames(store, plan, camera, s, 36, fade=12)]
    assert max(mad(a, b) for a, b in zip(by_av, rendered, strict=True)) < 6
    blocks = gif_blocks(out.read_bytes())
    assert len(blocks) == 36
    palettes = {block["local"] for block in blocks if block["local"]}
    assert 1 + len(palettes) <= 6  # scenes, not frames
    assert not blocks[0]["transparent"] and blocks[0]["box"] == (0, 0, w, h)
    assert all(block["transparent"] for block in blocks[1:])
    before = len(per_frame_palette_gif(rendered, fps))
    assert out.stat().st_size < 0.75 * before


def test_gif_encoder_stores_only_the_changed_rectangle(tmp_path):
    """Frame differencing on synthetic frames: a still frame costs one transparent pixel, a
    moving square only the rectangle it touched, and a new colour (pure red, which the first
    frame's palette lacks) starts a new scene with a palette that has it."""
    ramp = np.linspace(0, 255, 96).astype(np.uint8)
    background = np.zeros((64, 96, 3), np.uint8)
    background[..., 0], background[..., 1], background[..., 2] = ramp, 128, ramp[::-1]
    moved = background.copy()
    moved[10:20, 30:44] = (255, 0, 0)
    path = tmp_path / "x.gif"
    with path.open("wb") as handle:
        gif = GifEncoder(handle, 96, 64, 10)
        for frame in (background, background, moved):
            gif.write(frame)
        gif.close()
    blocks = gif_blocks(path.read_bytes())
    assert [block["box"] for block in blocks] == [(0, 0, 96, 64), (0, 0, 1, 1), (30, 10, 14, 10)]
    assert gif.scenes == 2 and blocks[2]["local"] and not blocks[1]["local"]
    with Image.open(path) as image:
        durations = [frame.info.get("duration") for frame in ImageSequence.Iterator(image)]
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    assert durations == [100, 100, 100]
    np.testing.assert_array_equal(frames[1], frames[0])
    assert (frames[2][10:20, 30:44] == (255, 0, 0)).all()
    assert np.abs(frames[2].astype(int) - moved).max() <= 8


def test_ctrl_c_on_the_command_line_is_one_line_and_status_130(mosaic, tmp_path, monkeypatch):
    out = tmp_path / "x.mp4"
    write = VideoWriter.write
    calls: list[int] = []

    def interrupted(self, planes):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write(self, planes)

    monkeypatch.setattr(VideoWriter, "write", interrupted)
    result = CliRunner().invoke(cli, ["video", str(mosaic), "--out", str(out), "--size",
                                      f"{W}x{H}", "--fps", "8", "--seconds", "2"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == (
        "interrupted: no video written; run the same command again")
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


@pytest.mark.slow
def test_sigint_to_the_command_prints_one_line(mosaic, tmp_path):
    """A real Ctrl-C (SIGINT to the process group) mid-render: status 130, one line on stderr,
    no traceback from any thread, no partial file."""
    out = tmp_path / "x.mp4"
    command = [sys.executable, "-m", "hypermosaic", "video", str(mosaic), "--out", str(out),
               "--size", "256x144", "--fps", "30", "--seconds", "600"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".x.mp4.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (  # after the progress bar
        "interrupted: no video written; run the same command again")
    assert "Traceback" not in stderr and "Exception" not in stderr
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


def test_a_folder_in_use_or_unwritable_is_refused_before_rendering(mosaic, tmp_path,
                                                                   monkeypatch):
    """One run writes an output folder at a time; a folder that cannot be made is refused with
    one line naming --out. Both before a single frame is rendered."""
    rendered: list[int] = []
    render = FrameRenderer.render
    monkeypatch.setattr(FrameRenderer, "render",
                        lambda self, view: rendered.append(1) or render(self, view))
    out = tmp_path / "videos" / "x.mp4"
    with folder_lock(out.parent), pytest.raises(
        InputError, match=r"videos: in use by another hypermosaic run \(pid \d+\)"
    ):
        render_video(mosaic, out, settings=settings())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=r"^--out .*file: an existing file, not a folder$"):
        render_video(mosaic, blocker / "x.mp4", settings=settings())
    assert rendered == [] and not out.exists()
    result = CliRunner().invoke(cli, ["video", str(mosaic), "--out", str(blocker / "x.mp4")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    # and a folder that does not exist yet is made
    assert render_video(mosaic, tmp_path / "new" / "x.mp4", settings=settings(seconds=1)).frames


def test_a_full_disk_while_encoding_is_one_line(mosaic, tmp_path, monkeypatch):
    out = tmp_path / "x.mp4"
    out.write_bytes(b"the previous video")
    write = VideoWriter.write
    calls: list[int] = []

    def full(self, planes):
        calls.append(1)
        if len(calls) == 3:
            raise av.error.OSError(errno.ENOSPC, "No space left on device")
        write(self, planes)

    monkeypatch.setattr(VideoWriter, "write", full)
    result = CliRunner().invoke(cli, ["video", str(mosaic), "--out", str(out), "--size",
                                      f"{W}x{H}", "--fps", "8", "--seconds", "1"])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]  # after the progress bar
    assert line.startswith(f"Error: {tmp_path}: the disk is full (")
    assert "Traceback" not in result.output
    assert out.read_bytes() == b"the previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "x.mp4"]
    calls.clear()

    def broken(self, planes):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(VideoWriter, "write", broken)
    with pytest.raises(OSError, match="Input/output error"):  # not a full disk: as it was
        render_video(mosaic, out, settings=settings())


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_workers_change_the_speed_not_the_bytes(mosaic, tmp_path, suffix):
    """``--workers`` is the number of threads decoding node images: 1, 2 and 3 write the same
    file, byte for byte."""
    outs = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}{suffix}"
        result = CliRunner().invoke(cli, [
            "video", str(mosaic), "--out", str(out), "--size", "160x90", "--fps", "8",
            "--seconds", "2", "--workers", str(workers)])
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    bad = CliRunner().invoke(cli, ["video", str(mosaic), "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output
