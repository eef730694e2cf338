"""Frame geometry: corner order and checks, masks, the homography, rectification, the preview."""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hypermosaic.frame.geometry import (
    apply_homography,
    check_corners,
    corners_from_mask,
    frame_corners,
    homography,
    order_corners,
    preview_on_wall,
    rectify,
)

QUAD = np.array([[62.0, 31.0], [251.0, 52.0], [238.0, 205.0], [48.0, 188.0]])
"""A frame at an angle in a 320x240 photo: top-left, top-right, bottom-right, bottom-left."""
W, H = 320, 240
ART_W, ART_H = 161, 121
BORDER, SQUARE = 12, 20


def _inside_quad(
    quad: npt.NDArray[np.float64], xy: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Points strictly inside a clockwise-on-screen convex quad (an independent test)."""
    a, b = quad, np.roll(quad, -1, axis=0)
    cross = (b[:, 0] - a[:, 0]) * (xy[:, None, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
        xy[:, None, 0] - a[:, 0]
    )
    return np.asarray((cross > 1e-9).all(axis=1))


def _pattern(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The marked rectangle: a black border around a 255/160 checkerboard; 128 off it."""
    inside = (u >= 0) & (u <= ART_W - 1) & (v >= 0) & (v <= ART_H - 1)
    border = (u < BORDER) | (u > ART_W - 1 - BORDER) | (v < BORDER) | (v > ART_H - 1 - BORDER)
    checker = np.where((np.floor(u / SQUARE) + np.floor(v / SQUARE)) % 2 == 0, 255.0, 160.0)
    return np.where(inside, np.where(border, 0.0, checker), 128.0)


def _photo_of_pattern() -> npt.NDArray[np.uint8]:
    """The pattern rendered into QUAD analytically, 4x4 supersampled per photo pixel."""
    to_art = homography(QUAD, [[0, 0], [ART_W - 1, 0], [ART_W - 1, ART_H - 1], [0, ART_H - 1]])
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    total = np.zeros((H, W))
    for dy, dx in itertools.product(offsets, offsets):
        uv = apply_homography(to_art, np.stack([(xs + dx).ravel(), (ys + dy).ravel()], 1))
        total += _pattern(uv[:, 0], uv[:, 1]).reshape(H, W)
    return np.rint(total / 16).astype(np.uint8)


def _crossings(profile: npt.NDArray[np.float64], level: float) -> npt.NDArray[np.float64]:
    """Sub-pixel positions where a 1-D profile crosses a level (linear between samples)."""
    a, b = profile[:-1], profile[1:]
    i = np.flatnonzero((a - level) * (b - level) < 0)
    return i + (level - a[i]) / (b[i] - a[i])


def test_rectified_pattern_is_within_a_pixel_of_the_rectangle() -> None:
    """The border's inner edges and the checker edges land where the rectangle has them."""
    art = rectify(_photo_of_pattern(), QUAD, ART_W, ART_H).astype(float)
    assert art.shape == (ART_H, ART_W)
    expected = _pattern(*np.meshgrid(np.arange(ART_W, dtype=float), np.arange(ART_H, dtype=float)))
    # the border's inner edges at level 40 (black vs >= 160); 3 px in, clear of the outer edges
    for row in (30, 60, 90):
        edges = _crossings(art[row, 3:-3], 40.0) + 3
        np.testing.assert_allclose(edges, [BORDER, ART_W - 1 - BORDER], atol=1.0)
    for col in (30, 80, 130):
        edges = _crossings(art[3:-3, col], 40.0) + 3
        np.testing.assert_allclose(edges, [BORDER, ART_H - 1 - BORDER], atol=1.0)
    inner = art[70, BORDER + 2 : ART_W - BORDER - 2]  # checker edges mid-square
    found = _crossings(inner, 207.5) + BORDER + 2
    np.testing.assert_allclose(found, [20, 40, 60, 80, 100, 120, 140], atol=1.0)
    assert np.abs(art - expected)[BORDER + 2 : -BORDER - 2, BORDER + 2 : -BORDER - 2].mean() < 10


def test_homography_round_trip() -> None:
    rect = [[0, 0], [99, 0], [99, 49], [0, 49]]
    forward, back = homography(rect, QUAD), homography(QUAD, rect)
    np.testing.assert_allclose(apply_homography(forward, rect), QUAD, atol=1e-9)
    points = np.random.default_rng(0).uniform(0, 99, (50, 2))
    np.testing.assert_allclose(
        apply_homography(back, apply_homography(forward, points)), points, atol=1e-9
    )
    np.testing.assert_allclose(
        back, np.linalg.inv(forward) / np.linalg.inv(forward)[2, 2], atol=1e-12
    )
    shift = homography(rect, np.array(rect) * 2 + [5, 7])  # a known affine map
    np.testing.assert_allclose(shift, [[2, 0, 5], [0, 2, 7], [0, 0, 1]], atol=1e-12)


def test_preview_leaves_the_photo_outside_the_quad_byte_identical() -> None:
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    artwork = np.full((400, 500, 3), (10, 200, 30), dtype=np.uint8)  # box-shrunk first
    out = preview_on_wall(photo, artwork, QUAD, feather=3.0)
    ys, xs = np.mgrid[0:H, 0:W]
    inside = _inside_quad(QUAD, np.stack([xs.ravel(), ys.ravel()], 1).astype(float)).reshape(H, W)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    assert np.array_equal(out[~inside], photo[~inside])
    deep = _inside_quad(
        QUAD + (np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * 6),
        np.stack([xs.ravel(), ys.ravel()], 1).astype(float),
    ).reshape(H, W)
    assert (out[deep] == (10, 200, 30)).all()
    feathered = inside & ~deep
    assert (out[feathered] != photo[feathered]).any() and (out[feathered] != (10, 200, 30)).any()


def test_preview_then_rectify_gives_the_artwork_back() -> None:
    """Two routes: the artwork set into the quad and taken out again is the artwork."""
    uv = np.meshgrid(np.arange(ART_W, dtype=float), np.arange(ART_H, dtype=float))
    artwork = _pattern(*uv).astype(np.uint8)
    photo = np.zeros((H, W), np.uint8)
    back = rectify(preview_on_wall(photo, artwork, QUAD), QUAD, ART_W, ART_H).astype(float)
    diff = np.abs(back - artwork)[6:-6, 6:-6]
    assert np.median(diff) == 0 and diff.mean() < 8


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_any_corner_order_is_put_right(order: tuple[int, ...]) -> None:
    np.testing.assert_array_equal(order_corners(QUAD[list(order)]), QUAD)
    np.testing.assert_array_equal(frame_corners(QUAD[list(order)], W, H), QUAD)


def test_order_of_a_steep_frame() -> None:
    """A frame turned nearly 45°: the top is the upper of the two flatter sides."""
    steep = np.array([[100, 10], [180, 80], [120, 160], [40, 90]], float)
    np.testing.assert_array_equal(order_corners(steep[[2, 0, 3, 1]]), steep)


def test_corners_from_mask() -> None:
    ys, xs = np.mgrid[0:H, 0:W]
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    mask = (_inside_quad(QUAD, centres).reshape(H, W) * 255).astype(np.uint8)
    mask[5:15, 280:300] = 255  # a smaller blob elsewhere is ignored
    corners = corners_from_mask(np.dstack([mask] * 3), W, H)
    np.testing.assert_allclose(corners, QUAD, atol=1.5)


def _fails(message: str) -> Any:
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


def test_bad_corners() -> None:
    with _fails(
        "frame.corners: corner (330, 52) is outside the 320x240 photo (x in 0..319, y in 0..239)"
    ):
        frame_corners(QUAD + [[0, 0], [79, 0], [0, 0], [0, 0]], W, H)
    with _fails("frame.corners: the quadrilateral intersects itself"):
        check_corners(QUAD[[0, 1, 3, 2]], W, H)
    with _fails("frame.corners: degenerate: three corners lie on one line"):
        frame_corners([[10, 10], [100, 10], [200, 10], [50, 100]], W, H)
    with _fails("frame.corners: degenerate: three corners lie on one line"):
        frame_corners([[10, 10], [10, 10], [100, 100], [10, 100]], W, H)
    with _fails("frame.corners: the quadrilateral is not convex"):
        frame_corners([[10, 10], [200, 10], [60, 40], [10, 200]], W, H)
    with _fails(
        "frame.corners: the corners run counter-clockwise; give them as top-left, "
        "top-right, bottom-right, bottom-left"
    ):
        check_corners(QUAD[::-1], W, H)
    with _fails("frame.corners: every coordinate must be a finite number"):
        frame_corners(QUAD + [[np.nan, 0], [0, 0], [0, 0], [0, 0]], W, H)
    with _fails("frame.corners: expected 4 points (x, y), got an array of shape (3, 2)"):
        frame_corners(QUAD[:3], W, H)


def test_bad_masks() -> None:
    with _fails("frame.mask: the mask is 319x240, the photo 320x240"):
        corners_from_mask(np.full((H, W - 1), 255, np.uint8), W, H)
    with _fails("frame.mask: the mask is empty (no pixel is on)"):
        corners_from_mask(np.full((H, W), 127, np.uint8), W, H)
    line = np.zeros((H, W), bool)
    line[50, 10:200] = True
    with _fails("frame.mask: the mask's largest region is a line, not a frame's inside"):
        corners_from_mask(line, W, H)
