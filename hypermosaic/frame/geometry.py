"""A picture frame's inside in a photo: its four corners, and warps between it and a rectangle.

Coordinates are ``(x, y)`` in pixels with pixel centres on whole numbers (``(0, 0)`` is the centre
of the top-left pixel), y downwards. `Corners` run top-left, top-right, bottom-right, bottom-left
(clockwise on screen), and they map onto the centres of a rectangle's corner pixels, so a quad and
the rectangle ``(0, 0)..(width - 1, height - 1)`` are one homography apart.

Warps sample bilinearly in numpy with float64 coordinates: exact to well under a pixel, no extra
dependency, and fast enough for the sizes warped here (the inpainted frame, a preview the size of
the photo). pyvips ``mapim`` would need its index image built in numpy all the same (and in
float32), so it saves little. Bad corners or masks raise ValueError naming ``frame.corners`` or
``frame.mask``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

__all__ = [
    "Corners",
    "apply_homography",
    "check_corners",
    "corners_from_mask",
    "frame_corners",
    "homography",
    "order_corners",
    "preview_on_wall",
    "rectify",
]

Corners = npt.NDArray[np.float64]
"""(4, 2) float64 ``(x, y)``: top-left, top-right, bottom-right, bottom-left."""
Image = npt.NDArray[Any]
"""(height, width) or (height, width, channels), uint8, uint16 or float."""
_STRIP_ROWS = 256
"""Rows warped at once, so the float64 coordinate arrays stay small for large outputs."""


def _as_points(points: npt.ArrayLike) -> Corners:
    """Four finite ``(x, y)`` points as a (4, 2) float64 array."""
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (4, 2):
        raise ValueError(
            f"frame.corners: expected 4 points (x, y), got an array of shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError("frame.corners: every coordinate must be a finite number")
    return array


def _cross(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """z of the 2-D cross product, along the last axis; > 0 when b turns clockwise on screen."""
    return np.asarray(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], dtype=np.float64)


def order_corners(points: npt.ArrayLike) -> Corners:
    """Four corners in any order → top-left, top-right, bottom-right, bottom-left.

    Sorted by angle around their mean (clockwise on screen); the pair of opposite sides closer to
    horizontal are the top and bottom, and the top-left corner starts the upper one.
    """
    p = _as_points(points)
    offset = p - p.mean(axis=0)
    ring = p[np.argsort(np.arctan2(offset[:, 1], offset[:, 0]), kind="stable")]
    sides = np.roll(ring, -1, axis=0) - ring  # side i runs from ring[i] to ring[i + 1]
    steepness = np.abs(sides[:, 1]) / np.maximum(np.abs(sides).sum(axis=1), 1e-12)
    first = 0 if steepness[0] + steepness[2] <= steepness[1] + steepness[3] else 1
    mean_y = (ring[:, 1] + np.roll(ring, -1, axis=0)[:, 1]) / 2
    top = first if mean_y[first] <= mean_y[first + 2] else first + 2
    return np.roll(ring, -top, axis=0)


def _crosses(a: Corners, b: Corners, c: Corners, d: Corners) -> bool:
    """Whether segments ab and cd cross at a point inside both."""
    o1, o2 = _cross(b - a, c - a), _cross(b - a, d - a)
    o3, o4 = _cross(d - c, a - c), _cross(d - c, b - c)
    return bool(o1 * o2 < 0 and o3 * o4 < 0)


def check_corners(corners: npt.ArrayLike, width: int, height: int) -> Corners:
    """Check corners given as top-left, top-right, bottom-right, bottom-left of a photo.

    Raises ValueError when a corner lies outside the photo's pixel centres, the quadrilateral is
    degenerate (three corners within half a pixel of one line), self-intersecting, not convex, or
    runs counter-clockwise (mirrored).
    """
    c = _as_points(corners)
    for x, y in c:
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise ValueError(
                f"frame.corners: corner ({x:g}, {y:g}) is outside the {width}x{height} photo "
                f"(x in 0..{width - 1}, y in 0..{height - 1})"
            )
    for i, j, k in itertools.combinations(range(4), 3):
        longest = max(np.hypot(*(c[i] - c[j])), np.hypot(*(c[j] - c[k])), np.hypot(*(c[k] - c[i])))
        if abs(_cross(c[j] - c[i], c[k] - c[i])) < 0.5 * max(longest, 1.0):
            raise ValueError("frame.corners: degenerate: three corners lie on one line")
    if _crosses(c[0], c[1], c[2], c[3]) or _crosses(c[1], c[2], c[3], c[0]):
        raise ValueError("frame.corners: the quadrilateral intersects itself")
    turns = _cross(np.roll(c, -1, axis=0) - c, np.roll(c, -2, axis=0) - np.roll(c, -1, axis=0))
    if (turns < 0).all():
        raise ValueError(
            "frame.corners: the corners run counter-clockwise; give them as top-left, "
            "top-right, bottom-right, bottom-left"
        )
    if not (turns > 0).all():
        raise ValueError("frame.corners: the quadrilateral is not convex")
    return c


def frame_corners(points: npt.ArrayLike, width: int, height: int) -> Corners:
    """Four corners in any order, ordered (`order_corners`) and checked (`check_corners`)."""
    return check_corners(order_corners(points), width, height)


def _inside(mask: Image) -> npt.NDArray[np.bool_]:
    """Pixels on in a mask: its first band at half its range or more (any value > 0 for bool)."""
    band = mask[..., 0] if mask.ndim == 3 else mask
    if band.dtype == np.bool_:
        return np.asarray(band)
    if np.issubdtype(band.dtype, np.integer):
        return np.asarray(band >= (int(np.iinfo(band.dtype).max) + 1) // 2)
    return np.asarray(band >= 0.5)


def _largest_region(inside: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The largest 4-connected region of on pixels (pyvips labels the regions)."""
    labels = pyvips.Image.new_from_array(inside.astype(np.uint8)).labelregions().numpy()
    counts = np.bincount(labels[inside])
    return np.asarray(labels == int(np.argmax(counts)))


def _hull(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Convex hull (Andrew's monotone chain), clockwise on screen, collinear points dropped."""
    ordered = sorted(set(map(tuple, points.tolist())))

    def chain(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(chain(ordered) + chain(ordered[::-1]), dtype=np.float64).reshape(-1, 2)


def _largest_quadrilateral(hull: npt.NDArray[np.float64]) -> Corners:
    """The largest-area quadrilateral with its corners on the hull's vertices.

    For each diagonal (i, k) the best other two corners are the vertices farthest from it on
    either side, so one (n, n) cross-product table per i does: O(n³), n is the hull's size.
    """
    best, corners = -1.0, hull[:4]
    for i in range(len(hull)):
        table = _cross((hull - hull[i])[:, None, :], (hull - hull[i])[None, :, :])  # [k, m]
        area = table.max(axis=1) - table.min(axis=1)
        k = int(np.argmax(area))
        if area[k] > best:
            best = float(area[k])
            corners = hull[[i, int(np.argmax(table[k])), k, int(np.argmin(table[k]))]]
    return corners


def corners_from_mask(mask: Image, width: int, height: int) -> Corners:
    """The frame's corners from a mask the photo's size: the largest region's quadrilateral.

    The region is reduced to its rows' end pixels, their convex hull, and the hull's
    largest inscribed quadrilateral; its corners are then ordered and checked like given ones.
    """
    inside = _inside(mask)
    if inside.shape != (height, width):
        got = f"{inside.shape[1]}x{inside.shape[0]}" if inside.ndim == 2 else str(mask.shape)
        raise ValueError(f"frame.mask: the mask is {got}, the photo {width}x{height}")
    if not inside.any():
        raise ValueError("frame.mask: the mask is empty (no pixel is on)")
    region = _largest_region(inside)
    rows = np.flatnonzero(region.any(axis=1))
    left = region[rows].argmax(axis=1)
    right = width - 1 - region[rows, ::-1].argmax(axis=1)
    ends = np.concatenate([np.stack([left, rows], 1), np.stack([right, rows], 1)]).astype(float)
    hull = _hull(ends)
    if len(hull) < 4:
        raise ValueError("frame.mask: the mask's largest region is a line, not a frame's inside")
    try:
        return frame_corners(_largest_quadrilateral(hull), width, height)
    except ValueError as error:
        raise ValueError(f"frame.mask: the largest region's {error}") from None


def _normaliser(p: Corners) -> npt.NDArray[np.float64]:
    """Similarity moving the points' mean to 0 and their mean distance to √2 (Hartley)."""
    mean = p.mean(axis=0)
    scale = math.sqrt(2) / max(float(np.hypot(*(p - mean).T).mean()), 1e-12)
    return np.array([[scale, 0, -scale * mean[0]], [0, scale, -scale * mean[1]], [0, 0, 1]])


def homography(src: npt.ArrayLike, dst: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The 3x3 homography H with ``dst ~ H @ src`` from 4 point pairs (normalised DLT, float64)."""
    s, d = _as_points(src), _as_points(dst)
    ts, td = _normaliser(s), _normaliser(d)
    sn = apply_homography(ts, s)
    dn = apply_homography(td, d)
    rows = []
    for (x, y), (u, v) in zip(sn, dn, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    h = np.linalg.svd(np.array(rows))[2][-1].reshape(3, 3)
    matrix = np.linalg.inv(td) @ h @ ts
    return np.asarray(matrix / matrix[2, 2], dtype=np.float64)


def apply_homography(
    matrix: npt.NDArray[np.float64], points: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Points (n, 2) mapped through a 3x3 homography."""
    p = np.asarray(points, dtype=np.float64)
    mapped = p @ matrix[:, :2].T + matrix[:, 2]
    return np.asarray(mapped[:, :2] / mapped[:, 2:], dtype=np.float64)


def _rectangle(width: int, height: int) -> Corners:
    """A width x height image's corner pixel centres, top-left first, clockwise on screen."""
    return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)


def _bilinear(image: Image, xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The image sampled bilinearly at points (n, 2), clamped to its edge: (n,) or (n, bands)."""
    height, width = image.shape[:2]
    x = np.clip(xy[:, 0], 0, width - 1)
    y = np.clip(xy[:, 1], 0, height - 1)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = x - x0, y - y0
    if image.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]

    def at(yi: npt.NDArray[np.intp], xi: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        return np.asarray(image[yi, xi], dtype=np.float64)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return np.asarray(top * (1 - fy) + bottom * fy, dtype=np.float64)


def _to_dtype(values: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> Image:
    """Float pixel values rounded and clipped into an integer dtype (floats are kept)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _grid(rows: range, cols: range) -> npt.NDArray[np.float64]:
    """Pixel centres ``(x, y)`` of a block of rows and columns, row-major, (n, 2)."""
    ys, xs = np.meshgrid(
        np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop), indexing="ij"
    )
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def rectify(photo: Image, corners: npt.ArrayLike, width: int, height: int) -> Image:
    """The photo's quadrilateral warped onto a width x height rectangle (bilinear).

    The corners (top-left first, see `check_corners`) land on the rectangle's corner pixel
    centres. Downscaling by much more than 2 aliases: rectify to about the quad's own size.
    """
    if width < 2 or height < 2:
        raise ValueError(
            f"frame.size: a rectified frame must be at least 2x2 pixels, got {width}x{height}"
        )
    c = check_corners(corners, photo.shape[1], photo.shape[0])
    to_photo = homography(_rectangle(width, height), c)
    out = np.empty((height, width, *photo.shape[2:]), dtype=photo.dtype)
    for top in range(0, height, _STRIP_ROWS):
        rows = range(top, min(top + _STRIP_ROWS, height))
        samples = _bilinear(photo, apply_homography(to_photo, _grid(rows, range(width))))
        out[rows.start : rows.stop] = _to_dtype(samples, photo.dtype).reshape(
            len(rows), width, *photo.shape[2:]
        )
    return out


def _shrunk(artwork: Image, factor: int) -> Image:
    """The artwork box-averaged by a whole factor (pyvips ``shrink``: streamed, no float copy)."""
    return np.asarray(pyvips.Image.new_from_array(artwork).shrink(factor, factor).numpy())


def preview_on_wall(
    photo: Image, artwork: Image, corners: npt.ArrayLike, feather: float = 3.0
) -> Image:
    """The photo with the artwork warped into the frame's quadrilateral: the "on the wall" view.

    The artwork fades in over ``feather`` pixels inside the quadrilateral's edge (weight
    ``min(1, distance / feather)``); every pixel on or outside the edge is the photo's, unchanged.
    An artwork more than twice the quad's size is box-averaged first, so it does not alias.
    """
    if not math.isfinite(feather) or feather < 0:
        raise ValueError(f"frame.feather: must be a finite number of pixels >= 0, got {feather!r}")
    if artwork.shape[2:] != photo.shape[2:]:
        raise ValueError(
            f"frame.artwork: has shape {artwork.shape}, the photo {photo.shape}: bands differ"
        )
    c = check_corners(corners, photo.shape[1], photo.shape[0])
    to_art = homography(c, _rectangle(artwork.shape[1], artwork.shape[0]))
    sides = np.hypot(*(np.roll(c, -1, axis=0) - c).T)
    factor = int(
        min(artwork.shape[1] / max(sides[0], sides[2]), artwork.shape[0] / max(sides[1], sides[3]))
    )
    source: Image = artwork
    if factor >= 2:  # new pixel centre j sits at old j * factor + (factor - 1) / 2
        source = _shrunk(artwork, factor)
        shrink = np.array(
            [
                [1 / factor, 0, -(factor - 1) / (2 * factor)],
                [0, 1 / factor, -(factor - 1) / (2 * factor)],
                [0, 0, 1],
            ]
        )
        to_art = shrink @ to_art
    x0, y0 = np.floor(c.min(axis=0)).astype(int)
    x1, y1 = np.ceil(c.max(axis=0)).astype(int)
    out = photo.copy()
    edges, starts = np.roll(c, -1, axis=0) - c, c
    for top in range(y0, y1 + 1, _STRIP_ROWS):
        rows = range(top, min(top + _STRIP_ROWS, y1 + 1))
        xy = _grid(rows, range(x0, x1 + 1))
        # signed distance to each side, > 0 inside (sides run clockwise on screen)
        distance = np.min(_cross(edges[None], xy[:, None, :] - starts[None]) / sides, axis=1)
        weight = np.clip(distance / feather, 0, 1) if feather > 0 else (distance > 0).astype(float)
        keep = weight > 0
        if not keep.any():
            continue
        px, py = xy[keep].astype(np.intp).T
        w = weight[keep] if photo.ndim == 2 else weight[keep][:, None]
        art = _bilinear(source, apply_homography(to_art, xy[keep]))
        out[py, px] = _to_dtype(photo[py, px] * (1 - w) + art * w, photo.dtype)
    return out
