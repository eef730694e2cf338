"""Wrapped canvases (``wrap``): 360° panoramas and tileable textures on the tiny model.

The seam is measured as the zoom video's loop is (`tests.video.test_video.seam_and_typical`):
the mean absolute difference across the join against the median of the steps between
neighbouring columns (or rows) beside it. The tiny model's images are noise-like, so the seam
tests denoise with a stand-in UNet that smooths (its images have structure a seam would cut).
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hypermosaic.canvas import canvas_config_from_dict
from hypermosaic.canvas.plan import plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas import Window, blend, render_canvas
from hypermosaic.pipelines.canvas.masks import gaussian_blur
from hypermosaic.pipelines.canvas.tiled_vae import decode_tiled
from hypermosaic.pipelines.canvas.wrap import decode_ring, ring_fold, ring_pad, ring_spans
from tests.video.test_video import mad, seam_and_typical

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = 16  # steps each side of a seam: single columns vary more than a video's frames


@pytest.fixture(scope="module")
def pipe():
    from tests.tiny import tiny_pipeline

    return tiny_pipeline()


class SmoothingUnet:
    """Predicts the noise as what a 5x5 box blur removes: the canvas denoises to a smooth
    field, with edge effects at every window's edges, as a real model's windows have."""

    def __init__(self, unet):
        self.config, self.device, self.dtype = unet.config, unet.device, unet.dtype

    def __call__(self, x, t, **kwargs):
        blur = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
        return SimpleNamespace(sample=x - blur)


@pytest.fixture(scope="module")
def smooth(pipe):
    smoothing = copy.copy(pipe)
    smoothing.unet = SmoothingUnet(pipe.unet)
    return smoothing


def render(pipe, raw: dict, base: Path = Path(".")) -> np.ndarray:
    return render_canvas(pipe, plan_canvas(canvas_config_from_dict(raw, base=base, source="t")))


def panorama(wrap: str | None, width: int = 256, height: int = 64, **extra) -> dict:
    raw = {"width": width, "height": height, "steps": 6, "seed": 3, "scheduler": "ddim",
           "vae_tile": 128, "background": {"prompt": "a wide valley"}, **extra}
    return raw if wrap is None else {**raw, "wrap": wrap}


def columns(image: np.ndarray) -> list[np.ndarray]:
    return [image[:, x] for x in range(image.shape[1])]


def rows(image: np.ndarray) -> list[np.ndarray]:
    return list(image)


def test_ring_spans_go_round_evenly_with_no_edge_on_the_seam():
    spans = ring_spans(40, 16, 8)
    assert spans == [(4, 20), (12, 28), (20, 36), (28, 44), (36, 52)]
    cover = np.zeros(40, int)
    for start, end in spans:
        cover[np.arange(start, end) % 40] += 1
    assert (cover == 2).all()
    with pytest.raises(ValueError):
        ring_spans(12, 16, 8)


def test_blend_folds_windows_across_the_seam_onto_the_canvas():
    generator = torch.Generator().manual_seed(0)
    boxes = [(0, 4, 2, 8), (0, 4, 6, 12), (2, 6, 1, 5)]  # the second crosses column 8
    windows = [Window(box, (0,), (1.0,), 1.0, False,
                      torch.rand(1, 1, b - t, r - left, generator=generator) + 0.1)
               for box in boxes for t, b, left, r in [box]]
    predictions = [torch.randn(1, 4, b - t, r - left, generator=generator)
                   for t, b, left, r in boxes]
    eps = blend(torch.Size((1, 4, 6, 8)), windows, predictions, pads=(0, 4))
    value, weight = torch.zeros(1, 4, 6, 8), torch.zeros(1, 1, 6, 8)
    for window, p in zip(windows, predictions, strict=True):
        top, bottom, left, right = window.box
        for x in range(left, right):
            value[:, :, top:bottom, x % 8] += window.weight[..., x - left] * p[..., x - left]
            weight[:, :, top:bottom, x % 8] += window.weight[..., x - left]
    assert torch.allclose(eps, value / weight, equal_nan=True)
    latents = torch.randn(1, 4, 6, 8, generator=generator)
    copies = (1 + (torch.arange(6) < 3).float())[:, None] * (1 + (torch.arange(8) < 5).float())
    assert torch.equal(ring_fold(ring_pad(latents, 3, 5), 6, 8), latents * copies)


def test_mask_blurs_wrap_round_the_seam():
    mask = np.zeros((6, 12), np.float32)
    mask[:, 0] = 1
    assert gaussian_blur(mask, 1.0)[0, -1] == 0
    assert gaussian_blur(mask, 1.0, (False, True))[0, -1] == pytest.approx(
        gaussian_blur(mask, 1.0, (False, True))[0, 1])


def test_wrap_off_is_byte_identical(pipe):
    raw = panorama(None, 128, 64, steps=2)
    assert np.array_equal(render(pipe, raw), render(pipe, {**raw, "wrap": "none"}))


def test_a_panoramas_seam_is_an_ordinary_column(smooth):
    wrapped = render(smooth, panorama("x"))
    seam, typical = seam_and_typical(columns(wrapped), K)
    assert seam <= 1.15 * typical
    cut, cut_typical = seam_and_typical(columns(render(smooth, panorama(None))), K)
    assert cut > 1.3 * cut_typical and cut > 1.3 * seam  # the measure sees a seam


def test_a_texture_tiled_2x2_shows_no_seam(smooth):
    side = 96
    texture = render(smooth, panorama("xy", side, side, seed=5))
    tiled = np.tile(texture, (2, 2, 1))
    for lines in (columns(tiled), rows(tiled)):
        # lines side..2 side - 1 end where the next copy begins: their loop boundary is the
        # join of the tiling, and the steps beside it are the neighbours of that join
        join, typical = seam_and_typical(lines[side : 2 * side], K)
        assert join == mad(lines[side - 1], lines[side])
        assert join <= 1.15 * typical
    plain = render(smooth, panorama(None, side, side, seed=5))
    for lines in (columns(plain), rows(plain)):
        cut, typical = seam_and_typical(lines, K)
        assert cut > 1.3 * typical


def test_every_region_kind_paints_a_wrapped_panorama(pipe, tmp_path):
    import pyvips

    mask = np.zeros((64, 192), np.uint8)
    mask[:, :32] = 255  # a brush at the left edge, blurred round the seam
    pyvips.Image.new_from_array(mask).pngsave(str(tmp_path / "brush.png"))
    reference = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    pyvips.Image.new_from_array(reference).pngsave(str(tmp_path / "ref.png"))
    raw = panorama("x", 192, 64, steps=2, bootstrap_steps=1, regions=[
        {"kind": "brush", "mask": "brush.png", "prompt": "a lake", "blur": 8},
        {"top": 0, "bottom": 64, "left": 96, "right": 160, "prompt": "a tower",
         "mask": "brush.png", "blur": 4},
        {"kind": "image", "top": 16, "bottom": 48, "left": 64, "right": 96, "image": "ref.png",
         "strength": 0.5},
        {"kind": "reroll", "top": 0, "bottom": 32, "left": 160, "right": 192, "seed": 9},
    ])
    image = render(pipe, raw, tmp_path)
    assert image.shape == (64, 192, 3)
    assert not np.array_equal(image, render(pipe, {**raw, "wrap": "none"}, tmp_path))


def test_a_native_window_wider_than_the_panorama_is_an_input_error(pipe):
    with pytest.raises(InputError, match=r'^wrap: "x" needs a width of at least the 64 px'):
        render(pipe, panorama("x", 48, 32, steps=1))


def test_the_wrapped_decode_is_the_untiled_decode_of_the_padded_latents(pipe):
    latents = torch.randn(1, 4, 12, 20, generator=torch.Generator().manual_seed(2))
    for wrap, (py, px) in (("x", (0, 4)), ("xy", (4, 4))):
        padded = torch.nn.functional.pad(latents, (px, px, py, py), mode="circular")
        whole = decode_tiled(pipe.vae, padded, 64, 0)  # one pass
        expected = whole[py * 2 : whole.shape[0] - py * 2, px * 2 : whole.shape[1] - px * 2]
        assert np.array_equal(decode_ring(pipe.vae, latents, 64, 4, wrap), expected)
    tiled = decode_ring(pipe.vae, latents, 8, 4, "x")  # tiles cross-fading round the seam
    assert tiled.shape == (24, 40, 3)


@pytest.mark.usefixtures("hypermosaic_cache")
def test_esrgan_finishing_is_wrap_aware():
    from hypermosaic.pipelines.esrgan import load_upscaler
    from hypermosaic.pipelines.esrgan.tiled import upscale_array

    upscaler = load_upscaler("fast", device="cpu", dtype="float32")
    spectrum = np.fft.fft2(np.random.default_rng(0).standard_normal((40, 96, 3)), axes=(0, 1))
    ky, kx = np.fft.fftfreq(40)[:, None, None], np.fft.fftfreq(96)[None, :, None]
    field = np.real(np.fft.ifft2(spectrum * np.exp(-(kx**2 + ky**2) / 0.0072), axes=(0, 1)))
    image = np.clip(127 + 50 * field / field.std(), 0, 255).astype(np.uint8)  # periodic
    wrapped = upscale_array(upscaler, image, tile=32, overlap=8, wrap="x")
    assert wrapped.shape == (160, 384, 3)
    seam = mad(wrapped[:, -1], wrapped[:, 0])
    # the same join where it is an interior column: the image rolled by half its width
    rolled = upscale_array(upscaler, np.roll(image, 48, axis=1), tile=32, overlap=8)
    assert seam <= 1.1 * mad(rolled[:, 191], rolled[:, 192])
    plain = upscale_array(upscaler, image, tile=32, overlap=8)
    assert mad(plain[:, -1], plain[:, 0]) > 2 * seam
    padded = np.pad(image, ((0, 0), (16, 16), (0, 0)), mode="wrap")
    assert np.array_equal(wrapped, upscale_array(upscaler, padded, tile=32, overlap=8)[:, 64:-64])
