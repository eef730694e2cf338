"""Best-fit mapping of image tokens onto prompt tokens, and per-token weight maps (pure torch).

The maths under `hypermosaic.pipelines.image_prompt.guidance`, after flexdiffuse's
``guidance.py`` (tim-speed/flexdiffuse). Shapes: ``B`` batch, ``T`` prompt tokens, ``N`` image
tokens. A "similarity" here is what the seed calls alignment: not a cosine but the softmax, over
the tokens of ``b``, of CLIP's scaled cosine (``logit_scale * cos``), so it says how much better
``a_i`` fits ``b_j`` than the other tokens of ``b``. Every function is pure: no I/O, no models.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor

__all__ = ["best_fit", "combine", "ordered_fit", "peaks", "similarity", "tent"]


def similarity(a: Tensor, b: Tensor, logit_scale: float) -> Tensor:
    """``softmax_j(logit_scale * cos(a_i, b_j))``: (B, Na, D), (B, Nb, D) -> (B, Na, Nb)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return (logit_scale * (a @ b.mT)).softmax(dim=-1)


def best_fit(sim: Tensor) -> tuple[Tensor, Tensor]:
    """For each ``b`` token, the ``a`` token that fits it best, reused freely (the seed's default).

    ``sim`` is (B, Na, Nb); returns the index into ``a`` and its similarity, each (B, Nb). Ties
    go to the first ``a`` token, as the seed's sort does.
    """
    index = sim.argmax(dim=1)
    return index, sim.gather(1, index.unsqueeze(1)).squeeze(1)


def ordered_fit(sim: Tensor, start: int = 1) -> tuple[Tensor, Tensor]:
    """Each ``a`` token used once, ``b``'s tokens served in order from ``start`` (seed: text order).

    Returns (index, similarity), each (B, Nb); tokens before ``start``, or left without an ``a``
    token once all are used, get index -1 and similarity 0.
    """
    batch, count, width = sim.shape
    index = torch.full((batch, width), -1, dtype=torch.long, device=sim.device)
    value = torch.zeros((batch, width), dtype=sim.dtype, device=sim.device)
    used = torch.zeros((batch, count), dtype=torch.bool, device=sim.device)
    rows = torch.arange(batch, device=sim.device)
    for j in range(start, min(width, start + count)):
        column = sim[:, :, j].masked_fill(used, -math.inf)
        best = column.argmax(dim=1)
        index[:, j] = best
        value[:, j] = column[rows, best]
        used[rows, best] = True
    return index, value


def peaks(s: Tensor, floor: Tensor) -> Tensor:
    """Tokens ``1..T-2`` reaching ``floor`` (B, 1) and both neighbours' similarity: (B, T) bool."""
    mask = torch.zeros_like(s, dtype=torch.bool)
    inner = s[:, 1:-1]
    mask[:, 1:-1] = (inner >= floor) & (inner >= s[:, :-2]) & (inner >= s[:, 2:])
    return mask


def tent(peak: Tensor) -> Tensor:
    """1 at each peak, falling linearly to 0 at the valleys: (B, T) bool -> (B, T) float.

    The valleys are the first and last token and the point half-way (rounded up) between two
    peaks, as in the seed's ``_clustered_guidance``; a row without peaks is all zeros.
    """
    batch, length = peak.shape
    out = torch.zeros(peak.shape, dtype=torch.float32)
    for row in range(batch):
        at = peak[row].nonzero().flatten().tolist()
        if not at:
            continue
        valleys = [0, *(p + math.ceil((q - p) / 2) for p, q in pairwise(at)), length - 1]
        for i, p in enumerate(at):
            left, right = valleys[i], valleys[i + 1]
            for j in range(left + 1, p):  # rising from the valley on the left
                out[row, j] = 1.0 - (p - j) / (p - left)
            for j in range(p + 1, right + 1):  # falling to the valley on the right
                out[row, j] = 1.0 - (j - p) / (right - p)
        out[row, at] = 1.0  # adjacent peaks: a peak is never another's valley
    return out.to(peak.device)


def combine(a: Tensor, b: Tensor) -> Tensor:
    """Blend two weight maps token by token: both >= 0 -> max, both <= 0 -> min, else the sum.

    The seed's ``_blend_weights`` makes this choice once per map from its maximum, so a
    negative map meeting a zero (or any non-negative) token is dropped whole; per token, the
    non-negative results are the same and negative settings do move away from the image.
    """
    both_up = (a >= 0) & (b >= 0)
    both_down = (a <= 0) & (b <= 0)
    rest = torch.where(both_down, torch.minimum(a, b), a + b)
    return torch.where(both_up, torch.maximum(a, b), rest)
