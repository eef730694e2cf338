"""The recolor engine: no model, runs anywhere.

Each sub-image is a source image recoloured to its tile's colours by mean/std transfer in CIE Lab
(Reinhard et al., 2001), then blended with the upsampled tile:

    out = (1 - strength) * tile + strength * blend(tile, recolour(source, mean(tile), std'(tile)))

where ``std' = max(std(tile), min_contrast * std(source))`` per channel: a small tile is nearly
flat, and copying its spread would leave the sub-image a faint ghost; the floor keeps it legible
while the mean, which the mosaic's look depends on, is the tile's exactly. As in img2img,
``strength`` trades the tile against the new content. ``blend`` is one of `BLENDS`:

- ``transfer`` (the default): the recoloured source itself, ``blend(t, r) = r``. The whole source
  replaces the tile, so from afar a tile shows the source's layout, not the tile's.
- ``detail``: a Laplacian-pyramid blend (Burt and Adelson, 1983), the tile's low frequencies under
  the recoloured source's high ones, ``blend(t, r) = lowpass(t) + r - lowpass(r)``, with
  ``lowpass`` the Gaussian pyramid reduced to `DETAIL_LOW` pixels and expanded back (the coarse
  levels of ``t``'s Laplacian pyramid and the fine ones of ``r``'s, collapsed). Seen whole, a
  sub-image keeps its tile's colour layout at ``DETAIL_LOW`` pixels, so the primary's shapes
  run on through the mosaic; zoomed in, it shows the source's edges and texture. Then shifted
  so that its mean is the tile's exactly.

Sources: the primary image (self-similar), the parent, or a folder of images chosen per tile by
closest mean colour without repeating among already-placed neighbours. Every step is a fixed
sequence of numpy operations on one tile, so a sub-image's bytes depend only on its tile, its
source and the settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hypermosaic.build.engines import PrimaryJob, TileContext, TileJob
from hypermosaic.errors import InputError
from hypermosaic.images import load_image, resize, square_crop

__all__ = [
    "BLENDS",
    "DETAIL_LOW",
    "RecolorEngine",
    "assign_sources",
    "detail_blend",
    "highpass",
    "load_sources",
    "lab_to_srgb",
    "lowpass",
    "recolour",
    "srgb_to_lab",
]

BLENDS = ("transfer", "detail")
"""``recolor.blend`` values: mean/std transfer of the whole source (the default), or the tile's
low frequencies under the source's high ones."""
DETAIL_LOW = 8
"""Side, in pixels, of the pyramid level below which a ``detail`` sub-image is its tile's."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}

# sRGB (D65) <-> XYZ matrices and the D65 white point.
_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]],
    dtype=np.float32,
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ).astype(np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 sRGB ``(..., 3)`` to float32 CIE Lab."""
    c = image.astype(np.float32) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _RGB_TO_XYZ.T) / _WHITE
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """float32 CIE Lab to uint8 sRGB (out-of-gamut colours clipped)."""
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f**3 > _EPSILON, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)


def _stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = values.reshape(-1, 3)
    return flat.mean(axis=0), flat.std(axis=0)


def recolour(source: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """Shift and scale ``source`` (float, any colour space) to the target per-channel statistics."""
    mean, std = _stats(source)
    return (source - mean) * (target_std / np.maximum(std, 1e-3)) + target_mean


def _blur(values: np.ndarray) -> np.ndarray:
    """The 5-tap binomial filter ``[1, 4, 6, 4, 1] / 16`` along both axes, edges mirrored."""
    p = np.pad(values, ((2, 2), (0, 0), (0, 0)), mode="reflect")
    values = (p[:-4] + p[4:]) * (1 / 16) + (p[1:-3] + p[3:-1]) * (4 / 16) + p[2:-2] * (6 / 16)
    p = np.pad(values, ((0, 0), (2, 2), (0, 0)), mode="reflect")
    return (
        (p[:, :-4] + p[:, 4:]) * (1 / 16) + (p[:, 1:-3] + p[:, 3:-1]) * (4 / 16)
        + p[:, 2:-2] * (6 / 16)
    )


def _expand(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One Gaussian-pyramid level up to ``shape``: samples on even pixels, interpolated by the
    same filter, normalised by the filter's weight on samples (exact at the edges, and a flat
    image stays flat)."""
    spread = np.zeros(shape, dtype=np.float32)
    spread[::2, ::2] = values
    weight = np.zeros(shape[:2] + (1,), dtype=np.float32)
    weight[::2, ::2] = 1
    return (_blur(spread) / _blur(weight)).astype(np.float32)


def lowpass(values: np.ndarray, low: int) -> np.ndarray:
    """``values`` ``(H, W, C)`` reduced through a Gaussian pyramid (Burt and Adelson) until its
    smaller side would fall below ``low`` pixels, then expanded back to ``(H, W, C)`` float32."""
    levels = [np.asarray(values, dtype=np.float32)]
    while min(levels[-1].shape[:2]) >= 2 * low and min(levels[-1].shape[:2]) >= 4:
        levels.append(_blur(levels[-1])[::2, ::2].astype(np.float32))
    out = levels[-1]
    for finer in reversed(levels[:-1]):
        out = _expand(out, finer.shape)
    return out


def highpass(values: np.ndarray, low: int) -> np.ndarray:
    """What `lowpass` leaves out: the Laplacian pyramid's levels finer than ``low`` pixels."""
    return np.asarray(values, dtype=np.float32) - lowpass(values, low)


def detail_blend(tile: np.ndarray, detail: np.ndarray, low: int = DETAIL_LOW) -> np.ndarray:
    """``lowpass(tile) + detail``, shifted so that its mean is ``tile``'s: the tile's pyramid
    levels coarser than ``low`` pixels under ``detail`` (a `highpass`), both float ``(H, W, C)``
    in one colour space."""
    out = lowpass(tile, low) + detail
    return out + (_stats(tile)[0] - _stats(out)[0])


def assign_sources(tile_means: np.ndarray, source_means: np.ndarray) -> np.ndarray:
    """Pick a source per tile: the closest mean colour not used by an already-placed neighbour.

    ``tile_means`` is ``(grid, grid, 3)``, ``source_means`` ``(n, 3)``; returns ``(grid, grid)``
    indices. Tiles are placed in raster order; the up, left and both upper diagonal neighbours
    are avoided while enough sources exist.
    """
    grid = tile_means.shape[0]
    chosen = np.zeros((grid, grid), dtype=np.int64)
    for row in range(grid):
        for col in range(grid):
            distances = np.linalg.norm(source_means - tile_means[row, col], axis=1)
            taken = {
                int(chosen[r, c])
                for r, c in ((row - 1, col - 1), (row - 1, col), (row - 1, col + 1), (row, col - 1))
                if 0 <= r and 0 <= c < grid
            }
            order = np.argsort(distances, kind="stable")
            free = [int(i) for i in order if int(i) not in taken]
            chosen[row, col] = free[0] if free else int(order[0])
    return chosen


def load_sources(source: str) -> list[np.ndarray]:
    """The square-cropped images of a ``recolor.source`` folder, sorted by file name.

    Called by the build before anything is written (so bad input stops it cleanly) and by each
    worker's engine. Raises `InputError` naming ``recolor.source`` and the folder or file when
    the folder is missing, holds no images, or one of them cannot be read.
    """
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"recolor.source: {folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"recolor.source: {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    images = []
    for path in files:
        try:
            images.append(square_crop(load_image(path)))
        except InputError as exc:
            raise InputError(f"recolor.source: {exc}") from None
    return images


class RecolorEngine:
    """Sub-images by colour transfer; ``source`` is ``primary``, ``parent`` or a folder path,
    ``blend`` one of `BLENDS`. Raises `ValueError` for an unknown blend."""

    def __init__(self, source: str = "primary", colour_space: str = "lab",
                 min_contrast: float = 0.35, blend: str = "transfer") -> None:
        if blend not in BLENDS:
            raise ValueError(f"recolor.blend: {blend!r} is not one of {', '.join(BLENDS)}")
        self.source = source
        self.colour_space = colour_space
        self.min_contrast = min_contrast
        self.blend = blend
        self._to_space = srgb_to_lab if colour_space == "lab" else _as_float
        self._from_space = lab_to_srgb if colour_space == "lab" else _as_uint8
        self._cache: dict[bytes, np.ndarray] = {}
        self._folder: list[np.ndarray] = []
        self._folder_means = np.zeros((0, 3), dtype=np.float32)
        if source not in ("primary", "parent"):
            self._folder = load_sources(source)
            self._folder_means = np.stack(
                [_stats(self._to_space(resize(img, 64, 64)))[0] for img in self._folder]
            )

    def primary(self, job: PrimaryJob) -> np.ndarray:
        raise InputError("primary.prompt: the recolor engine needs primary.image")

    def _space(self, image: np.ndarray, detail: bool = False) -> np.ndarray:
        """The image in the working colour space, or with ``detail`` its `highpass` there;
        cached (sources repeat across tiles)."""
        key = (hashlib.blake2b(image.tobytes(), digest_size=16).digest()
               + f"{image.shape}{detail}".encode())
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            values = self._to_space(image)
            self._cache[key] = highpass(values, DETAIL_LOW) if detail else values
        return self._cache[key]

    def _sources(self, jobs: Sequence[TileJob], context: TileContext, size: int) -> list:
        if self.source == "primary":
            return [resize(context.primary, size, size)] * len(jobs)
        if self.source == "parent":
            return [resize(context.parent, size, size)] * len(jobs)
        grid = context.grid
        parent_lab = self._to_space(context.parent)
        tile = parent_lab.shape[0] // grid
        blocks = parent_lab[: tile * grid, : tile * grid].reshape(grid, tile, grid, tile, 3)
        choice = assign_sources(blocks.mean(axis=(1, 3)), self._folder_means)
        return [
            resize(self._folder[choice[job.address[-1]]], size, size) for job in jobs
        ]

    def tiles(
        self, inits: np.ndarray, jobs: Sequence[TileJob], context: TileContext
    ) -> np.ndarray:
        size = inits.shape[1]
        out = np.empty_like(inits)
        for i, (init, job, source) in enumerate(
            zip(inits, jobs, self._sources(jobs, context, size), strict=True)
        ):
            source_values = self._space(source)
            source_std = _stats(source_values)[1]
            floor = self.min_contrast * source_std
            if self.blend == "transfer":
                stride = max(1, size // 64)
                mean, std = _stats(self._to_space(init[::stride, ::stride]))
                new = self._from_space(recolour(source_values, mean, np.maximum(std, floor)))
            else:
                # recolour is affine per channel, so the recoloured source's high frequencies
                # are the source's, scaled: highpass(recolour(s)) = highpass(s) * std' / std(s)
                tile = self._to_space(init)
                std = _stats(tile)[1]
                scale = np.maximum(std, floor) / np.maximum(source_std, 1e-3)
                detail = self._space(source, True) * scale
                new = self._from_space(detail_blend(tile, detail, DETAIL_LOW))
            blended = (1 - job.strength) * init.astype(np.float32) + job.strength * new
            out[i] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out


def _as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)


def _as_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
