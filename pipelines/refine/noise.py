"""The noise of a detail pass: a field over the whole latent image, drawn by position.

The latent rows are cut into chunks of `NOISE_ROWS`; chunk ``j`` is ``randn`` over the
image's full latent width from its own CPU generator, seeded ``derive_seed(seed,
"refine-noise/j")``. Any band's noise is the crop of that field over its rows, so two bands
that share rows share their noise there, and the noise is the same whatever the bands, the
device or the batch.
"""

from __future__ import annotations

import torch

from hypermosaic.tree import derive_seed

__all__ = ["NOISE_ROWS", "position_noise"]

NOISE_ROWS = 8


def position_noise(seed: int, top: int, bottom: int, width: int, channels: int) -> torch.Tensor:
    """The noise field's latent rows ``top..bottom`` ``(1, channels, bottom - top, width)``,
    float32 on the CPU."""
    first, last = top // NOISE_ROWS, -(-bottom // NOISE_ROWS)
    chunks = [
        torch.randn((1, channels, NOISE_ROWS, width),
                    generator=torch.Generator("cpu").manual_seed(
                        derive_seed(seed, f"refine-noise/{j}")))
        for j in range(first, last)
    ]
    start = top - first * NOISE_ROWS
    return torch.cat(chunks, dim=2)[:, :, start : start + bottom - top]
