"""A painting as a canvas config and back: the stream's plan is the exported config's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hypermosaic.canvas import load_canvas_config, plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.paint import Painting, blank_painting, read_painting, write_config
from hypermosaic.paint.painting import plan_painting


def painted(photo: bool = False) -> Painting:
    painting = blank_painting("some/model", 96, 64, steps=3, seed=9)
    mask = painting.empty_mask()
    mask[8:40, 16:56] = 255
    painting = painting.with_mask(1, mask)
    if photo:
        rows = np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None]
        painting = dataclasses.replace(painting, photo=np.broadcast_to(rows, (64, 96, 3)).copy())
    return dataclasses.replace(painting, background='a "quoted" wall \\ ünïcode')


@pytest.mark.parametrize("photo", [False, True])
def test_the_exported_config_plans_what_the_stream_paints(tmp_path, photo):
    painting = painted(photo)
    plan = plan_painting(painting, tmp_path / "session")
    path = write_config(painting, tmp_path / "export")
    exported = plan_canvas(load_canvas_config(path))
    assert exported == plan
    assert [b.digest for b in exported.brushes] == [b.digest for b in plan.brushes]
    assert (plan.background is not None) == photo
    back = read_painting(path)
    assert back == painting
    for a, b in zip(back.brushes, painting.brushes, strict=True):
        assert np.array_equal(a.mask, b.mask)
    assert photo == (back.photo is not None)


def test_a_bad_mask_or_config_is_one_line(tmp_path):
    painting = painted()
    with pytest.raises(InputError, match="mask: 8x8 but the canvas is 96x64"):
        painting.with_mask(0, np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="no brush 7"):
        painting.with_mask(7, painting.empty_mask())
    toml = tmp_path / "text.toml"
    toml.write_text('model = "m"\nwidth = 64\nheight = 64\n[[regions]]\ntop = 0\nbottom = 64\n'
                    'left = 0\nright = 64\nprompt = "a"\n')
    with pytest.raises(InputError, match="regions.0: a painting has only brushes"):
        read_painting(toml)
    with pytest.raises(InputError, match="--width: 100"):
        blank_painting("m", 100, 64)
