"""Infinite-zoom videos of a build: the camera falls from the whole mosaic into one node.

The camera follows a path of nodes (the build's ``focus``, a chosen one, or the central one) from
the whole canvas down to the deepest node on it. The zoom is exponential: every frame is the
previous one scaled by the same factor about one fixed point, so the speed looks constant, and the
fixed point is chosen so that the last view frames the target node exactly as the first view
framed the canvas (``drift``). That makes the video loop: over its last frames the whole canvas,
drawn in miniature exactly where the target node sits, cross-fades in (a matched cross-fade),
so the last frame is the whole canvas and the first one is one ordinary zoom step further in.

Frames are rendered one at a time from the node images at the resolution they need
(`FrameRenderer`, a pure function of the view) and encoded straight away through PyAV while the
next one is rendered; no list of frames is ever held.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from hypermosaic.errors import InputError
from hypermosaic.store import Store
from hypermosaic.tree import Address, Plan, address_key, parse_address

__all__ = [
    "Box",
    "Planes",
    "VideoSettings",
    "VideoResult",
    "ZoomPath",
    "FrameRenderer",
    "VideoWriter",
    "CODECS",
    "check_inputs",
    "open_build",
    "choose_path",
    "zoom_path",
    "ease",
    "frame_count",
    "level_for",
    "ladder_side",
    "mip_for",
    "canvas_rect",
    "rgb_to_planes",
    "planes_to_rgb",
    "smoothstep",
    "progress_at",
    "zoom_frames",
    "ahead",
    "render_video",
]

OVERSAMPLE = 2**0.5
"""Regions are assembled at 1x to this many times the frame's resolution, then resampled."""
MARGIN = 0.02
"""Extra canvas around a view (fraction of its size) assembled so the next frames reuse it."""
BLEND = 0.2
"""Fraction of a level (in zoom) over which the next depth fades in before it takes over."""
NODE_CACHE_BYTES = 192 << 20
DECODE_THREADS = 2
AHEAD = 2
"""Frames rendered ahead of the encoder, on a second thread."""
SECONDS_PER_LEVEL = 4.0
COLORSPACE = "itu709"
COLOR_RANGE = "MPEG"
BT709 = 1
"""The H.273 code of BT.709 (matrix, primaries, transfer) tagged on the encoded stream."""


class Box(NamedTuple):
    """A view of the canvas: ``(left, top, right, bottom)`` in canvas pixels (floats)."""

    left: float
    top: float
    right: float
    bottom: float


class Planes(NamedTuple):
    """A frame (or part of one) as 8-bit YUV 4:2:0 planes: ``y`` is HxW, ``u`` and ``v`` H/2xW/2."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


@dataclass(frozen=True)
class Codec:
    """An encoder PyAV can drive, the containers it may go in, and its quality range."""

    encoder: str
    suffixes: tuple[str, ...]
    crf_range: tuple[int, int]
    default_crf: int
    options: tuple[tuple[str, str], ...]
    presets: tuple[str, ...]
    default_preset: str


CODECS: dict[str, Codec] = {
    "h264": Codec(
        "libx264", (".mp4", ".mkv", ".mov"), (0, 51), 23, (),
        ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
         "veryslow"),
        "superfast",
    ),
    "vp9": Codec(
        "libvpx-vp9", (".webm", ".mkv", ".mp4"), (0, 63), 33,
        (("b", "0"), ("row-mt", "1"), ("deadline", "good")),
        tuple(str(n) for n in range(9)), "5",
    ),
    "av1": Codec(
        "libsvtav1", (".webm", ".mkv", ".mp4"), (1, 63), 35, (),
        tuple(str(n) for n in range(14)), "10",
    ),
    "gif": Codec("gif", (".gif",), (0, 0), 0, (), ("default",), "default"),
}
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}


@dataclass(frozen=True)
class VideoSettings:
    """What to render. ``seconds`` or ``seconds_per_level`` (not both; default
    `SECONDS_PER_LEVEL`) sets the length.

    ``path`` is a node address key (``3_4/1_2``); None takes the build's focus or the central
    path. ``ease`` is the fraction of the time spent accelerating at the start and decelerating
    at the end (0: constant speed). ``fade`` is the length of the loop cross-fade in seconds.
    ``drift=False`` needs ``loop=False`` (see `zoom_path`).
    """

    width: int = 1920
    height: int = 1080
    fps: float = 30.0
    seconds: float | None = None
    seconds_per_level: float | None = None
    codec: str = "h264"
    crf: int | None = None
    preset: str | None = None
    path: str | None = None
    ease: float = 0.0
    drift: bool = True
    loop: bool = True
    fade: float = 1.0


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


# --- settings ---------------------------------------------------------------------------------


def check_inputs(settings: VideoSettings, out_file: Path) -> None:
    """Reject bad settings before any work; the message names the option and its value."""
    if settings.width <= 0 or settings.height <= 0 or settings.width % 2 or settings.height % 2:
        raise InputError(
            f"--size {settings.width}x{settings.height}: width and height must be even and positive"
        )
    if max(settings.width, settings.height) > 8192:
        raise InputError(f"--size {settings.width}x{settings.height}: at most 8192 pixels a side")
    if not 0 < settings.fps <= 240:
        raise InputError(f"--fps {settings.fps}: must be in (0, 240]")
    if settings.seconds is not None and settings.seconds_per_level is not None:
        raise InputError("give --seconds or --seconds-per-level, not both")
    for name, length in (("--seconds", settings.seconds),
                         ("--seconds-per-level", settings.seconds_per_level)):
        if length is not None and not 0 < length <= 3600:
            raise InputError(f"{name} {length}: must be in (0, 3600]")
    codec = CODECS.get(settings.codec)
    if codec is None:
        raise InputError(f"--codec {settings.codec}: choose one of h264, vp9, av1 (or --gif)")
    suffix = out_file.suffix.lower()
    if suffix not in codec.suffixes:
        raise InputError(
            f"--out {out_file}: a {settings.codec} video needs a file ending in "
            + ", ".join(codec.suffixes)
        )
    low, high = codec.crf_range
    if settings.crf is not None and settings.codec == "gif":
        raise InputError("--crf does not apply to a GIF")
    if settings.crf is not None and not low <= settings.crf <= high:
        raise InputError(f"--crf {settings.crf}: {settings.codec} takes {low} to {high}")
    if settings.preset is not None and settings.preset not in codec.presets:
        raise InputError(
            f"--preset {settings.preset}: {settings.codec} takes " + ", ".join(codec.presets)
        )
    if not 0 <= settings.ease <= 0.5:
        raise InputError(f"--ease {settings.ease}: must be in [0, 0.5]")
    if not 0 <= settings.fade <= 3600:
        raise InputError(f"--fade {settings.fade}: must be in [0, 3600]")
    if settings.loop and not settings.drift:
        raise InputError(
            "--no-drift needs --no-loop: only the drifting zoom ends framing the target as it "
            "began framing the canvas, which is what lets the video loop"
        )
    if settings.path is not None:
        try:
            parse_address(settings.path)
        except ValueError as exc:
            raise InputError(f"--path {settings.path}: {exc}") from None


def frame_count(settings: VideoSettings, levels: int) -> int:
    """Frames in the video: ``seconds`` x fps, or seconds per level x levels x fps (at least 2)."""
    seconds = settings.seconds
    if seconds is None:
        seconds = (settings.seconds_per_level or SECONDS_PER_LEVEL) * levels
    return max(2, round(seconds * settings.fps))


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


# --- the camera -------------------------------------------------------------------------------


def _cover(x: float, y: float, side: float, width: int, height: int) -> Box:
    """The view of a ``side``-square at ``(x, y)`` that fills a width x height frame (centred)."""
    if width >= height:
        w, h = side, side * height / width
    else:
        w, h = side * width / height, side
    cx, cy = x + side / 2, y + side / 2
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@dataclass(frozen=True)
class ZoomPath:
    """An exponential zoom: the view at progress ``u`` is ``start`` scaled by ``ratio**u`` about
    ``fixed``. ``u = 0`` frames the canvas, ``u = 1`` the target; ``u - 1`` is the same view
    mapped back up one whole descent (the canvas in miniature inside the target)."""

    start: Box
    fixed: tuple[float, float]
    ratio: float

    def box(self, u: float) -> Box:
        # view(u) = f + s (view(0) - f),  s = ratio ** u
        s = self.ratio**u
        fx, fy = self.fixed
        left, top, right, bottom = self.start
        return Box(fx + s * (left - fx), fy + s * (top - fy),
                   fx + s * (right - fx), fy + s * (bottom - fy))


def zoom_path(plan: Plan, target: Address, width: int, height: int, drift: bool = True) -> ZoomPath:
    """The zoom from the whole canvas into ``target`` for a width x height frame.

    With ``drift`` the fixed point is where the similarity taking the canvas view to the target
    view leaves a point in place, so the target ends centred exactly as the canvas started;
    without it the camera zooms straight at the target's centre, which stays where it was in
    the frame: the end then frames the target off-centre, not as the start framed the canvas,
    so such a zoom cannot loop (`check_inputs` refuses it with the loop on).
    """
    canvas = plan.canvas_size
    start = _cover(0, 0, canvas, width, height)
    ox, oy = plan.origin(target)
    side = plan.span(len(target))
    k = side / canvas
    if drift:
        end = _cover(ox, oy, side, width, height)
        # f = (c1 - k c0) / (1 - k), the centres c0, c1 of the start and end views
        c0 = ((start.left + start.right) / 2, (start.top + start.bottom) / 2)
        c1 = ((end.left + end.right) / 2, (end.top + end.bottom) / 2)
        fixed = ((c1[0] - k * c0[0]) / (1 - k), (c1[1] - k * c0[1]) / (1 - k))
    else:
        fixed = (ox + side / 2, oy + side / 2)
    return ZoomPath(start=start, fixed=fixed, ratio=k)


def ease(tau: float, ramp: float) -> float:
    """Zoom progress in [0, 1] at time fraction ``tau``: constant speed, except the first and last
    ``ramp`` of the time, which accelerate from rest and decelerate to rest (trapezoidal speed)."""
    if ramp <= 0:
        return tau
    top = 1 / (1 - ramp)
    if tau < ramp:
        return top * tau * tau / (2 * ramp)
    if tau > 1 - ramp:
        return 1 - top * (1 - tau) ** 2 / (2 * ramp)
    return top * (tau - ramp / 2)


def canvas_rect(
    view: Box, canvas: int, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The even-aligned pixel rectangle ``(x0, y0, x1, y1)`` of a frame showing ``view`` where the
    canvas lies, or None if it covers no pixel."""
    sx = width / (view.right - view.left)
    sy = height / (view.bottom - view.top)

    def even(value: float, limit: int) -> int:
        return min(limit, max(0, 2 * round(value / 2)))

    x0, x1 = even(-view.left * sx, width), even((canvas - view.left) * sx, width)
    y0, y1 = even(-view.top * sy, height), even((canvas - view.top) * sy, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


# --- colour -----------------------------------------------------------------------------------


def rgb_to_planes(image: Image.Image) -> Planes:
    """BT.709 limited-range YUV 4:2:0 planes of an RGB image with even sides."""
    frame = av.VideoFrame.from_image(image).reformat(
        format="yuv420p", dst_colorspace=COLORSPACE, dst_color_range=COLOR_RANGE
    )
    return _split(frame.to_ndarray(), image.width, image.height)


def _split(packed: np.ndarray, width: int, height: int) -> Planes:
    flat = packed.reshape(-1)
    quarter = width * height // 4
    chroma = (height // 2, width // 2)
    y = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height + quarter].reshape(chroma)
    v = flat[width * height + quarter :].reshape(chroma)
    return Planes(y, u, v)


def _pack(planes: Planes) -> av.VideoFrame:
    height, width = planes.y.shape
    packed = np.concatenate([p.reshape(-1) for p in planes]).reshape(height * 3 // 2, width)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")


def planes_to_rgb(planes: Planes) -> np.ndarray:
    """The HxWx3 RGB image of a frame (inverse of `rgb_to_planes`, up to rounding)."""
    return _pack(planes).reformat(
        format="rgb24", src_colorspace=COLORSPACE, src_color_range=COLOR_RANGE
    ).to_ndarray()


# --- rendering --------------------------------------------------------------------------------


def level_for(plan: Plan, pixel: float) -> int:
    """The shallowest depth whose node images are at least as sharp as ``pixel`` canvas pixels
    per frame pixel; the deepest depth if none is (then no sharper node exists)."""
    for depth in range(plan.depth + 1):
        if plan.span(depth) / plan.size <= pixel * (1 + 1e-9):
            return depth
    return plan.depth


def _address_at(plan: Plan, depth: int, row: int, col: int) -> Address:
    """The address of the depth-``depth`` node in global grid cell ``(row, col)``."""
    steps = []
    for level in range(depth):
        below = math.prod(plan.grids[level + 1 : depth])
        grid = plan.grids[level]
        steps.append(((row // below) % grid, (col // below) % grid))
    return tuple(steps)


def mip_for(size: int, side: int) -> int:
    """The node resolution a tile of ``side`` pixels is made from: the smallest halving of
    ``size`` still at least `OVERSAMPLE` x ``side`` (so it also serves the next, sharper region),
    or ``size``. A function of ``side`` alone, so frames do not depend on what came before."""
    mip = size
    while mip % 2 == 0 and mip // 2 >= side * OVERSAMPLE:
        mip //= 2
    return mip


def ladder_side(size: int, span: int, pixel: float) -> int:
    """The side at which a region's nodes are pasted for ``pixel`` canvas pixels per frame
    pixel: the smallest rung of ``size / 2**(j/2)`` (rounded up to even) at least as sharp as
    the frame, or ``size``. Rungs, not the exact need, so a view always gets the same region."""
    need = span / pixel
    side, j = size, 1
    while True:
        rung = math.ceil(size / 2 ** (j / 2))
        rung += rung % 2
        if rung < need or rung >= side:
            return side
        side, j = rung, j + 1


class _NodeCache:
    """Decoded node images at the mip levels asked for (`mip_for`), least recently used dropped
    beyond ``limit`` bytes.

    When a depth first comes into view its nodes are shown small and many at once; keeping them
    reduced lets the following regions reuse them without decoding again, in bounded memory.
    """

    def __init__(self, store: Store, size: int, limit: int) -> None:
        self.store, self.size, self.limit = store, size, limit
        self._images: OrderedDict[tuple[Address, int], Image.Image] = OrderedDict()
        self._bytes = 0

    def get_many(self, addresses: list[Address], mip: int) -> list[Image.Image]:
        """The nodes at ``mip`` pixels; those not cached are decoded on a few threads."""
        found: dict[Address, Image.Image] = {}
        missing = []
        for address in addresses:
            image = self._images.get((address, mip))
            if image is not None:
                self._images.move_to_end((address, mip))
                found[address] = image
            else:
                missing.append(address)
        if missing:
            with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
                for address, image in zip(
                    missing, pool.map(lambda a: self._decode(a, mip), missing), strict=True
                ):
                    found[address] = image
                    self._put((address, mip), image)
        return [found[address] for address in addresses]

    def _decode(self, address: Address, mip: int) -> Image.Image:
        path = self.store.node_path(address)
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{path}: unreadable node image: {exc}") from None
        if image.size != (self.size, self.size):
            raise InputError(
                f"{path}: node image is {image.width}x{image.height}, the manifest says "
                f"{self.size}x{self.size}"
            )
        return image.reduce(self.size // mip) if mip < self.size else image

    def _put(self, key: tuple[Address, int], image: Image.Image) -> None:
        self._images[key] = image
        self._bytes += image.width * image.height * 4
        while self._bytes > self.limit and len(self._images) > 1:
            _, dropped = self._images.popitem(last=False)
            self._bytes -= dropped.width * dropped.height * 4


@dataclass
class _Region:
    """Nodes of one depth pasted side by side at ``side`` pixels each, as YUV planes."""

    depth: int
    side: int
    row0: int
    col0: int
    rows: int
    cols: int
    span: int
    planes: tuple[Image.Image, Image.Image, Image.Image]

    def covers(self, box: Box) -> bool:
        return (
            box.left >= self.col0 * self.span
            and box.right <= (self.col0 + self.cols) * self.span
            and box.top >= self.row0 * self.span
            and box.bottom <= (self.row0 + self.rows) * self.span
        )

    def sample(self, box: Box, width: int, height: int) -> tuple[Image.Image, ...]:
        """Resample the canvas ``box`` to width x height planes (bilinear, antialiased when
        reducing)."""
        scale = self.side / self.span
        x0, y0 = self.col0 * self.span, self.row0 * self.span
        luma = self.planes[0]
        region = (
            min(max((box.left - x0) * scale, 0.0), luma.width),
            min(max((box.top - y0) * scale, 0.0), luma.height),
            min(max((box.right - x0) * scale, 0.0), luma.width),
            min(max((box.bottom - y0) * scale, 0.0), luma.height),
        )
        half = tuple(edge / 2 for edge in region)
        y = luma.resize((width, height), Image.Resampling.BILINEAR, box=region)
        u, v = (
            plane.resize((width // 2, height // 2), Image.Resampling.BILINEAR, box=half)
            for plane in self.planes[1:]
        )
        return y, u, v


class FrameRenderer:
    """Renders views of a build's canvas from its node images, one frame at a time.

    For a view it picks the shallowest depth whose nodes are at least as sharp as the frame
    (`level_for`: no blurry upscale where a sharper node exists), pastes the nodes around the view,
    each scaled once to a common side of 1x to `OVERSAMPLE` x the frame's resolution, into a region,
    converts that to YUV once, and resamples each following frame from it until the camera needs
    a sharper region or leaves it. Over the last ``blend`` of a level (in zoom) before the next
    depth takes over, that depth's region (its nodes still reduced, never enlarged) is faded in,
    so a node never pops into its children. A node the build did not expand (focus) is cut from
    its deepest stored ancestor. Memory: at most two regions (the level shown and the one fading
    in) and a byte-capped cache of decoded nodes, which renderers of one build can share (pass
    one renderer's ``nodes`` to another) so that a node decoded for one serves both.
    """

    def __init__(
        self, store: Store, plan: Plan, width: int, height: int, blend: float = BLEND,
        cache_bytes: int = NODE_CACHE_BYTES, nodes: _NodeCache | None = None,
    ) -> None:
        self.store, self.plan, self.width, self.height = store, plan, width, height
        self.blend = blend
        self.nodes = nodes if nodes is not None else _NodeCache(store, plan.size, cache_bytes)
        self._regions: dict[int, _Region] = {}
        self.regions_built = 0

    def render(self, view: Box, rect: tuple[int, int, int, int] | None = None) -> Planes:
        """The frame showing ``view``, or only its pixels in ``rect`` (even-aligned
        ``(x0, y0, x1, y1)``, where the canvas must lie: parts outside are clamped to its edge)."""
        x0, y0, x1, y1 = rect or (0, 0, self.width, self.height)
        pixel = (view.right - view.left) / self.width
        pixel_y = (view.bottom - view.top) / self.height
        canvas = self.plan.canvas_size

        def clamp(value: float) -> float:
            return min(max(value, 0.0), float(canvas))

        box = Box(
            clamp(view.left + x0 * pixel), clamp(view.top + y0 * pixel_y),
            clamp(view.left + x1 * pixel), clamp(view.top + y1 * pixel_y),
        )
        depth = level_for(self.plan, pixel)
        weight = self.deeper_weight(depth, pixel)
        keep = {depth, depth + 1} if weight > 0 else {depth}
        self._regions = {d: r for d, r in self._regions.items() if d in keep}
        planes = self._region(box, pixel, depth).sample(box, x1 - x0, y1 - y0)
        if weight > 0:
            deeper = self._region(box, pixel, depth + 1).sample(box, x1 - x0, y1 - y0)
            planes = tuple(
                Image.blend(a, b, weight) for a, b in zip(planes, deeper, strict=True)
            )
        return Planes(*(np.asarray(plane) for plane in planes))

    def deeper_weight(self, depth: int, pixel: float) -> float:
        """How much of depth + 1 is mixed into a frame of ``depth`` at ``pixel`` canvas pixels per
        frame pixel: 0 until the last ``blend`` of the level, rising to 1 where it takes over."""
        if depth >= self.plan.depth or self.blend <= 0:
            return 0.0
        switch = self.plan.span(depth) / self.plan.size
        # w = 1 - log(pixel / switch) / log(grid ** blend), clamped to [0, 1]
        reach = self.blend * math.log(self.plan.grids[depth])
        return min(1.0, max(0.0, 1 - math.log(pixel / switch) / reach))

    def _region(self, box: Box, pixel: float, depth: int) -> _Region:
        """The region of ``depth`` for this frame: the current one while it covers the box at a
        sharp enough (but not needlessly large) scale, else a new one."""
        side = ladder_side(self.plan.size, self.plan.span(depth), pixel)
        region = self._regions.pop(depth, None)
        if region is None or region.side != side or not region.covers(box):
            region = self._build_region(box, depth, side)
            self.regions_built += 1
        self._regions[depth] = region
        return region

    def _build_region(self, box: Box, depth: int, side: int) -> _Region:
        # 1. the nodes of this depth under the box and a margin around it
        span = self.plan.span(depth)
        cells = self.plan.canvas_size // span
        mx = MARGIN * (box.right - box.left)
        my = MARGIN * (box.bottom - box.top)
        col0 = max(0, math.floor((box.left - mx) / span))
        col1 = min(cells, max(col0 + 1, math.ceil((box.right + mx) / span)))
        row0 = max(0, math.floor((box.top - my) / span))
        row1 = min(cells, max(row0 + 1, math.ceil((box.bottom + my) / span)))
        rows, cols = row1 - row0, col1 - col0
        # 2. paste each, scaled to side x side
        mosaic = Image.new("RGB", (cols * side, rows * side))
        cells = [(row, col) for row in range(row0, row1) for col in range(col0, col1)]
        addresses = [_address_at(self.plan, depth, row, col) for row, col in cells]
        stored = [address for address in addresses if self.store.has(address)]
        mip = mip_for(self.plan.size, side)
        images = dict(zip(stored, self.nodes.get_many(stored, mip), strict=True))
        for (row, col), address in zip(cells, addresses, strict=True):
            image = images.get(address)
            tile = self._cut(address, side) if image is None else _fit(image, side)
            mosaic.paste(tile, ((col - col0) * side, (row - row0) * side))
        mosaic = _even(mosaic)
        # 3. to YUV once; frames resample the planes
        planes = rgb_to_planes(mosaic)
        del mosaic
        return _Region(
            depth=depth, side=side, row0=row0, col0=col0, rows=rows, cols=cols, span=span,
            planes=tuple(Image.fromarray(np.ascontiguousarray(p)) for p in planes),
        )

    def _cut(self, address: Address, side: int) -> Image.Image:
        """A node the build did not store, cut from its deepest stored ancestor."""
        ancestor = self.store.deepest_available(address)
        ax, ay = self.plan.origin(ancestor)
        nx, ny = self.plan.origin(address)
        share = self.plan.span(len(address)) / self.plan.span(len(ancestor))
        mip = mip_for(self.plan.size, math.ceil(side / share))
        image = self.nodes.get_many([ancestor], mip)[0]
        scale = image.width / self.plan.span(len(ancestor))
        reach = self.plan.span(len(address)) * scale
        left, top = (nx - ax) * scale, (ny - ay) * scale
        return image.resize(
            (side, side), Image.Resampling.BILINEAR, box=(left, top, left + reach, top + reach)
        )


def _even(image: Image.Image) -> Image.Image:
    """The image with its last column / row repeated where a side is odd (4:2:0 needs even)."""
    width, height = image.width + image.width % 2, image.height + image.height % 2
    if (width, height) == image.size:
        return image
    even = Image.new(image.mode, (width, height))
    even.paste(image, (0, 0))
    if width > image.width:
        even.paste(image.crop((image.width - 1, 0, image.width, image.height)), (image.width, 0))
    if height > image.height:
        even.paste(even.crop((0, image.height - 1, width, image.height)), (0, image.height))
    return even


def _fit(image: Image.Image, side: int) -> Image.Image:
    """A square node image at ``side`` pixels (box-reduced first when much larger)."""
    if image.width == side:
        return image
    return image.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)


# --- encoding ---------------------------------------------------------------------------------


class VideoWriter:
    """Encodes frames one at a time into a temporary file, renamed over ``path`` on `close`.

    Use as a context manager: on an exception (Ctrl-C included) the partial file is removed and
    whatever ``path`` held before is left untouched.
    """

    def __init__(
        self, path: Path, codec: str, width: int, height: int, fps: float,
        crf: int | None = None, preset: str | None = None,
    ) -> None:
        spec = CODECS[codec]
        self.path = Path(path)
        self.codec = codec
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._index = 0
        self._container = av.open(
            str(self._tmp), mode="w", format=CONTAINERS[self.path.suffix.lower()]
        )
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self._stream = self._container.add_stream(spec.encoder, rate=rate)
        except (ValueError, av.FFmpegError) as exc:
            self.abort()
            raise InputError(
                f"--codec {codec}: this PyAV has no {spec.encoder} encoder ({exc})"
            ) from None
        self._stream.width, self._stream.height = width, height
        if codec == "gif":
            self._stream.pix_fmt = "pal8"
            return
        self._stream.pix_fmt = "yuv420p"
        context = self._stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = BT709
        context.color_range = 1
        options = dict(spec.options)
        options["crf"] = str(spec.default_crf if crf is None else crf)
        if codec == "vp9":
            options["cpu-used"] = preset or spec.default_preset
        else:
            options["preset"] = preset or spec.default_preset
        self._stream.options = options

    def write(self, planes: Planes) -> None:
        """Encode one frame."""
        frame = _gif_frame(planes) if self.codec == "gif" else _pack(planes)
        frame.pts = self._index
        self._index += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoder, close the file and move it into place."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is not None:
            self.abort()


def _gif_frame(planes: Planes) -> av.VideoFrame:
    """A palette frame for GIF: the frame quantised to its own 256 colours."""
    image = Image.fromarray(planes_to_rgb(planes)).quantize(256)
    colours = np.array(image.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), np.uint8)
    palette[:, 0] = 255
    palette[: len(colours), 1:] = colours
    return av.VideoFrame.from_ndarray((np.asarray(image), palette), format="pal8")


# --- the video --------------------------------------------------------------------------------


def _blend(base: Planes, top: Planes, rect: tuple[int, int, int, int], weight: float) -> None:
    """Blend ``top`` into ``base`` at ``rect`` in place: out = (1 - w) base + w top."""
    x0, y0, x1, y1 = rect
    w = round(weight * 256)
    windows = ((slice(y0, y1), slice(x0, x1)), (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2)))
    for plane, over, window in zip(base, top, (windows[0], windows[1], windows[1]), strict=True):
        under = plane[window].astype(np.uint16)
        plane[window] = ((under * (256 - w) + over.astype(np.uint16) * w + 128) >> 8).astype(
            np.uint8
        )


def smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, ``3x^2 - 2x^3`` between: a ramp that starts and ends gently."""
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def progress_at(t: int, frames: int, settings: VideoSettings) -> float:
    """Zoom progress of frame ``t``. Looping, frames sit at ``(t + 1) / frames`` so the last one
    completes the descent (and, through the cross-fade, shows the whole canvas again) and the
    first is one ordinary step in; otherwise the first frame is the canvas, the last the target."""
    if settings.loop:
        return ease((t + 1) / frames, settings.ease)
    return ease(t / (frames - 1), settings.ease)


def zoom_frames(
    store: Store, plan: Plan, path: ZoomPath, settings: VideoSettings, frames: int, fade: int,
) -> Iterator[Planes]:
    """The frames of the video, made one at a time.

    Looping, over the last ``fade`` frames the view one whole descent up (the canvas in
    miniature, exactly where the target node sits) is cross-faded in, its weight rising
    smoothly to 1 on the last frame, which is then the whole canvas: the frame after it, the
    first, is one ordinary zoom step further in. The miniature has its own renderer (its own
    regions, so neither evicts the other's) sharing the camera's node cache: at most four
    regions and one byte-capped cache are held, and a node is decoded once for both.
    """
    width, height = settings.width, settings.height
    camera = FrameRenderer(store, plan, width, height)
    miniature = FrameRenderer(store, plan, width, height, nodes=camera.nodes)
    for t in range(frames):
        u = progress_at(t, frames, settings)
        planes = camera.render(path.box(u))
        step = t - (frames - fade) + 1
        if settings.loop and step > 0:
            outer = path.box(u - 1)
            rect = canvas_rect(outer, plan.canvas_size, width, height)
            if rect is not None:
                planes = Planes(*(np.array(plane) for plane in planes))
                _blend(planes, miniature.render(outer, rect), rect, smoothstep(step / fade))
        yield planes


def ahead(items: Iterator[Planes], count: int) -> Iterator[Planes]:
    """Yield from ``items`` while a thread already makes the next ``count`` of them, so that
    rendering a frame overlaps encoding the previous one (both release the GIL). Errors in the
    thread are raised here; closing the generator stops the thread."""
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=count)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(("item", item))
            slots.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            slots.put(("error", exc))

    worker = threading.Thread(target=produce, name="hypermosaic-render", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


def render_video(
    build_dir: Path, out_file: Path, settings: VideoSettings,
    progress: Callable[[int, int], None] | None = None,
) -> VideoResult:
    """Render the zoom video of a build into ``out_file`` (.mp4, .webm, .mkv, .mov or .gif).

    Raises InputError for bad settings or a build that is missing, incomplete or too shallow for
    the path; nothing is written then, and an interrupted render leaves no partial file.
    """
    # 1. settings, build, path
    out_file = Path(out_file)
    if out_file.suffix.lower() == ".gif" and settings.codec != "gif":
        settings = replace(settings, codec="gif")
    check_inputs(settings, out_file)
    store, plan = open_build(Path(build_dir))
    target = choose_path(store, plan, settings.path)
    # 2. camera and timing
    path = zoom_path(plan, target, settings.width, settings.height, drift=settings.drift)
    frames = frame_count(settings, len(target))
    fade = min(frames // 2, round(settings.fade * settings.fps)) if settings.loop else 0
    if not out_file.parent.is_dir():
        raise InputError(f"--out {out_file}: the folder {out_file.parent} does not exist")
    # 3. render and encode one frame at a time
    with VideoWriter(
        out_file, settings.codec, settings.width, settings.height, settings.fps,
        crf=settings.crf, preset=settings.preset,
    ) as writer:
        rendered = ahead(zoom_frames(store, plan, path, settings, frames, fade), AHEAD)
        try:
            for index, planes in enumerate(rendered):
                writer.write(planes)
                if progress is not None:
                    progress(index + 1, frames)
        finally:
            rendered.close()  # stops the render thread now, not when the generator is collected
        writer.close()
    return VideoResult(
        path=out_file, frames=frames, fps=settings.fps, width=settings.width,
        height=settings.height, codec=settings.codec, target=target,
    )
