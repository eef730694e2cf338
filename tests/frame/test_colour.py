from __future__ import annotations

import numpy as np
import pytest

from hypermosaic.errors import InputError
from hypermosaic.frame.colour import MAX_GAIN, balance_cast, cast_gains


def _linear(rgb: np.ndarray) -> np.ndarray:
    v = rgb / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    s = np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)
    return np.rint(s * 255).astype(np.uint8)


def _scene(seed: int = 0) -> np.ndarray:
    """Patches of many colours under a neutral light, in linear light: each colour comes with
    its five channel permutations, so no channel is favoured by any statistic."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.02, 0.8, (40, 3))
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    patches = np.concatenate([colours[:, order] for order in orders])
    patches = rng.permutation(np.concatenate([patches, np.full((16, 3), 0.3)]))
    return np.repeat(np.repeat(patches.reshape(16, 16, 3), 8, axis=0), 8, axis=1)


def _tint(rgb: np.ndarray) -> float:
    """How far the mean linear colour is from grey: the spread of its channels over the mean."""
    mean = _linear(rgb).reshape(-1, 3).mean(axis=0)
    return float((mean.max() - mean.min()) / mean.mean())


@pytest.mark.parametrize("cast", [(0.85, 1.0, 0.85), (0.7, 0.75, 0.72), (1.0, 1.0, 0.8)])
def test_cast_is_corrected_towards_neutral(cast: tuple[float, float, float]) -> None:
    neutral = _srgb(_scene())
    tinted = _srgb(_scene() * np.array(cast))
    out = balance_cast(tinted)
    assert _tint(tinted) > 0.05
    assert _tint(out) < 0.25 * _tint(tinted)
    assert np.abs(out.astype(int) - neutral).mean() < np.abs(tinted.astype(int) - neutral).mean()
    half = balance_cast(tinted, 0.5)
    assert _tint(out) < _tint(half) < _tint(tinted)


def test_strength_zero_is_byte_identical() -> None:
    tinted = _srgb(_scene(3) * np.array([0.8, 1.0, 0.8]))
    out = balance_cast(tinted, 0.0)
    assert out is not tinted and out.tobytes() == tinted.tobytes()


@pytest.mark.parametrize("value", [(0, 0, 0), (255, 255, 255), (128, 128, 128), (30, 200, 40),
                                   (0, 255, 0), (3, 2, 4), (120, 0, 0)])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (64, 48)])
def test_flat_and_black_images_never_give_nan(value: tuple[int, int, int],
                                              shape: tuple[int, int]) -> None:
    flat = np.full((*shape, 3), value, np.uint8)
    gains = cast_gains(flat)
    assert np.isfinite(gains).all()
    assert (gains >= 1 / MAX_GAIN - 1e-12).all() and (gains <= MAX_GAIN + 1e-12).all()
    out = balance_cast(flat)
    assert out.shape == flat.shape and out.dtype == np.uint8
    if len(set(value)) == 1:  # already neutral (or unusable): untouched
        assert out.tobytes() == flat.tobytes()


def test_large_image_is_sampled_to_the_same_answer() -> None:
    tinted = _srgb(_scene(5) * np.array([0.9, 1.0, 0.8]))
    big = np.tile(tinted, (12, 12, 1))  # 1536², sampled on a grid
    np.testing.assert_allclose(cast_gains(big), cast_gains(tinted), rtol=0.02)


@pytest.mark.parametrize(("image", "strength", "words"), [
    (np.zeros((4, 4, 3), np.float32), 1.0, "HxWx3 uint8"),
    (np.zeros((4, 4), np.uint8), 1.0, "HxWx3 uint8"),
    (np.zeros((4, 4, 3), np.uint8), 1.5, "strength"),
    (np.zeros((4, 4, 3), np.uint8), float("nan"), "strength"),
])
def test_bad_input(image: np.ndarray, strength: float, words: str) -> None:
    with pytest.raises(InputError, match=words):
        balance_cast(image, strength)
