"""A `[background]` prompt with no brush: one prompt over the whole canvas, in sliding windows
of the model's size (what `hypermosaic frame`'s detail pass paints with)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hypermosaic.canvas import canvas_config_from_dict, plan_canvas
from hypermosaic.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _plan(raw: dict, base: Path = Path(".")):
    return plan_canvas(canvas_config_from_dict(raw, base=base, source="test"))


def test_a_background_alone_equals_a_brush_over_the_whole_canvas(tmp_path):
    from PIL import Image

    from hypermosaic.pipelines.canvas import render_canvas
    from tests.tiny import tiny_pipeline

    Image.new("L", (128, 96), 255).save(tmp_path / "all.png")
    base = {"width": 128, "height": 96, "steps": 2, "seed": 3}  # 3x2 windows of the model's 64
    alone = _plan({**base, "background": {"prompt": "a red house"}})
    brush = _plan({**base, "regions": [{"kind": "brush", "mask": "all.png",
                                        "prompt": "a red house"}]}, base=tmp_path)
    pipe = tiny_pipeline()
    np.testing.assert_array_equal(render_canvas(pipe, alone), render_canvas(pipe, brush))


def test_a_background_over_a_grid_still_needs_brushes():
    raw = {"grid": {"prompt": [["a", "b"]], "tile_width": 64, "tile_height": 64,
                    "tile_col_overlap": 32, "tile_row_overlap": 0},
           "background": {"prompt": "c"}}
    with pytest.raises(InputError) as error:
        _plan(raw)
    assert str(error.value) == ("test: background: a background prompt over a [grid] needs "
                                "brush regions (the grid's tiles cover the whole canvas)")
