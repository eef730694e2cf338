"""Infinite-zoom videos of a build: the camera falls from the whole mosaic into one node.

The camera follows a path of nodes (the build's ``focus``, a chosen one, or the central one) from
the whole canvas down to the deepest node on it, or as deep as asked
(`hypermosaic.video.target`), along an exponential zoom whose last view frames the target
exactly as the first framed the canvas (`hypermosaic.video.camera`).
That makes the video loop: before the camera stops (where the target's pixels reach the
frame's, `hypermosaic.video.camera.ZoomPath.end`) the whole canvas, drawn in miniature exactly
where the target node sits, cross-fades in (a matched cross-fade) and the miniature zooms on
alone, so the last frame is the whole canvas fitted in the frame and the first one is one
ordinary zoom step further in (`zoom_frames`).

Frames are rendered one at a time (`hypermosaic.video.frames.FrameRenderer`, a pure function of
the view) and encoded straight away through PyAV (`hypermosaic.video.encode.VideoWriter`) while
the next one is rendered on a second thread (`ahead`); no list of frames is ever held.
`render_video` is the entry point, taking the options of ``hypermosaic video``: with the build's
config it first makes the nodes the frames draw and the store lacks (`hypermosaic.video.deeper`),
it holds the output folders' locks while it writes (`output_locks`), and turns Ctrl-C and a full
disk into one-line errors.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from hypermosaic.errors import InputError, Interrupted
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.store import Store, disk_full, folder_lock
from hypermosaic.tree import Address, Plan
from hypermosaic.video.camera import ZoomPath, frame_views, sharp_end, zoom_path
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
from hypermosaic.video.target import choose_path, open_build, video_plan

if TYPE_CHECKING:
    from hypermosaic.build import BuildConfig
    from hypermosaic.video.deeper import NodeSource

__all__ = ["AHEAD", "VideoResult", "ahead", "output_locks", "render_video", "zoom_frames"]

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
    nodes_made: int = 0
    """Nodes made for the video (with a config) before it was rendered."""


# --- the frames -------------------------------------------------------------------------------


def zoom_frames(
    store: Store, plan: Plan, path: ZoomPath, settings: VideoSettings, frames: int, fade: int,
    threads: int = DECODE_THREADS,
) -> Iterator[Planes]:
    """The frames of the video, made one at a time (nodes decoded on ``threads`` threads) from
    the views `hypermosaic.video.camera.frame_views` gives.

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
    for views in frame_views(path, settings, frames, fade):
        if views.weight >= 1.0:
            yield miniature.render(views.miniature)
            continue
        planes = camera.render(views.camera)
        if views.weight > 0:
            planes = Planes(*(np.array(plane) for plane in planes))
            blend_planes(planes, miniature.render(views.miniature),
                         (0, 0, width, height), views.weight)
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


@contextmanager
def output_locks(build_dir: Path | None, out_dir: Path) -> Iterator[None]:
    """Hold the lock of the video's folder and, while nodes are made into it, the build's
    folder (``build_dir``), each once. Raises InputError naming --out or OUT_DIR for a folder
    another run holds or that cannot be written."""
    with ExitStack() as locks:
        if build_dir is not None:
            locks.enter_context(folder_lock(build_dir, "OUT_DIR"))
        if build_dir is None or out_dir.resolve() != build_dir.resolve():
            locks.enter_context(folder_lock(out_dir, "--out"))
        yield


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
    depth: int | None = None,
    ease: float = 0.0,
    fade: float = 1.0,
    loop: bool = True,
    drift: bool = True,
    config: BuildConfig | str | Path | None = None,
    workers: int | None = None,
    scheduler_address: str | None = None,
    progress: ProgressCallback | None = None,
    settings: VideoSettings | None = None,
) -> VideoResult:
    """Render the zoom video of a build into ``out`` (.mp4, .webm, .mkv, .mov or .gif).

    The keyword options are those of ``hypermosaic video`` (`settings_from_options` fills the
    defaults: ``zoom.mp4``, or ``zoom.gif`` with ``gif``, in the build; 1920x1080 at 30 fps, a
    480x270, 15 fps GIF; vp9 for a ``.webm``, else h264); a prebuilt ``settings`` replaces them
    all. With the build's ``config`` (a TOML file or a `hypermosaic.build.BuildConfig`; its
    ``out`` becomes ``build_dir``) the zoom may go deeper than the build (``depth``, or a longer
    ``path``): the nodes the frames draw and the store lacks are made first, on ``workers``
    local processes or the cluster at ``scheduler_address`` (`hypermosaic.video.deeper`).
    ``workers`` is also the number of threads decoding node images (default
    `hypermosaic.video.frames.DECODE_THREADS`); like the config and the scheduler it changes
    the speed, never the bytes, so they may go with ``settings``. ``progress`` receives
    `hypermosaic.progress.Progress` events in ``nodes`` (when made) and ``frames``. One run
    writes a folder at a time: the output folder's lock is held while the video is written,
    and the build folder's while nodes are made into it.

    Raises InputError for bad options or config, a build that is missing, incomplete or too
    shallow for the path without a config, a config other than the build's, an output folder
    that cannot be made or written or is in use by another run (all before any rendering), or
    a disk that fills up; BuildError for nodes that failed; `Interrupted` on Ctrl-C (the nodes
    made are kept). An interrupted or failed render leaves no partial file and whatever the
    output held before. Raises TypeError when both ``settings`` and options are given.
    """
    with _ctrl_c_interrupts():
        # 1. settings, build, path
        _refuse_both(settings, {
            "size": size, "fps": fps, "seconds": seconds, "seconds_per_level": seconds_per_level,
            "codec": codec, "crf": crf, "preset": preset, "gif": gif, "path": path,
            "depth": depth, "ease": ease, "fade": fade, "loop": loop, "drift": drift,
        })
        check_workers(workers)
        threads = DECODE_THREADS if workers is None else workers
        as_gif = gif if settings is None else settings.codec == "gif"
        out_file = Path(out) if out is not None else default_out(Path(build_dir), as_gif)
        if settings is None:
            settings = settings_from_options(
                out_file, size=size, fps=fps, seconds=seconds, seconds_per_level=seconds_per_level,
                codec=codec, crf=crf, preset=preset, gif=gif, path=path, depth=depth, ease=ease,
                fade=fade, loop=loop, drift=drift,
            )
        if out_file.suffix.lower() == ".gif" and settings.codec != "gif":
            settings = replace(settings, codec="gif")
        check_inputs(settings, out_file)
        if config is None and scheduler_address is not None:
            raise InputError("--scheduler-address needs --config: the pool only makes the "
                             "nodes the build lacks, from its config")
        source: NodeSource | None = None
        if config is not None:
            from hypermosaic.video.deeper import open_source  # Dask and the build: only here

            source = open_source(config, Path(build_dir), workers, scheduler_address)
        build_config = None if source is None else source.config
        store, plan = open_build(Path(build_dir), build_config)
        plan = video_plan(plan, settings, build_config, store.root)
        target = choose_path(store, plan, settings.path, settings.depth,
                             stored=build_config is None)
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
        # 3. one run per output folder: the nodes the frames draw and the store lacks made
        # first (with a config), then render and encode one frame at a time
        made = 0
        with output_locks(None if source is None else store.root, out_file.parent):
            if source is not None:
                made = source.make_missing(store, plan, camera, settings, frames, fade_frames,
                                           progress)
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
            height=settings.height, codec=settings.codec, target=target, nodes_made=made,
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
