"""Infinite-zoom videos of a build: the camera falls from the whole mosaic into one node.

The camera follows a path of nodes (the build's ``focus``, a chosen one, or the central one) from
the whole canvas down to the deepest node on it (`choose_path`), along an exponential zoom whose
last view frames the target exactly as the first framed the canvas (`hypermosaic.video.camera`).
That makes the video loop: before the camera stops (where the target's pixels reach the
frame's, `hypermosaic.video.camera.ZoomPath.end`) the whole canvas, drawn in miniature exactly
where the target node sits, cross-fades in (a matched cross-fade) and the miniature zooms on
alone, so the last frame is the whole canvas fitted in the frame and the first one is one
ordinary zoom step further in (`zoom_frames`).

Frames are rendered one at a time (`hypermosaic.video.frames.FrameRenderer`, a pure function of
the view) and encoded straight away through PyAV (`hypermosaic.video.encode.VideoWriter`) while
the next one is rendered on a second thread (`ahead`); no list of frames is ever held.
`render_video` is the entry point, taking the options of ``hypermosaic video``: it holds the
output folder's lock while it writes (`hypermosaic.store.folder_lock`), and turns Ctrl-C and a
full disk into one-line errors.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from hypermosaic.errors import InputError, Interrupted
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.store import Store, disk_full, folder_lock
from hypermosaic.tree import Address, Plan, address_key, parse_address
from hypermosaic.video.camera import ZoomPath, progress_at, sharp_end, smoothstep, zoom_path
from hypermosaic.video.encode import VideoWriter
from hypermosaic.video.frames import DECODE_THREADS, FrameRenderer
from hypermosaic.video.planes import Planes, blend_planes
from hypermosaic.video.settings import (
    VideoSettings,
    check_inputs,
    check_workers,
    default_out,
    frame_count,
    settings_from_options,
)

__all__ = [
    "AHEAD",
    "VideoResult",
    "ahead",
    "choose_path",
    "open_build",
    "render_video",
    "zoom_frames",
]

AHEAD = 2
"""Frames rendered ahead of the encoder, on a second thread."""

T = TypeVar("T")


@dataclass(frozen=True)
class VideoResult:
    """What `render_video` wrote."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    codec: str
    target: Address


# --- the build and the path -------------------------------------------------------------------


def open_build(build_dir: Path) -> tuple[Store, Plan]:
    """Open a finished build. Raises InputError if it is missing, unreadable or incomplete."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise InputError(f"{build_dir}: no such build directory")
    store = Store.open(build_dir)
    manifest = store.load_manifest() or {}
    if manifest.get("complete") is not True:
        raise InputError(
            f"{build_dir}: the build is incomplete (still running or interrupted); "
            "run `hypermosaic build` again to finish it"
        )
    return store, store.plan()


def _central(plan: Plan, depth: int) -> tuple[int, int]:
    grid = plan.grids[depth]
    return grid // 2, grid // 2


def choose_path(store: Store, plan: Plan, path: str | None) -> Address:
    """The node the camera zooms into: ``path``, else the build's focus, else the central path.

    A path shorter than the build is continued through central tiles while those nodes are
    stored. Raises InputError for a path outside the grids or through nodes the build lacks.
    """
    if plan.depth == 0:
        raise InputError(f"{store.root}: the build has depth 0; there is nothing to zoom into")
    if path is not None:
        try:
            target = plan.validate_address(parse_address(path))
        except ValueError as exc:
            raise InputError(f"--path {path}: {exc}") from None
    elif plan.focus is not None:
        target = tuple(plan.focus[: plan.depth])
    else:
        target = ()
    for depth in range(len(target) + 1):
        if not store.has(target[:depth]):
            deepest = store.deepest_available(target)
            raise InputError(
                f"{store.root}: the build is too shallow for path {address_key(target)}: "
                f"node {address_key(target[:depth])} is missing "
                f"(deepest stored: {address_key(deepest)})"
            )
    while len(target) < plan.depth:
        child = target + (_central(plan, len(target)),)
        if not store.has(child):
            break
        target = child
    if not target:
        raise InputError(f"{store.root}: no node below the primary image is stored")
    return target


# --- the frames -------------------------------------------------------------------------------


def zoom_frames(
    store: Store, plan: Plan, path: ZoomPath, settings: VideoSettings, frames: int, fade: int,
    threads: int = DECODE_THREADS,
) -> Iterator[Planes]:
    """The frames of the video, made one at a time (nodes decoded on ``threads`` threads).

    Without the loop the camera goes from the canvas to the target. Looping, the camera's last
    frame is the last one at or before ``path.end`` (its sharp stop); over the ``fade`` frames
    up to it the view one whole descent up (the canvas in miniature, exactly where the target
    node sits, with background around it) is cross-faded in, its weight rising smoothly to 1,
    and from there on the miniature alone goes on zooming in, the next descent's start, up to
    the last frame, which is the whole canvas fitted in the frame: the frame after it, the
    first, is one ordinary zoom step further in. The miniature has its own renderer (its own
    regions, so neither evicts the other's) sharing the camera's node cache: at most four
    regions and one byte-capped cache are held, and a node is decoded once for both.
    """
    width, height = settings.width, settings.height
    camera = FrameRenderer(store, plan, width, height, threads=threads)
    miniature = FrameRenderer(store, plan, width, height, nodes=camera.nodes)
    progress = [progress_at(t, frames, settings) for t in range(frames)]
    # the camera's last frame: from it on the miniature is shown alone (fade frames end there)
    last = max(t for t, u in enumerate(progress) if u <= path.end + 1e-12)
    fade = min(fade, last)  # the first frame is the camera's alone
    for t, u in enumerate(progress):
        weight = 0.0
        if settings.loop and t >= last:
            weight = 1.0
        elif settings.loop and fade > 0:
            weight = smoothstep((t - last + fade) / fade)
        if weight >= 1.0:
            yield miniature.render(path.view(u - 1))
            continue
        planes = camera.render(path.view(u))
        if weight > 0:
            planes = Planes(*(np.array(plane) for plane in planes))
            blend_planes(planes, miniature.render(path.view(u - 1)),
                         (0, 0, width, height), weight)
        yield planes


class _Done:
    """The producer of `ahead` has no more items."""


@dataclass(frozen=True)
class _Failed:
    """The producer of `ahead` raised ``error``."""

    error: BaseException


def ahead(items: Iterator[T], count: int) -> Generator[T, None, None]:
    """Yield from ``items`` while a thread already makes the next ``count`` of them, so that
    rendering a frame overlaps encoding the previous one (both release the GIL). Errors in the
    thread are raised here; closing the generator stops the thread."""
    slots: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=count)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
            slots.put(_Done())
        except BaseException as exc:  # handed to the consumer, which raises it
            slots.put(_Failed(exc))

    worker = threading.Thread(target=produce, name="hypermosaic-render", daemon=True)
    worker.start()
    try:
        while True:
            message = slots.get()
            if isinstance(message, _Done):
                return
            if isinstance(message, _Failed):
                raise message.error
            yield message
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


# --- the video --------------------------------------------------------------------------------


@contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """Turn Ctrl-C into `Interrupted` (one line, exit status 130, from the command line);
    the writer has removed its partial file by then."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("no video written; run the same command again") from None


def _refuse_both(settings: VideoSettings | None, options: dict[str, object]) -> None:
    """Refuse options beside ``settings``, which would silently override them. Raises TypeError."""
    defaults = {"gif": False, "ease": 0.0, "fade": 1.0, "loop": True, "drift": True}
    given = [name for name, value in options.items() if value != defaults.get(name)]
    if settings is not None and given:
        raise TypeError(
            f"render_video: give settings or the options ({', '.join(given)}), not both"
        )


def render_video(
    build_dir: str | Path,
    out: str | Path | None = None,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    seconds: float | None = None,
    seconds_per_level: float | None = None,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    gif: bool = False,
    path: str | None = None,
    ease: float = 0.0,
    fade: float = 1.0,
    loop: bool = True,
    drift: bool = True,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    settings: VideoSettings | None = None,
) -> VideoResult:
    """Render the zoom video of a build into ``out`` (.mp4, .webm, .mkv, .mov or .gif).

    The keyword options are those of ``hypermosaic video`` (`settings_from_options` fills the
    defaults: ``zoom.mp4``, or ``zoom.gif`` with ``gif``, in the build; 1920x1080 at 30 fps, a
    480x270, 15 fps GIF; vp9 for a ``.webm``, else h264); a prebuilt ``settings`` replaces them
    all. ``workers`` is the number of threads decoding node images (default
    `hypermosaic.video.frames.DECODE_THREADS`); it changes the speed, never the bytes, so it
    may go with ``settings``. ``progress`` receives `hypermosaic.progress.Progress` events in
    ``frames``. One run writes a folder at a time: the output folder's lock is held while the
    video is written.

    Raises InputError for bad options, a build that is missing, incomplete or too shallow for
    the path, an output folder that cannot be made or written or is in use by another run (all
    before any rendering), or a disk that fills up while encoding; `Interrupted` on Ctrl-C. An
    interrupted or failed render leaves no partial file and whatever the output held before.
    Raises TypeError when both ``settings`` and options are given.
    """
    with _ctrl_c_interrupts():
        # 1. settings, build, path
        _refuse_both(settings, {
            "size": size, "fps": fps, "seconds": seconds, "seconds_per_level": seconds_per_level,
            "codec": codec, "crf": crf, "preset": preset, "gif": gif, "path": path, "ease": ease,
            "fade": fade, "loop": loop, "drift": drift,
        })
        check_workers(workers)
        threads = DECODE_THREADS if workers is None else workers
        as_gif = gif if settings is None else settings.codec == "gif"
        out_file = Path(out) if out is not None else default_out(Path(build_dir), as_gif)
        if settings is None:
            settings = settings_from_options(
                out_file, size=size, fps=fps, seconds=seconds, seconds_per_level=seconds_per_level,
                codec=codec, crf=crf, preset=preset, gif=gif, path=path, ease=ease, fade=fade,
                loop=loop, drift=drift,
            )
        if out_file.suffix.lower() == ".gif" and settings.codec != "gif":
            settings = replace(settings, codec="gif")
        check_inputs(settings, out_file)
        store, plan = open_build(Path(build_dir))
        target = choose_path(store, plan, settings.path)
        # 2. camera and timing
        if sharp_end(plan, len(target), settings.width, settings.height) <= 0:
            whole = plan.size * plan.canvas_size // plan.span(len(target))
            raise InputError(
                f"--size {settings.width}x{settings.height}: the whole mosaic is {whole} pixels "
                f"across at the resolution of its depth-{len(target)} nodes, no more than the "
                "frame's short side, so no frame of the zoom would be sharp; choose a smaller "
                "--size"
            )
        camera = zoom_path(plan, target, settings.width, settings.height,
                           drift=settings.drift, loop=settings.loop)
        frames = frame_count(settings, len(target))
        fade_frames = min(frames // 2, round(settings.fade * settings.fps)) if settings.loop else 0
        # 3. one run per output folder; render and encode one frame at a time
        with folder_lock(out_file.parent, "--out"):
            try:
                _encode(out_file, settings, zoom_frames(
                    store, plan, camera, settings, frames, fade_frames, threads=threads,
                ), frames, progress)
            except OSError as exc:
                full = disk_full(exc, out_file.parent)
                if full is None:
                    raise
                raise full from None
        return VideoResult(
            path=out_file, frames=frames, fps=settings.fps, width=settings.width,
            height=settings.height, codec=settings.codec, target=target,
        )


def _encode(
    out_file: Path, settings: VideoSettings, frames: Iterator[Planes], total: int,
    progress: ProgressCallback | None,
) -> None:
    """Encode ``frames`` into ``out_file`` as they are made, the next ones rendered ahead on a
    second thread; the file appears only when complete."""
    with VideoWriter(
        out_file, settings.codec, settings.width, settings.height, settings.fps,
        crf=settings.crf, preset=settings.preset,
    ) as writer:
        rendered = ahead(frames, AHEAD)
        try:
            for index, planes in enumerate(rendered):
                writer.write(planes)
                report(progress, "frames", index + 1, total)
        finally:
            rendered.close()  # stops the render thread now, not when the generator is collected
        writer.close()
