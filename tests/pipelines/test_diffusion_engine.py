"""The diffusion engine on the tiny model: batching never changes a tile, seeds decide the noise."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from hypermosaic.build.engines import PrimaryJob, TileContext, TileJob
from hypermosaic.errors import InputError
from hypermosaic.pipelines.img2img import DiffusionEngine, to_uint8
from tests.tiny import save_tiny_pipeline

torch.set_num_threads(1)

SIZE = 64
# batching changes the order of float sums inside the UNet: at most one level in uint8
BATCH_TOLERANCE = 1


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> DiffusionEngine:
    return DiffusionEngine(str(tiny_dir), batch_size=3, device="cpu")


@pytest.fixture(scope="module")
def inits() -> np.ndarray:
    """Smooth colour fields, like upsampled tiles."""
    ramp = np.linspace(0, 1, SIZE, dtype=np.float32)
    tiles = []
    for k in range(6):
        r = np.outer(ramp, np.ones(SIZE)) * (0.3 + 0.1 * k)
        g = np.outer(np.ones(SIZE), ramp) * (1 - 0.1 * k)
        b = np.full((SIZE, SIZE), 0.15 * k)
        tiles.append(np.stack([r, g, b], axis=-1))
    return to_uint8(np.stack(tiles))


@pytest.fixture(scope="module")
def context(inits: np.ndarray) -> TileContext:
    return TileContext(parent=inits[0], grid=2, primary=inits[0])


def job(index: int, seed: int | None = None, **settings) -> TileJob:
    values = {
        "prompt": f"tile {index % 2}",
        "negative_prompt": "blurry" if index % 3 else "",
        "strength": 0.75,
        "steps": 4,
        "guidance": 7.5,
    }
    values.update(settings)
    return TileJob(address=((index // 2, index % 2),), seed=1000 + index if seed is None
                   else seed, **values)


def one_by_one(engine: DiffusionEngine, inits, jobs, context) -> np.ndarray:
    return np.concatenate([engine.tiles(inits[i : i + 1], [jobs[i]], context)
                           for i in range(len(jobs))])


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= BATCH_TOLERANCE


def test_batched_equals_one_by_one(engine, inits, context) -> None:
    jobs = [job(i) for i in range(5)]
    batched = engine.tiles(inits[:5], jobs, context)
    assert batched.shape == (5, SIZE, SIZE, 3) and batched.dtype == np.uint8
    assert_close(batched, one_by_one(engine, inits[:5], jobs, context))


def test_ancestral_sampler_batched_equals_one_by_one(tiny_dir, inits, context) -> None:
    """Euler ancestral draws fresh noise every step: from each tile's own generator."""
    ancestral = DiffusionEngine(str(tiny_dir), scheduler="euler_ancestral", batch_size=4,
                                device="cpu")
    jobs = [job(i) for i in range(4)]
    assert_close(ancestral.tiles(inits[:4], jobs, context),
                 one_by_one(ancestral, inits[:4], jobs, context))


def test_seed_decides_the_tile(engine, inits, context) -> None:
    same = np.stack([inits[2]] * 3)
    jobs = [job(2, seed=5), job(2, seed=5), job(2, seed=6)]
    out = engine.tiles(same, jobs, context)
    assert_close(out[0], out[1])
    assert np.abs(out[0].astype(int) - out[2].astype(int)).mean() > 2
    again = engine.tiles(same[:1], jobs[:1], context)
    np.testing.assert_array_equal(engine.tiles(same[:1], jobs[:1], context), again)


@pytest.mark.slow
def test_mixed_settings_match_separate_runs(engine, inits, context) -> None:
    jobs = [job(0), job(1, strength=0.5), job(2, steps=6), job(3, guidance=3.0),
            job(4, strength=0.5), job(5)]
    mixed = engine.tiles(inits, jobs, context)
    assert_close(mixed, one_by_one(engine, inits, jobs, context))
    plain = engine.tiles(inits[1:2], [job(1)], context)
    assert np.abs(mixed[1].astype(int) - plain[0].astype(int)).mean() > 1


def test_calls_grouped_by_settings_and_chunked(engine, inits, context, monkeypatch) -> None:
    """Seven tiles, two settings (4 + 3 tiles), batch 3: calls of 3, 1 and 3 tiles."""
    pipe_class = type(engine.img2img)
    calls: list[tuple[int, float]] = []
    encoded: list[list[str]] = []
    original_call, original_encode = pipe_class.__call__, pipe_class.encode_prompt

    @functools.wraps(original_call)
    def call(self, *args, **kwargs):
        calls.append((kwargs["image"].shape[0], kwargs["strength"]))
        return original_call(self, *args, **kwargs)

    @functools.wraps(original_encode)
    def encode(self, *args, **kwargs):
        if kwargs.get("prompt_embeds") is None:  # the pipeline re-enters with our embeddings
            encoded.append(kwargs["prompt"])
        return original_encode(self, *args, **kwargs)

    monkeypatch.setattr(pipe_class, "__call__", call)
    monkeypatch.setattr(pipe_class, "encode_prompt", encode)
    tiles = np.concatenate([inits, inits[:1]])
    jobs = [job(i, strength=0.5 if i % 2 else 0.75) for i in range(7)]
    engine.tiles(tiles, jobs, context)
    assert calls == [(3, 0.75), (1, 0.75), (3, 0.5)]
    assert encoded == [["tile 0", "tile 0", "tile 1", "tile 1"]]


def test_zero_strength_keeps_the_tile(engine, inits, context) -> None:
    out = engine.tiles(inits[:2], [job(0, strength=0.0), job(1, strength=0.1, steps=5)], context)
    np.testing.assert_array_equal(out, inits[:2])


def test_no_guidance_ignores_negative_prompt(engine, inits, context) -> None:
    """guidance <= 1 (few-step models) runs without classifier-free guidance."""
    jobs = [job(0, guidance=1.0, negative_prompt=""), job(0, guidance=1.0, negative_prompt="x")]
    out = engine.tiles(np.stack([inits[0]] * 2), jobs, context)
    assert_close(out[0], out[1])
    guided = engine.tiles(inits[:1], [job(0, guidance=7.5, negative_prompt="x")], context)
    assert np.abs(guided[0].astype(int) - out[1].astype(int)).mean() > 1


def test_primary_is_deterministic_and_matches_the_pipeline(engine) -> None:
    primary = PrimaryJob(seed=3, prompt="a turtle", negative_prompt="", steps=3, guidance=7.5,
                         size=SIZE)
    image = engine.primary(primary)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(engine.primary(primary), image)
    other = engine.primary(PrimaryJob(**{**primary.__dict__, "seed": 4}))
    assert np.abs(other.astype(int) - image.astype(int)).mean() > 2
    direct = engine.text2img(
        "a turtle", negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=3,
        guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(3), output_type="np",
    ).images[0]
    assert_close(image, to_uint8(direct))


def test_sdxl_two_text_encoders(tmp_path, inits, context) -> None:
    """SDXL: the pipeline encodes with both encoders; pooled embeddings are indexed per tile."""
    sdxl = DiffusionEngine(str(save_tiny_pipeline(tmp_path / "tiny-sdxl", kind="sdxl")),
                           batch_size=3, device="cpu")
    assert type(sdxl.img2img).__name__ == "StableDiffusionXLImg2ImgPipeline"
    jobs = [job(i, steps=2) for i in range(4)]
    assert_close(sdxl.tiles(inits[:4], jobs, context), one_by_one(sdxl, inits[:4], jobs, context))
    primary = sdxl.primary(PrimaryJob(seed=1, prompt="a turtle", negative_prompt="", steps=2,
                                      guidance=5.0, size=SIZE))
    assert primary.shape == (SIZE, SIZE, 3) and primary.std() > 5


def test_bad_inputs(engine, inits, context) -> None:
    with pytest.raises(InputError, match="size: 60 px"):
        engine.tiles(inits[:1, :60, :60], [job(0)], context)
    with pytest.raises(ValueError, match="jobs: 1 jobs for 2 tiles"):
        engine.tiles(inits[:2], [job(0)], context)
    with pytest.raises(ValueError, match="inits: expected"):
        engine.tiles(inits[:1].astype(np.float32), [job(0)], context)
    with pytest.raises(InputError, match="diffusion.batch_size"):
        DiffusionEngine("unused", batch_size=0)


def test_missing_model_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="diffusion.model: .*nowhere: no such file"):
        DiffusionEngine(str(tmp_path / "nowhere"), device="cpu")
