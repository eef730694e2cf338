"""The pure plan of a detail pass: bands of latent rows, their windows, and how bands join.

The enlarged image (padded by repeating its last row and column to a multiple of the VAE's
factor ``f``) is cut into *bands*, one row of windows each, top to bottom; windows are
``window`` latents square and step by ``window - overlap`` (`hypermosaic.tiling.window_spans`,
the last flush with the edge). Inside a band every window steps together and their
predictions are blended (Mixture of Diffusers). Between bands, band ``k``'s first ``hold``
rows (those it shares with band ``k - 1``) are held to band ``k - 1``'s final latents, noised
to each step's level, by a ramp (`hypermosaic.pipelines.refine.band.hold_ramp`)::

    z[:hold] = m * add_noise(z_prev, noise, t) + (1 - m) * z[:hold]     (z_prev at the end)
    m = 1 over the first half of the hold rows, then falling linearly towards 0

so band ``k`` continues band ``k - 1`` rather than meeting it at a seam. Over the rows where
``m = 1`` the two bands' latents agree; there the decoded pixels cross-fade linearly
(``fade`` rows), which hides the VAE's edge effects. Band ``k`` hands out the output rows
from its top to the next band's top (`Band.emit`).

Everything here is a function of the image size, the model's VAE factor and the settings;
a resumed run gets the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypermosaic.tiling import window_spans
from hypermosaic.upscale.refine import RefineConfig

__all__ = ["Band", "RefinePlan", "plan_refine"]


@dataclass(frozen=True)
class Band:
    """One row of windows: latent rows ``top..bottom`` of the padded image, the ``hold`` rows
    at its top shared with the previous band (0 for the first), its windows' latent column
    spans and their prompts, the output pixel rows ``emit`` it hands out and the ``fade``
    pixel rows at their top cross-faded with the previous band's pixels."""

    index: int
    top: int
    bottom: int
    hold: int
    columns: tuple[tuple[int, int], ...]
    prompts: tuple[str, ...]
    emit: tuple[int, int]
    fade: int

    @property
    def boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        """The windows as latent boxes ``(top, bottom, left, right)`` inside the band."""
        return tuple((0, self.bottom - self.top, left, right) for left, right in self.columns)


@dataclass(frozen=True)
class RefinePlan:
    """The bands of a detail pass over an image of ``height`` x ``width`` pixels, with the VAE
    factor ``f``, windows of ``window`` latents overlapping by ``overlap``."""

    height: int
    width: int
    f: int
    window: int
    overlap: int
    bands: tuple[Band, ...]

    @property
    def latent_size(self) -> tuple[int, int]:
        """The padded image's latent ``(height, width)``."""
        return -(-self.height // self.f), -(-self.width // self.f)

    @property
    def windows(self) -> int:
        """How many windows the pass runs per denoising step, all bands together."""
        return sum(len(band.columns) for band in self.bands)


def plan_refine(height: int, width: int, f: int, native: int, refine: RefineConfig
                ) -> RefinePlan:
    """The bands and windows of a detail pass over ``height`` x ``width`` pixels with a model
    of VAE factor ``f`` and native side ``native`` pixels (the default window; the default
    overlap is half of it)."""
    window_px = refine.window or native
    overlap_px = window_px // 2 if refine.overlap is None else refine.overlap
    window, overlap = window_px // f, overlap_px // f
    lat_h, lat_w = -(-height // f), -(-width // f)
    rows = window_spans(lat_h, min(window, lat_h), window - overlap)
    cols = window_spans(lat_w, min(window, lat_w), window - overlap)
    bands = []
    for index, (top, bottom) in enumerate(rows):
        hold = rows[index - 1][1] - top if index else 0
        following = rows[index + 1][0] * f if index + 1 < len(rows) else height
        prompts = tuple(refine.prompt_at((top + bottom) / 2 / lat_h, (left + right) / 2 / lat_w)
                        for left, right in cols)
        emit = (top * f, min(following, height))
        bands.append(Band(index, top, bottom, hold, tuple(cols), prompts, emit,
                          min(hold // 2 * f, emit[1] - emit[0])))
    return RefinePlan(height, width, f, window, overlap, tuple(bands))
