"""The detail pass's torch side on the tiny random Stable Diffusion (CPU, few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hypermosaic import registry
from hypermosaic.pipelines.canvas.tiled_vae import encode_tiled
from hypermosaic.pipelines.refine import (
    NOISE_ROWS,
    hold_ramp,
    invert_noise,
    position_noise,
    refine_band,
    refine_timesteps,
)
from hypermosaic.upscale.detail import band_rows
from hypermosaic.upscale.refine import RefineConfig
from hypermosaic.upscale.strips import plan_refine
from tests.helpers import astronaut

NATIVE = 64  # the tiny model's native side: 32 latents, VAE factor 2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    from tests.tiny import tiny_pipeline

    return tiny_pipeline()


def settings(**extra) -> RefineConfig:
    return RefineConfig(**{"prompt": "a red house", "model": "tiny", "steps": 4,
                           "strength": 0.5, "guidance": 6.0, **extra})


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_one_window_equals_diffusers_img2img(pipe, strength):
    """One window over a native-size image is diffusers' img2img on the same latents and
    noise (the noise given; diffusers takes latents as its image and draws from the seed)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    image = astronaut(NATIVE, NATIVE)
    refine = settings(strength=strength)
    plan = plan_refine(NATIVE, NATIVE, 2, NATIVE, refine)
    assert len(plan.bands) == 1 and len(plan.bands[0].columns) == 1
    noise = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(5))
    ours = refine_band(pipe, image, plan.bands[0], plan, refine, noise=noise)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    z0 = encode_tiled(pipe.vae, image, 256, 64)
    theirs = img2img("a red house", image=z0, strength=strength, num_inference_steps=4,
                     guidance_scale=6.0, generator=torch.Generator().manual_seed(5),
                     output_type="latent").images[0]
    np.testing.assert_allclose(ours.latents, theirs.numpy(), atol=1e-4)
    assert ours.pixels.shape == (NATIVE, NATIVE, 3) and ours.pixels.dtype == np.uint8


def test_hold_ramp_holds_half_then_falls():
    m = hold_ramp(8)
    assert list(m[:4]) == [1, 1, 1, 1] and np.all(np.diff(m[4:]) < 0) and m[-1] > 0


def test_noise_field_is_the_same_wherever_it_is_cut():
    whole = position_noise(3, 0, 40, 12, 4)
    part = position_noise(3, 13, 29, 12, 4)
    assert part.shape == (1, 4, 16, 12)
    torch.testing.assert_close(part, whole[:, :, 13:29])
    assert NOISE_ROWS < 16  # the cut above crosses chunks
    assert not torch.equal(position_noise(4, 0, 8, 12, 4), whole[:, :, :8])


def test_inversion_of_a_constant_prediction_finds_that_noise(pipe):
    """With eps(x, t) = e everywhere, DDIM's path is sqrt(a) z0 + sqrt(1 - a) e at every level,
    so the inverted noise is e itself."""
    from hypermosaic.pipelines.models import make_scheduler

    scheduler = make_scheduler("ddim", pipe.scheduler)
    scheduler.set_timesteps(10)
    timesteps = refine_timesteps(scheduler, 10, 0.6)
    z0 = torch.randn((1, 4, 6, 6), generator=torch.Generator().manual_seed(1))
    e = torch.randn((1, 4, 6, 6), generator=torch.Generator().manual_seed(2))
    found = invert_noise(lambda x, t: e, z0, timesteps, scheduler.alphas_cumprod)
    torch.testing.assert_close(found, e, atol=1e-4, rtol=1e-4)


def _refine_array(pipe, image: np.ndarray, refine: RefineConfig, work: Path) -> np.ndarray:
    """The detail pass over an in-memory image, band by band through the work folder."""
    plan = plan_refine(image.shape[0], image.shape[1], 2, NATIVE, refine)

    def refined(band, held):
        rows = image[band.top * 2 : band.bottom * 2]
        return registry.refine_band(pipe, rows, band, plan, refine, held)

    work.mkdir()
    return np.concatenate(list(band_rows(plan, work, refined)))


def _jumps(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean absolute step between neighbouring pixels, per position along ``axis`` (entry i
    is the step from i - 1 to i; entry 0 unused)."""
    diff = np.abs(np.diff(image.astype(np.float64), axis=axis))
    other = tuple(a for a in range(3) if a != axis)
    return np.concatenate([[0.0], diff.mean(axis=other)])


def test_no_seams_across_window_and_band_borders(pipe, tmp_path):
    """The mean jump across every window and band border is no larger than 1.5 times the mean
    jump between neighbouring pixels elsewhere."""
    image = astronaut(160, 160)
    refine = settings(strength=0.6, steps=5)
    out = _refine_array(pipe, image, refine, tmp_path / "work")
    assert out.shape == image.shape
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 1  # it did redraw
    plan = plan_refine(160, 160, 2, NATIVE, refine)
    assert len(plan.bands) > 2 and len(plan.bands[0].columns) > 2
    cols = sorted({e * 2 for left, right in plan.bands[0].columns for e in (left, right)}
                  - {0, 160})
    rows = sorted({e for band in plan.bands for e in (band.top * 2, band.bottom * 2,
                                                       band.emit[0] + band.fade)} - {0, 160})
    for axis, borders in ((1, cols), (0, rows)):
        jumps = _jumps(out, axis)
        inside = np.delete(jumps[1:], [b - 1 for b in borders]).mean()
        assert jumps[borders].mean() <= 1.5 * inside, (axis, jumps[borders], inside)



def test_a_controlnet_at_scale_0_changes_nothing_and_at_1_changes_the_band(pipe):
    """ControlNet Tile conditions each window on its crop of the band's pixels: at scale 0 its
    residuals are zero (the band is the one without it, bit for bit), at scale 1 they show."""
    from tests.tiny import tiny_controlnet

    controlnet = tiny_controlnet()
    image = astronaut(64, 160)
    plan = plan_refine(64, 160, 2, NATIVE, settings())
    band = plan.bands[0]
    assert len(band.columns) > 2  # several windows, each its own crop

    def run(scale: float | None) -> np.ndarray:
        spec = None if scale is None else {"model": "tiny", "scale": scale}
        refine = settings(controlnet=spec)
        return refine_band(pipe, image, band, plan, refine,
                           controlnet=None if scale is None else controlnet).latents

    plain = run(None)
    np.testing.assert_array_equal(run(0.0), plain)
    assert np.abs(run(1.0) - plain).mean() > 1e-3
