"""The camera: which view of the canvas each frame shows, and which nodes are sharp enough for it.

Every view is "contain" framed: a square (the canvas, or a node) is shown whole, fitted to the
frame's short side and centred, with the background (`hypermosaic.video.frames.BACKGROUND`)
wherever the view leaves the canvas. The zoom is exponential: every frame is the previous one
scaled by the same factor about one fixed point, so the speed looks constant (`ZoomPath`). With
``drift`` the fixed point is chosen so that the view at progress 1 frames the target node exactly
as the first view framed the canvas, which is what lets the video loop. The camera stops at
`ZoomPath.end`, where a pixel of the target's depth fills one frame pixel: deeper, the frame would
only show the leaves enlarged. Time maps to zoom progress through `ease` (a trapezoidal speed
profile) and `progress_at`. The level and mip maths (`level_for`, `ladder_side`, `mip_for`) turn
a view's scale into the depth, paste size and decode size of the nodes drawn for it; they are
functions of the view alone, so a frame never depends on the frames before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from hypermosaic.tree import Address, Plan
from hypermosaic.video.settings import VideoSettings

__all__ = [
    "OVERSAMPLE",
    "FrameViews",
    "View",
    "ZoomPath",
    "canvas_rect",
    "ease",
    "frame_views",
    "ladder_side",
    "level_for",
    "mip_for",
    "progress_at",
    "sharp_end",
    "smoothstep",
    "zoom_path",
]

OVERSAMPLE = 2**0.5
"""Regions are assembled at 1x to this many times the frame's resolution, then resampled."""


class View(NamedTuple):
    """A view of the canvas: ``(left, top, right, bottom)`` in canvas pixels (floats).

    Not `hypermosaic.tiling`'s tile window, which is ``(top, bottom, left, right)`` in ints.
    """

    left: float
    top: float
    right: float
    bottom: float


def _contain(x: float, y: float, side: float, width: int, height: int) -> View:
    """The view of a width x height frame showing the ``side``-square at ``(x, y)`` whole: the
    square fills the frame's short side, centred, and the view extends past it on the long one."""
    w = side * max(1.0, width / height)
    h = side * max(1.0, height / width)
    cx, cy = x + side / 2, y + side / 2
    return View(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@dataclass(frozen=True)
class ZoomPath:
    """An exponential zoom: the view at progress ``u`` is ``start`` scaled by ``ratio**u`` about
    ``fixed``. ``u = 0`` shows the whole canvas. For a looping zoom ``u = 1`` frames the target
    as ``u = 0`` framed the canvas, ``u - 1`` is the same view mapped back up one whole descent
    (the canvas in miniature inside the target), and ``end`` (at most 1) is the progress where
    the camera stops: one pixel of the target's depth fills one frame pixel there
    (`sharp_end`). Without the loop ``u = 1`` is that sharp view and ``end`` is 1."""

    start: View
    fixed: tuple[float, float]
    ratio: float
    end: float = 1.0

    def view(self, u: float) -> View:
        """The view at zoom progress ``u``."""
        # view(u) = f + s (view(0) - f),  s = ratio ** u
        s = self.ratio**u
        fx, fy = self.fixed
        left, top, right, bottom = self.start
        return View(fx + s * (left - fx), fy + s * (top - fy),
                    fx + s * (right - fx), fy + s * (bottom - fy))


def sharp_end(plan: Plan, depth: int, width: int, height: int) -> float:
    """The zoom progress where a node pixel of ``depth`` (the target's) becomes one frame pixel,
    at most 1: the deepest the camera goes without enlarging the sharpest nodes.

    At progress ``u`` the view's short side is ``canvas * k**u`` canvas pixels (``k`` the
    target's span over the canvas), so a frame pixel covers ``canvas * k**u / short`` of them,
    and a node pixel of the target's depth ``canvas * k / size``. They are equal at
    ``u = 1 - log(short / size) / log(1 / k)``: past 1 (``size`` >= the frame's short side)
    the whole descent is sharp; at or below 0 even the whole canvas is softer than its nodes.
    """
    k = plan.span(depth) / plan.canvas_size
    short = min(width, height)
    return min(1.0, 1 - math.log(short / plan.size) / math.log(1 / k))


def zoom_path(
    plan: Plan, target: Address, width: int, height: int, drift: bool = True, loop: bool = True,
) -> ZoomPath:
    """The zoom from the whole canvas into ``target`` for a width x height frame.

    Both ends are contain framed (the square whole, centred). Looping, the view at progress 1
    is the view at 0 scaled by ``k``, the target's share of the canvas side, so that it frames
    the target as the start framed the canvas, and the camera stops at `sharp_end`; without the
    loop the zoom ends (at 1) on that sharp view of the target, centred: ``ratio`` is ``k``
    raised to the sharp end. With ``drift`` the fixed point is where the similarity from the
    start to the end leaves a point in place, so the target ends centred; without it the
    camera zooms straight at the target's centre, which stays where it was in the frame: the
    end then frames the target off-centre, not as the start framed the canvas, so such a zoom
    cannot loop (`check_inputs` refuses it with the loop on).
    """
    canvas = plan.canvas_size
    start = _contain(0, 0, canvas, width, height)
    ox, oy = plan.origin(target)
    side = plan.span(len(target))
    sharp = sharp_end(plan, len(target), width, height)
    ratio = side / canvas if loop else (side / canvas) ** sharp
    if drift:
        # f = (c1 - r c0) / (1 - r), c0 the start's centre and c1 the target's (the end view's
        # centre): the point with f + r (c0 - f) = c1, which the similarity leaves in place
        c0 = ((start.left + start.right) / 2, (start.top + start.bottom) / 2)
        c1 = (ox + side / 2, oy + side / 2)
        fixed = ((c1[0] - ratio * c0[0]) / (1 - ratio), (c1[1] - ratio * c0[1]) / (1 - ratio))
    else:
        fixed = (ox + side / 2, oy + side / 2)
    return ZoomPath(start=start, fixed=fixed, ratio=ratio, end=sharp if loop else 1.0)


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


def progress_at(t: int, frames: int, settings: VideoSettings) -> float:
    """Zoom progress of frame ``t``. Looping, frames sit at ``(t + 1) / frames`` of the whole
    descent, so the last one completes it (and, through the cross-fade, shows the whole canvas
    again) and the first is one ordinary step in; past the camera's sharp stop
    (`ZoomPath.end`) `frame_views` shows the miniature alone. Otherwise the first frame is the
    canvas, the last the target."""
    if settings.loop:
        return ease((t + 1) / frames, settings.ease)
    return ease(t / (frames - 1), settings.ease)


class FrameViews(NamedTuple):
    """What one frame of the video shows: the ``camera``'s view mixed with the loop's
    ``miniature`` (the view one descent up) by ``weight``: 0 shows the camera's alone, 1 the
    miniature's alone."""

    camera: View
    miniature: View
    weight: float


def frame_views(
    path: ZoomPath, settings: VideoSettings, frames: int, fade: int
) -> Iterator[FrameViews]:
    """The views of each of ``frames`` frames (drawn by `hypermosaic.video.run.zoom_frames`).

    Looping, the camera's last frame is the last one at or before ``path.end`` (its sharp
    stop); over the ``fade`` frames up to it the miniature is cross-faded in, its weight rising
    smoothly to 1, and from there on it is shown alone, zooming on (its views at ``u - 1``).
    """
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
        yield FrameViews(path.view(u), path.view(u - 1), weight)


def smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, ``3x^2 - 2x^3`` between: a ramp that starts and ends gently."""
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def canvas_rect(
    view: View, canvas: int, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The even-aligned pixel rectangle ``(x0, y0, x1, y1)`` of a frame showing ``view`` that
    holds every pixel the canvas touches (rounded outwards, so it may reach a pixel or two past
    the canvas edge), or None if the canvas covers no part of the frame."""
    sx = width / (view.right - view.left)
    sy = height / (view.bottom - view.top)

    def down(value: float, limit: int) -> int:
        return min(limit, max(0, 2 * math.floor(value / 2 + 1e-9)))

    def up(value: float, limit: int) -> int:
        return min(limit, max(0, 2 * math.ceil(value / 2 - 1e-9)))

    x0, x1 = down(-view.left * sx, width), up((canvas - view.left) * sx, width)
    y0, y1 = down(-view.top * sy, height), up((canvas - view.top) * sy, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def level_for(plan: Plan, pixel: float) -> int:
    """The shallowest depth whose node images are at least as sharp as ``pixel`` canvas pixels
    per frame pixel; the deepest depth if none is (then no sharper node exists)."""
    for depth in range(plan.depth + 1):
        if plan.span(depth) / plan.size <= pixel * (1 + 1e-9):
            return depth
    return plan.depth


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
