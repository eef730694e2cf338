"""Canvas config, plan and mask maths: pure, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypermosaic.canvas import canvas_config_from_dict, load_canvas_config
from hypermosaic.canvas.grid import exclusive_box, grid_box
from hypermosaic.canvas.plan import coverage, plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.identity import SCHEDULER_NAMES
from hypermosaic.pipelines.canvas.masks import (
    gaussian_blur,
    gaussian_profile,
    profile,
    quartic_profile,
    region_weights,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def config(raw: dict, base: Path = Path(".")):
    return canvas_config_from_dict(raw, base=base, source="test.toml")


def region(top=0, bottom=64, left=0, right=64, **extra):
    return {"top": top, "bottom": bottom, "left": left, "right": right, "prompt": "p", **extra}


# --- mask maths -------------------------------------------------------------------------------


def test_constant_profile_is_one_times_the_weight():
    assert np.array_equal(region_weights("constant", 3, 5, 2.5), np.full((3, 5), 2.5, np.float32))


def test_gaussian_profile_matches_its_formula():
    n = 8
    x = (np.arange(n) - 3.5) / n
    expected = np.exp(-x * x / 0.02) / np.sqrt(2 * np.pi * 0.01)
    np.testing.assert_allclose(gaussian_profile(n), expected, rtol=1e-12)
    p = gaussian_profile(9)
    assert p.argmax() == 4 and np.allclose(p, p[::-1])
    assert p[0] > 0 and p[0] < 1e-3 * p[4]
    peak = 1 / np.sqrt(2 * np.pi * 0.01)
    for n, edge in ((8, 2.8e-4), (64, 2.2e-5), (4096, 1.5e-5)):  # as the module says
        p = gaussian_profile(n)
        assert np.isclose(p[0], peak * np.exp(-12.5 * (1 - 1 / n) ** 2), rtol=1e-9)
        assert np.isclose(p[0], edge, rtol=0.05)


def test_quartic_profile_is_the_biweight_kernel_and_positive():
    p = quartic_profile(11)
    u = np.linspace(-0.995, 0.995, 11)
    np.testing.assert_allclose(p, 15 / 16 * (1 - u**2) ** 2, rtol=1e-12)
    assert p.min() > 0 and np.isclose(p.max(), 15 / 16)


def test_region_weights_are_the_outer_product_of_profiles():
    w = region_weights("quartic", 6, 10, 3.0)
    np.testing.assert_allclose(w, 3.0 * np.outer(profile("quartic", 6), profile("quartic", 10)),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="mask_type"):
        profile("cosine", 4)


def test_blur_keeps_constants_and_positivity():
    assert np.allclose(gaussian_blur(np.full((7, 9), 0.3), 2.0), 0.3)
    spot = np.zeros((21, 21), np.float32)
    spot[10, 10] = 1.0
    blurred = gaussian_blur(spot, 2.0)
    assert np.isclose(blurred.sum(), 1.0, atol=1e-5)
    assert blurred[10, 10] == blurred.max() and blurred[10, 16] > 0 and blurred[0, 0] == 0
    assert np.array_equal(gaussian_blur(spot, 0), spot)


# --- geometry ---------------------------------------------------------------------------------


def test_grid_boxes_and_exclusive_parts():
    grid = config({"grid": {"prompt": [["a", "b", "c"], ["d", "e", "f"]], "tile_height": 64,
                            "tile_width": 64, "tile_row_overlap": 16,
                            "tile_col_overlap": 24}}).grid
    assert (grid.height, grid.width) == (112, 144)
    assert grid_box(grid, 1, 2) == (48, 112, 80, 144)
    assert exclusive_box(grid, 0, 0) == (0, 48, 0, 40)
    assert exclusive_box(grid, 1, 1) == (64, 112, 64, 80)
    heavy = config({"grid": {"prompt": [["a", "b", "c"]], "tile_height": 64, "tile_width": 64,
                             "tile_row_overlap": 0, "tile_col_overlap": 32}}).grid
    assert exclusive_box(heavy, 0, 1) is None


# --- configs and plans ------------------------------------------------------------------------


def test_json_example_and_toml_twin_give_the_same_plan():
    """The TOML twin with Mixture of Diffusers' semantics (which JSON input gets, point 4 of
    issue 11) plans the JSON's canvas exactly."""
    from_json = plan_canvas(load_canvas_config(EXAMPLES / "forest.json"))
    from_toml = plan_canvas(load_canvas_config(EXAMPLES / "forest.toml",
                                               {"compat": "mixture-of-diffusers"}))
    assert from_json == from_toml and from_json.compat == "mixture-of-diffusers"
    assert plan_canvas(load_canvas_config(EXAMPLES / "forest.toml")).compat == "hypermosaic"
    assert (from_json.height, from_json.width) == (768, 2816)
    assert len(from_json.prompts) == 10 and from_json.prompts[9].box == (0, 768, 2304, 2816)
    assert {p.guidance for p in from_json.prompts} == {8.0}
    assert from_json.scheduler == "lms" and from_json.cpu_vae and from_json.steps == 50


@pytest.mark.parametrize(("name", "size", "parts"), [
    ("forest.json", (768, 2816), (10, 0, 0)),
    ("forest.toml", (768, 2816), (10, 0, 0)),
    ("landscape.toml", (640, 1408), (3, 0, 0)),
    ("image_region.toml", (800, 352), (1, 0, 1)),
    ("brushes.toml", (512, 768), (0, 3, 0)),
])
def test_canvas_examples_plan(name, size, parts):
    plan = plan_canvas(load_canvas_config(EXAMPLES / name))
    assert (plan.height, plan.width) == size
    assert (len(plan.prompts), len(plan.brushes), len(plan.images)) == parts


def test_prompt_ensembles_parse():
    cfg = config({"width": 64, "height": 64, "regions": [
        region(prompt="a"),
        region(prompt=["a", "b"]),
        region(prompt=[{"text": "a", "weight": 3}, "b"]),
    ]})
    assert [r.prompt for r in cfg.regions] == [
        (("a", 1.0),), (("a", 1.0), ("b", 1.0)), (("a", 3.0), ("b", 1.0))
    ]


def test_json_seed_options_become_noise_edits(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({
        "prompt": [["a", "b"], ["c", "d"]], "tile_height": 64, "tile_width": 64,
        "tile_row_overlap": 16, "tile_col_overlap": 16, "gc_tiles": [[None, 9], [None, None]],
        "scheduler": "ddim",
        "seed_tiles": [[None, 5], [6, None]],
        "seed_tiles_mode": [["full", "exclusive"], ["full", "full"]],
        "seed_reroll_regions": [[0, 32, 0, 32, 77]],
    }))
    plan = plan_canvas(load_canvas_config(path))
    assert [p.guidance for p in plan.prompts] == [7.5, 9.0, 7.5, 7.5]
    edits = [(e.name, e.seed, e.draw, e.write, e.mode) for e in plan.noise_edits]
    assert edits == [  # as Mixture of Diffusers: exclusive noise drawn in the exclusive part
        ("grid.0_1", 5, (0, 48, 64, 112), (0, 48, 64, 112), "reset"),
        ("grid.1_0", 6, (48, 112, 0, 64), (48, 112, 0, 64), "reset"),
        ("regions.0", 77, (0, 32, 0, 32), (0, 32, 0, 32), "reset"),
    ]


def test_scheduler_names_match_the_models_module():
    from hypermosaic.pipelines.models import SCHEDULERS

    assert set(SCHEDULER_NAMES) == set(SCHEDULERS)


@pytest.mark.parametrize(("raw", "message"), [
    ({"width": 64, "height": 64, "regions": [region(bottom=72)]},
     "regions.0.bottom: 72 is outside the canvas (height 64)"),
    ({"width": 64, "height": 64, "regions": [region(left=4)]},
     "regions.0.left: 4 is not a multiple of 8"),
    ({"width": 60, "height": 64, "regions": [region()]}, "width: 60 is not a multiple of 8"),
    ({"grid": {"prompt": [["a", "b"]], "tile_width": 64, "tile_col_overlap": 64}},
     "grid.tile_col_overlap: 64 is as large as the tile"),
    ({"grid": {"prompt": []}}, "grid.prompt: an empty prompt grid"),
    ({"grid": {"prompt": [["a", "b"], ["c"]]}}, "grid.prompt: row 1 has 1 prompts but row 0 "
                                                "has 2"),
    ({"width": 64, "height": 64, "regions": [region(colour="red")]},
     "regions.0.colour: unknown key"),
    ({"width": 64, "height": 64, "regions": [region(prompt=[])]},
     "regions.0.prompt: an empty list of prompts"),
    ({"width": 64, "height": 64, "regions": [{"kind": "reroll", "top": 0, "bottom": 8,
                                               "left": 0, "right": 8, "seed": 1,
                                               "mode": "epsilon"}]},
     'regions.0.noise_eps: must be above 0 for mode = "epsilon"'),
    ({"width": 64, "height": 64, "regions": [{"kind": "image", "top": 0, "bottom": 64,
                                               "left": 0, "right": 64}]},
     "regions.0.image: missing (required)"),
    ({"width": 64, "height": 64, "regions": [{"kind": "image", "bottom": 64, "left": 0,
                                               "right": 64, "image": "x.png"}]},
     "regions.0.top: missing (required)"),
    ({"width": 64, "height": 64, "regions": [region(kind="circle")]},
     "regions.0.kind: 'circle' is not a region kind (use text, image, reroll, brush)"),
    ({"width": 64, "height": 64, "guidance": 60}, "guidance: 60 is outside 0 to 50"),
    ({"width": 64, "height": 64, "regions": [region(mask_weight=1e-40)]},
     "regions.0.mask_weight: 1e-40 is too small: the blend's weights would vanish"),
    ({"width": 64, "height": 64, "regions": [region(mask_weight=1e30)]},
     "regions.0.mask_weight: 1e+30 is too large"),
    ({"width": 64, "height": 64, "regions": [region(mask_weight=float("inf"))]},
     "regions.0.mask_weight: not a finite number"),
    ({"width": 64, "height": 64, "regions": [
        {"kind": "brush", "mask": "m.png", "prompt": "p", "strength": 1e-20}]},
     "regions.0.strength: 1e-20 is too small"),
    ({"width": 64, "height": 64}, None),
])
def test_bad_configs_name_the_file_and_the_key_once(raw, message):
    """One line: the file, the full key once (no "width: width: 60", no "regions.0: left:"),
    what is wrong."""
    with pytest.raises(InputError) as info:
        plan_canvas(config(raw))
    if message is None:
        assert str(info.value).startswith("test.toml: canvas: ")
        assert "covered by no prompt" in str(info.value)
    else:
        assert str(info.value) .startswith(f"test.toml: {message}")
        assert "\n" not in str(info.value)


def test_uncovered_area_is_located():
    with pytest.raises(InputError, match="^test.toml: canvas: .*rows 0-64 and columns 32-64"):
        plan_canvas(config({"width": 64, "height": 64, "regions": [region(right=32)]}))


def test_tiny_and_zero_mask_weights():
    """0 is no weight (allowed where another region covers); the smallest positive weight
    keeps its region's weights normal float32 numbers, whatever the profile and box."""
    from hypermosaic.canvas.regions import WEIGHT_RANGE

    low, high = WEIGHT_RANGE
    plan = plan_canvas(config({"width": 64, "height": 64, "regions": [
        region(), region(mask_weight=0.0), region(mask_weight=low, mask_type="gaussian"),
        region(mask_weight=high, mask_type="quartic")]}))
    assert [p.mask_weight for p in plan.prompts] == [1.0, 0.0, low, high]
    smallest = region_weights("gaussian", 2048, 2048, low)
    assert smallest.min() > np.finfo(np.float32).tiny
    assert np.isfinite(region_weights("gaussian", 8, 8, high) * 100).all()


def test_mask_of_the_wrong_size_is_named(tmp_path):
    Image.new("L", (32, 64), 255).save(tmp_path / "m.png")
    raw = {"width": 64, "height": 64,
           "regions": [{"kind": "brush", "mask": "m.png", "prompt": "p"}]}
    with pytest.raises(InputError, match=r"^test.toml: regions.0.mask: .*m.png is 32x64 but "
                                         r"the canvas is 64x64"):
        plan_canvas(config(raw, base=tmp_path))


def test_brush_masks_and_background_cover_the_canvas(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(tmp_path / "left.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[40:, :, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "bottom.png")
    raw = {"width": 64, "height": 64, "regions": [
        {"kind": "brush", "mask": "left.png", "prompt": "l"},
        {"kind": "brush", "mask": "bottom.png", "prompt": "b"},
    ]}
    with pytest.raises(InputError, match="covered by no prompt"):
        plan_canvas(config(raw, base=tmp_path))
    plan = plan_canvas(config({**raw, "background": {"prompt": "bg"}}, base=tmp_path))
    left, bottom, background = plan.brushes
    assert np.allclose(left.cells[:, 2], 0.5) and np.allclose(left.cells[:, :2], 1)
    assert np.allclose(bottom.cells[5:], 1) and np.allclose(bottom.cells[:5], 0)
    assert np.allclose(background.cells, 1 - np.clip(left.cells + bottom.cells, 0, 1))
    assert coverage(plan).all() and not background.bootstrap


def test_json_errors_use_the_json_keys(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"prompt": [["a"]], "tile_height": 64, "tile_width": 64,
                                "tile_row_overlap": 0, "tile_col_overlap": 0,
                                "gc_tiles": [[1, 2]]}))
    with pytest.raises(InputError, match="bad.json: gc_tiles: its rows do not match"):
        load_canvas_config(path)
    path.write_text(json.dumps({"prompt": [["a"]], "guidance": 3}))
    with pytest.raises(InputError, match="bad.json: guidance: unknown key"):
        load_canvas_config(path)


GENERATE_GRID_LOG = {  # what Mixture of Diffusers' generate_grid.py logs (prompts shortened)
    "prompt": [["space", "an archway", "a supernova", "an archway", "space"],
               ["a portal", "space", "a hooded figure", "space", "a city"]],
    "tile_height": 640, "tile_width": 640, "tile_row_overlap": 256, "tile_col_overlap": 256,
    "scheduler": "lms", "seed": 4821955176, "gc": 8, "steps": 100,
    "gc_tiles": [[None, 8.0, None, None, None], [None, None, 8.0, None, 6.0]],
    "seed_tiles": [[None, None, None, None, None], [9210074984, None, None, None, 9546803418]],
    "seed_tiles_mode": "full",
    "seed_reroll_regions": [[0, 366, 990, 1228, 8979961135], [759, 1022, 1200, 1348, 2737442638]],
    "cpu_vae": True,
    "git_commit": "aaec4f4c4ed58ed7cd5e10f8f60fe3657e7e7a0e",
}


def test_generate_grid_logs_load_as_they_are(tmp_path):
    path = tmp_path / "log.json"
    path.write_text(json.dumps(GENERATE_GRID_LOG))
    plan = plan_canvas(load_canvas_config(path))
    assert (plan.height, plan.width) == (1024, 2176) and plan.steps == 100
    rerolls = [(e.seed, e.draw, e.write) for e in plan.noise_edits if e.name.startswith("regions")]
    assert rerolls == [  # pixel coordinates floored to the 8-pixel latent grid, as there
        (8979961135, (0, 360, 984, 1224), (0, 360, 984, 1224)),
        (2737442638, (752, 1016, 1200, 1344), (752, 1016, 1200, 1344)),
    ]
    path.write_text(json.dumps({**GENERATE_GRID_LOG, "git_comit": "abc"}))
    with pytest.raises(InputError, match="log.json: git_comit: unknown key"):
        load_canvas_config(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"seed_reroll_regions": [[0, 8, 0, 8, 1], [100, 90, 0, 8, 1]]},
     r"seed_reroll_regions\[1\]: rows 100-90 end before they start"),
    ({"seed_reroll_regions": [[-8, 8, 0, 8, 1]]},
     r"seed_reroll_regions\[0\]: top -8 is outside the canvas"),
    ({"gc": float("nan")}, "gc: not a number"),
    ({"tile_col_overlap": 640}, r"tile_col_overlap: 640 is as large as the tile"),
    ({"seed_reroll_regions": [[0, 8, 0, 8, -1]]},
     r"seed_reroll_regions\[0\]\[4\]: Input should be greater than or equal to 0"),
    ({"seed_tiles_mode": [1]}, "seed_tiles_mode: a mode .* or a grid of modes"),
    ({"seed_tiles_mode": [["full"] * 5, ["full", 1, "full", "full", "full"]]},
     "seed_tiles_mode: 1 is not a seed mode"),
])
def test_bad_generate_grid_logs_name_the_json_key(tmp_path, change, message):
    path = tmp_path / "log.json"
    path.write_text(json.dumps({**GENERATE_GRID_LOG, **change}))
    with pytest.raises(InputError, match=f"log.json: {message}"):
        load_canvas_config(path)


def test_image_and_brush_examples_load_their_files():
    image = plan_canvas(load_canvas_config(EXAMPLES / "image_region.toml")).images[0]
    assert image.box == (448, 800, 0, 352) and image.pixels.shape == (352, 352, 3)
    assert image.strength == 0.2
    brushes = plan_canvas(load_canvas_config(EXAMPLES / "brushes.toml")).brushes
    assert [b.name for b in brushes] == ["regions.0", "regions.1", "background"]
    assert brushes[1].prompt == (("photo of a giraffe that looks like a frog", 1.0),
                                 ("photo of a frog that looks like a giraffe", 1.0))
    assert 0 < brushes[0].cells.mean() < 0.1 and brushes[1].blur == 16


# --- Mixture of Diffusers configs as they are (issue 11) --------------------------------------


def mod_json(tmp_path, **values) -> Path:
    path = tmp_path / "mod.json"
    path.write_text(json.dumps({"prompt": [["a", "b"]], "tile_height": 512, "tile_width": 512,
                                "tile_row_overlap": 256, "tile_col_overlap": 256, "gc": 8,
                                "scheduler": "lms", "seed": 1, "steps": 10, **values}))
    return path


def load_warning_lines(path: Path, overrides=None):
    import warnings

    from hypermosaic.canvas import CanvasWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_canvas_config(path, overrides)
    return config, [str(w.message) for w in caught if w.category is CanvasWarning]


def test_json_overlap_not_a_multiple_of_8_is_floored_as_there(tmp_path):
    """overlap 100: tile edges at 412 px become 408 (latent 51), the 924 px canvas 920."""
    path = mod_json(tmp_path, tile_col_overlap=100)
    loaded, lines = load_warning_lines(path)
    plan = plan_canvas(loaded)
    assert (plan.height, plan.width) == (512, 920)
    assert [p.box for p in plan.prompts] == [(0, 512, 0, 512), (0, 512, 408, 920)]
    assert lines == [f"{path}: tile_col_overlap: 100 is not a multiple of 8: as in Mixture of "
                     "Diffusers, tile edges are floored to multiples of 8, and the canvas is "
                     "920x512 px"]
    toml = {"grid": {"prompt": [["a", "b"]], "tile_col_overlap": 100}}
    with pytest.raises(InputError, match="test.toml: grid.tile_col_overlap: 100 is not a "
                                         "multiple of 8"):
        config(toml)  # our own configs keep their rule


def test_json_guidance_above_50_and_reroll_boxes_past_the_canvas_run(tmp_path):
    path = mod_json(tmp_path, prompt=[["a", "b", "c"]], gc=60, gc_tiles=[[None, 75.5, None]],
                    seed_reroll_regions=[
        [0, 366, 990, 1028, 3],     # floored to 1024: on the 1024 px canvas, as there
        [0, 8, 1000, 1400, 4],      # past the canvas: clipped (there: an error)
        [0, 8, 3, 7, 5],            # floored to nothing: changes nothing (as there)
    ])
    loaded, lines = load_warning_lines(path)
    plan = plan_canvas(loaded)
    assert [p.guidance for p in plan.prompts] == [60.0, 75.5, 60.0]
    assert [(e.seed, e.draw) for e in plan.noise_edits] == [(3, (0, 360, 984, 1024)),
                                                           (4, (0, 8, 1000, 1024))]
    assert lines == [
        f"{path}: seed_reroll_regions[1]: reaches past the 1024x512 px canvas and is clipped "
        "to it (Mixture of Diffusers stops with an error there)",
        f"{path}: seed_reroll_regions[2]: holds no latent position of the 1024x512 px canvas "
        "once floored to multiples of 8; it changes nothing",
    ]
    with pytest.raises(InputError, match="test.toml: grid.guidance: 60 is outside 0 to 50"):
        config({"grid": {"prompt": [["a"]], "guidance": 60}})


@pytest.mark.parametrize(("values", "line"), [
    ({"gc": 1}, "gc: 1 is 1 or less, where Mixture of Diffusers stops with an error; here "
                "every tile is still guided, at its gc_tiles or gc"),
    ({"scheduler": "euler"}, "scheduler: 'euler' is not one Mixture of Diffusers knows (ddim, "
                             "lms); hypermosaic's, from the model's scheduler config, is used"),
    ({"scheduler": None}, "scheduler: missing, which Mixture of Diffusers refuses (it takes "
                          "ddim or lms); the model's own scheduler is used"),
])
def test_json_settings_that_run_otherwise_warn_in_one_line(tmp_path, values, line):
    raw = json.loads(mod_json(tmp_path).read_text())
    raw.update(values)
    if values.get("scheduler", "") is None:
        del raw["scheduler"]
    path = tmp_path / "mod.json"
    path.write_text(json.dumps(raw))
    assert load_warning_lines(path)[1] == [f"{path}: {line}"]


def test_forest_example_loads_without_warnings():
    assert load_warning_lines(EXAMPLES / "forest.json")[1] == []


def mod_exclusive_reference(rows, cols, tile_h, tile_w, over_h, over_w, row, col):
    """Mixture of Diffusers' exclusive latent indices of tile (row, col), re-derived from its
    description: start from the tile, and for every tile in another row and another column
    remove that tile's rows and columns, as single intervals (an interval that would vanish
    or split is its error: None)."""
    def span(index, side, overlap):
        start = index * (side - overlap)
        return start // 8, (start + side) // 8

    def minus(a, b):
        if a[1] <= b[0] or a[0] >= b[1]:
            return a
        if b[0] <= a[0] and b[1] >= a[1] or (a[0] < b[0] and a[1] > b[1]):
            raise ValueError(b)
        return (a[0], b[0]) if a[0] < b[0] else (b[1], a[1])

    r_seg, c_seg = span(row, tile_h, over_h), span(col, tile_w, over_w)
    try:
        for r in range(rows):
            for c in range(cols):
                if r != row and c != col:
                    r_seg = minus(r_seg, span(r, tile_h, over_h))
                    c_seg = minus(c_seg, span(c, tile_w, over_w))
    except ValueError:
        return None
    return tuple(8 * v for v in (*r_seg, *c_seg))


@pytest.mark.parametrize(("rows", "cols", "over_h", "over_w"), [
    (1, 3, 0, 40), (3, 1, 24, 0), (2, 2, 16, 24), (3, 3, 16, 20), (3, 3, 32, 32),
    (2, 4, 40, 12), (4, 3, 24, 36),
])
def test_mod_exclusive_boxes_follow_its_rule(rows, cols, over_h, over_w):
    from hypermosaic.canvas.grid import mod_exclusive_box

    raw = {"compat": "mixture-of-diffusers", "grid": {
        "prompt": [["p"] * cols] * rows, "tile_height": 64, "tile_width": 72,
        "tile_row_overlap": over_h, "tile_col_overlap": over_w}}
    grid = config(raw).grid
    for row in range(rows):
        for col in range(cols):
            expected = mod_exclusive_reference(rows, cols, 64, 72, over_h, over_w, row, col)
            assert mod_exclusive_box(grid, row, col) == expected, (row, col)


def test_exclusive_seeds_that_change_nothing_are_named():
    from hypermosaic.canvas.grid import seed_notes

    grid = {"prompt": [["a", "b", "c"]], "tile_height": 32, "tile_width": 64,
            "tile_row_overlap": 0, "tile_col_overlap": 32, "seed_tiles_mode": "exclusive",
            "tiles": [{"row": 0, "col": 0, "seed": 4}, {"row": 0, "col": 1, "seed": 5}]}
    ours = config({"grid": grid})
    assert seed_notes(ours) == [
        'grid tile (0, 1): its seed 5 changes nothing: seed mode "exclusive" redraws only the '
        "part of a tile that no other tile covers, and the overlaps leave this one none"]
    assert [e.name for e in plan_canvas(ours).noise_edits] == ["grid.0_0"]
    theirs = config({"grid": grid, "compat": "mixture-of-diffusers"})
    assert seed_notes(theirs)[0].startswith('grid tile (0, 0): seed mode "exclusive" redraws '
                                            "the whole tile on a grid of one row")
    edits = plan_canvas(theirs).noise_edits  # one row: nothing clips a tile there
    assert [(e.name, e.draw, e.write) for e in edits] == [
        ("grid.0_0", (0, 32, 0, 64), (0, 32, 0, 64)), ("grid.0_1", (0, 32, 32, 96),
                                                       (0, 32, 32, 96))]
    full = config({"grid": {**grid, "seed_tiles_mode": "full"}})
    assert seed_notes(full) == []


def test_mod_noise_edits_reset_rerolls_first(tmp_path):
    """Its canvas pipeline: reset rerolls, then the regions' noise_eps, then epsilon rerolls;
    ours keeps the config's order."""
    regions = [
        region(noise_eps=0.1, seed=1),
        {"kind": "reroll", "top": 0, "bottom": 8, "left": 0, "right": 8, "seed": 2,
         "mode": "epsilon", "noise_eps": 0.2},
        {"kind": "reroll", "top": 0, "bottom": 8, "left": 0, "right": 8, "seed": 3},
    ]
    raw = {"width": 64, "height": 64, "regions": regions}
    ours = [e.seed for e in plan_canvas(config(raw)).noise_edits]
    theirs = [e.seed for e in plan_canvas(config({**raw, "compat": "mixture-of-diffusers"}))
              .noise_edits]
    assert (ours, theirs) == ([2, 3, 1], [3, 1, 2])
