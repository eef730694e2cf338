"""Sigma schedules: ``<sampler>_karras``, ``_exponential`` and ``_beta`` are diffusers' own flags
on the sampler, space its noise levels otherwise than the plain one, and run."""

from __future__ import annotations

from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from hypermosaic.build.config import build_config_from_dict
from hypermosaic.canvas.config import canvas_config_from_dict
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.identity import SCHEDULER_NAMES, SIGMA_SCHEDULES
from hypermosaic.pipelines.canvas import render_canvas
from hypermosaic.pipelines.models import SAMPLERS, make_scheduler
from tests.tiny import tiny_pipeline

SPACED = [name for name in SCHEDULER_NAMES if name.endswith(SIGMA_SCHEDULES)]


@pytest.fixture(scope="module")
def config(tiny_dir: Path) -> dict:
    return diffusers.DDIMScheduler.load_config(tiny_dir / "scheduler")


def _sigmas(scheduler: object, steps: int = 12) -> np.ndarray:
    scheduler.set_timesteps(steps)  # type: ignore[attr-defined]
    return scheduler.sigmas.numpy()  # type: ignore[attr-defined]


def test_every_sampler_with_sigma_flags_has_each_schedule() -> None:
    assert len(SPACED) == 21
    for name in SPACED:
        sampler, _, spacing = name.rpartition("_")
        assert sampler in SAMPLERS and spacing in SIGMA_SCHEDULES


@pytest.mark.parametrize("name", SPACED)
def test_a_schedule_is_diffusers_flag_and_differs_from_the_plain_sampler(name: str,
                                                                         config: dict) -> None:
    sampler, _, spacing = name.rpartition("_")
    scheduler = make_scheduler(name, config)
    class_name, overrides = SAMPLERS[sampler]
    assert type(scheduler).__name__ == class_name
    assert scheduler.config[f"use_{spacing}_sigmas"]
    theirs = getattr(diffusers, str(class_name)).from_config(
        config, **overrides, **{f"use_{spacing}_sigmas": True})
    np.testing.assert_array_equal(_sigmas(scheduler), _sigmas(theirs))
    plain = _sigmas(make_scheduler(sampler, config))
    assert plain.shape != _sigmas(scheduler).shape or not np.allclose(plain, _sigmas(scheduler))


def test_a_schedule_overrides_the_spacing_a_model_config_sets(config: dict) -> None:
    """A model whose own config asks for Karras sigmas can still run exponential ones."""
    karras = make_scheduler("euler_karras", config)
    exponential = make_scheduler("euler_exponential", karras)
    assert exponential.config.use_exponential_sigmas
    assert not exponential.config.use_karras_sigmas


def test_an_unknown_schedule_is_one_line_naming_the_key(tmp_path: Path) -> None:
    raw = {"engine": "diffusion", "primary": {"prompt": "a"},
           "diffusion": {"model": "m", "scheduler": "dpm++2m_polyexponential"}}
    with pytest.raises(InputError) as error:
        build_config_from_dict(raw, base=tmp_path, source="c.toml")
    message = str(error.value)
    assert message.startswith("c.toml: diffusion.scheduler:") and "\n" not in message
    assert "'dpm++2m_karras'" in message
    with pytest.raises(InputError, match="unknown scheduler 'dpm_fast'"):
        make_scheduler("dpm_fast", {})


@pytest.mark.parametrize("name", ["dpm++2m_karras", "dpm++2m_sde_karras", "heun_beta"])
def test_a_canvas_runs_with_a_schedule(name: str, tmp_path: Path) -> None:
    """The canvas loop steps a spaced (second-order, stochastic) scheduler on its latents."""
    raw = {"steps": 3, "scheduler": name, "seed": 4,
           "grid": {"prompt": [["moss", "stone"]], "tile_height": 32, "tile_width": 32,
                    "tile_row_overlap": 16, "tile_col_overlap": 16}}
    pipe = tiny_pipeline()
    plans = {scheduler: plan_canvas(canvas_config_from_dict(
        {**raw, "scheduler": scheduler}, base=tmp_path, source="c.toml"))
        for scheduler in (name, name.rpartition("_")[0])}
    with torch.no_grad():
        spaced, plain = (render_canvas(pipe, plan, None) for plan in plans.values())
    assert spaced.shape == (32, 48, 3) and spaced.dtype == np.uint8
    assert not np.array_equal(spaced, plain)
