"""Inpainting engine (`hypermosaic.pipelines.inpaint`) on tiny random models, CPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from hypermosaic.errors import BuildError, InputError
from hypermosaic.pipelines.inpaint import (
    InpaintEngine,
    InpaintJob,
    composite,
    feather_weights,
)
from tests.tiny import (
    save_tiny_inpaint_pipeline,
    save_tiny_pipeline,
    tiny_inpaint_pipeline,
    tiny_pipeline,
)

H, W = 32, 40


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inpaint-models")
    return {"inpainting": save_tiny_inpaint_pipeline(root / "inpainting"),
            "sd": save_tiny_pipeline(root / "sd")}


@pytest.fixture(scope="module", params=["inpainting", "sd"])
def engine(request: pytest.FixtureRequest, models: dict[str, Path]) -> InpaintEngine:
    return InpaintEngine(str(models[request.param]), device="cpu", batch_size=4)


def _job(**changes: Any) -> InpaintJob:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[8:24, 12:30] = 255
    fields: dict[str, Any] = {"image": image, "mask": mask, "prompt": "a deer in the grass",
                              "negative_prompt": "blurry", "steps": 4, "guidance": 5.0,
                              "strength": 1.0, "seeds": (3, 11, 42), "feather": 4}
    return InpaintJob(**{**fields, **changes})


def test_route_follows_unet_channels(models: dict[str, Path]) -> None:
    assert not InpaintEngine(str(models["inpainting"]), device="cpu").latent_blending
    sd = InpaintEngine(str(models["sd"]), device="cpu")
    assert sd.latent_blending
    assert type(sd.pipe).__name__ == "StableDiffusionInpaintPipeline"


@pytest.mark.parametrize("strength", [1.0, 0.75])
def test_equals_diffusers_inpaint_pipeline(engine: InpaintEngine, strength: float) -> None:
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    job = _job(strength=strength)
    ours = engine.paint(job, output_type="latent")
    components = (tiny_pipeline() if engine.latent_blending else tiny_inpaint_pipeline()).components
    reference = StableDiffusionInpaintPipeline(**components)
    reference.set_progress_bar_config(disable=True)
    n = len(job.seeds)
    theirs = reference(
        prompt=[job.prompt] * n,
        negative_prompt=[job.negative_prompt] * n,
        image=[Image.fromarray(job.image)] * n,  # one image per candidate, as the engine does
        mask_image=[Image.fromarray(job.mask)] * n,
        height=H,
        width=W,
        strength=strength,
        num_inference_steps=job.steps,
        guidance_scale=job.guidance,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in job.seeds],
        output_type="latent",
    ).images
    assert ours.shape == theirs.shape == (n, 4, H // 2, W // 2)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_outside_the_mask_is_the_input(engine: InpaintEngine) -> None:
    job = _job()
    out = engine.candidates(job)
    outside = job.mask == 0
    assert out.shape == (len(job.seeds), H, W, 3) and out.dtype == np.uint8
    assert all(np.array_equal(candidate[outside], job.image[outside]) for candidate in out)
    assert (out[:, ~outside] != job.image[~outside]).any()


def test_seeds_decide_the_candidates(engine: InpaintEngine) -> None:
    job = _job()
    out = engine.candidates(job)
    assert (out[0] != out[1]).any() and (out[1] != out[2]).any()
    again = engine.candidates(_job(seeds=(job.seeds[1],)))
    assert np.array_equal(again[0], out[1])


def test_batched_equals_one_at_a_time(engine: InpaintEngine) -> None:
    job = _job()
    batched = engine.candidates(job).astype(int)
    for index, seed in enumerate(job.seeds):
        alone = engine.candidates(_job(seeds=(seed,)))[0].astype(int)
        assert np.abs(batched[index] - alone).max() <= 1


def test_bool_mask_equals_uint8_mask(engine: InpaintEngine) -> None:
    job = _job(seeds=(5,))
    as_bool = engine.candidates(_job(seeds=(5,), mask=job.mask > 0))
    assert np.array_equal(as_bool, engine.candidates(job))


def test_feather_weights() -> None:
    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:12] = True  # touches the right border
    w = feather_weights(mask, 3)
    assert (w[~mask] == 0).all()
    assert w[2, 5] == pytest.approx(1 / 3) and w[3, 5] == pytest.approx(2 / 3) and w[5, 5] == 1
    assert w[5, 11] == 1  # the image border is not an edge
    assert np.array_equal(feather_weights(mask, 0), mask.astype(float))


def test_composite_is_exact_where_weight_is_zero() -> None:
    rng = np.random.default_rng(1)
    image, painted = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    weights = np.zeros((8, 8))
    weights[2:6, 2:6] = 0.5
    out = composite(painted, image, weights)
    assert np.array_equal(out[weights == 0], image[weights == 0])
    expected = np.rint((painted[3, 3].astype(float) + image[3, 3]) / 2)
    assert np.array_equal(out[3, 3], expected.astype(np.uint8))


def test_nan_never_reaches_an_image(engine: InpaintEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def poisoned(self: Any, **kwargs: Any) -> SimpleNamespace:
        images = np.zeros((len(kwargs["prompt"]), H, W, 3), np.float32)
        images[-1, 0, 0, 0] = np.nan
        return SimpleNamespace(images=images)

    monkeypatch.setattr(type(engine.pipe), "__call__", poisoned)
    with pytest.raises(BuildError, match=r"^inpaint: NaN or infinite pixels from seed\(s\) 42 "):
        engine.candidates(_job())


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"mask": np.full((H, W + 8), 255, np.uint8)}, InputError,
         "mask: 48x32 px but the image is 40x32 px"),
        ({"mask": np.zeros((H, W), np.uint8)}, InputError, "mask: empty (no pixel to repaint)"),
        ({"mask": np.full((H, W), 127, np.uint8)}, InputError,
         "mask: empty (no pixel to repaint)"),
        ({"image": np.zeros((H, W + 4, 3), np.uint8), "mask": np.full((H, W + 4), 255, np.uint8)},
         InputError, "image: 44x32 px: sides must be multiples of 8 for Stable Diffusion"),
        ({"image": np.zeros((H, W, 3), np.float32)}, ValueError,
         "image: expected (H, W, 3) uint8, got (32, 40, 3) float32"),
        ({"mask": np.zeros((H, W), np.float32)}, ValueError,
         "mask: expected (H, W) uint8 or bool, got (32, 40) float32"),
        ({"seeds": ()}, ValueError, "seeds: at least one seed is needed"),
        ({"strength": 0.0}, InputError, "strength: 0.0 (must be in (0, 1])"),
        ({"steps": 4, "strength": 0.2}, InputError,
         "steps: 4 at strength 0.2 leaves no denoising step"),
        ({"feather": -1}, InputError, "feather: -1 px (must be at least 0)"),
    ],
)
def test_bad_inputs(models: dict[str, Path], changes: dict[str, Any], error: type[Exception],
                    message: str) -> None:
    engine = InpaintEngine.__new__(InpaintEngine)  # check_inputs needs no model
    with pytest.raises(error) as raised:
        engine.check_inputs(_job(**changes))
    assert type(raised.value) is error and str(raised.value) == message


def test_model_that_cannot_inpaint(tmp_path: Path) -> None:
    lcm = save_tiny_pipeline(tmp_path / "lcm", kind="lcm")
    with pytest.raises(InputError, match="LatentConsistencyModelPipeline models have no inpaint"):
        InpaintEngine(str(lcm), device="cpu")
