"""Tile geometry (`hypermosaic.tiling`): both ways of cutting a side into windows."""

from __future__ import annotations

import pytest

from hypermosaic.errors import InputError
from hypermosaic.tiling import tile_windows, window_spans


def test_windows_cover_the_axis_with_overlap() -> None:
    for length in range(1, 300, 7):
        for tile, overlap in [(32, 8), (48, 16), (64, 32), (100, 33)]:
            windows = tile_windows(length, tile, overlap)
            assert windows[0][0] == 0 and windows[-1][1] == length
            assert all(stop - start == min(tile, length) for start, stop in windows)
            for (a0, a1), (b0, _) in zip(windows, windows[1:], strict=False):
                assert a0 < b0 and a1 - b0 >= overlap
    assert tile_windows(70, 32, 8) == [(0, 32), (19, 51), (38, 70)]
    with pytest.raises(InputError, match="tile: 16"):
        tile_windows(100, 16, 16)


def test_window_spans_cover_with_the_last_flush():
    assert window_spans(10, 16, 8) == [(0, 10)]
    assert window_spans(40, 16, 8) == [(0, 16), (8, 24), (16, 32), (24, 40)]
    assert window_spans(42, 16, 12) == [(0, 16), (12, 28), (24, 40), (26, 42)]
    with pytest.raises(ValueError):
        window_spans(40, 16, 17)
