"""Image prompts: CLIP image embeddings mapped onto a prompt's token embeddings (pure functions).

After flexdiffuse (tim-speed/flexdiffuse, ``guidance.py``; seed 004). The UNet only understands
the rhythm of text embeddings, so each prompt token is matched with the image token that fits it
best (`mapping.best_fit`) and pulled towards it by a per-token weight: a ramp from front to back
(`linear`), tents around the best-matching tokens (`clustered`), and a step at a similarity floor
(`threshold`), combined token by token, capped overall and, more tightly, at the header token.
A second "concept" prompt can pick tokens to hand over to the image whole. A negative weight
pushes a token away from its image token. Each method has one signature::

    method(hidden, image, projection, settings, concept=None) -> new hidden states

``hidden`` (B, T, D): the text encoder's last hidden states, as the UNet takes them; ``image``
(B or 1, N, P): the vision model's token states through its projection (the seed uses all of
them: ``visual_projection(post_layernorm(last_hidden_state))``); ``projection`` (P, D): the text
encoder's ``text_projection.weight``. With ``space = "projected"`` the prompt tokens are
projected (``x W^T``) to be compared with the image tokens, and each token's move is taken there
and brought back with ``W``'s pseudo-inverse: ``x' = x + w W^+ (y - W x)``. With ``space =
"hidden"`` (the seed, which needs ``D = P``) the image tokens are used as hidden states as they
are: ``x' = x + w (y - x)``. For an orthogonal ``W`` both give the same result.

Where flexdiffuse's numbers come from a slip, we keep the method and not the slip: the seed's
``_map_emb`` files each token's match one place early (token ``t`` is moved towards the image
token that fits ``t + 1``, and the last token has similarity 0); we use each token's own. The
seed caps only positive weights at ``max_image_guidance`` and a strong negative weight snaps a
token *onto* its image token; we cap both signs and never snap a negative weight, nor the header.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

import torch
from torch import Tensor

from hypermosaic.pipelines.image_prompt.mapping import (
    best_fit,
    combine,
    ordered_fit,
    peaks,
    similarity,
    tent,
)

__all__ = [
    "METHODS",
    "SPACES",
    "ImagePromptSettings",
    "check",
    "check_inputs",
    "clustered",
    "flex",
    "guide",
    "image_only",
    "linear",
    "threshold",
    "token_weights",
]

SPACES = ("projected", "hidden")


@dataclass(frozen=True)
class ImagePromptSettings:
    """How an image steers a prompt; defaults are the seed's (README experiments and UI).

    Weights are fractions of the way from a prompt token to its image token: 0 leaves the
    prompt alone, 1 replaces the token, negative values move away from the image.

    - ``method``: ``"flex"`` maps the image onto the prompt (`flex`); ``"image_only"`` prompts
      with the image alone, the prompt giving only its header (`image_only`): the seed found it
      "generates weird stuff", since image tokens lack the rhythm of text.
    - ``linear_start``, ``linear_end`` (0.1, 0.5): a ramp over the tokens, front to back. The
      front carries the subject and amplifying it scrambles the picture; the back carries style:
      photo aesthetics, texture, colour, fidelity, some background. Safe even when prompt and
      image hardly match.
    - ``clustered`` (0.25): weight at the tokens that match the image best (local maxima of
      similarity at or above ``cluster_floor``), falling linearly to 0 half-way to the next such
      token. The seed found it weaker than ``threshold`` (a tree's neck grew onto a deer), a
      "residual tweening" like ``linear``; -0.5 amplified finer matching aesthetics.
    - ``cluster_floor`` (None): the similarity a peak must reach; None is the mean similarity
      of the prompt's tokens, which the seed computed and did not expose (0.1663, 0.1137 in
      two of its examples).
    - ``threshold`` (0.25): weight at every token whose similarity reaches ``threshold_floor``.
      Works best when prompt and image align; with good alignment, changes are subtle. Negative
      moves matched concepts away: "a new direction while keeping true to the prompt".
    - ``threshold_floor`` (0.75): that similarity; None is the mean. Lower floors reach weaker
      matches (0.1-0.2 still mapped a turtle; a wavy noise image below 0.75 lost the animal).
    - ``max_image_guidance`` (0.35): cap on every token's weight, either sign; 0 turns the
      mapping off. Does not limit concept mapping.
    - ``header_cap`` (0.15): cap on the header token's (index 0) weight. The header anchors
      attention: a little change is fine, around 0.35 gives noise patterns.
    - ``concept_alignment`` (0.9): with a concept prompt, a prompt token whose similarity to a
      concept token exceeds this is replaced by the image token matched to that concept token
      (the seed's fixed "high alignment threshold"). Applied after the rest, uncapped.
    - ``logit_scale`` (100.0): CLIP's similarity scale inside the softmax (the seed's fixed
      100); lower values spread similarity over more tokens.
    - ``space`` (``"projected"``): where tokens are compared and moved (module docstring).
    """

    method: str = "flex"
    linear_start: float = 0.1
    linear_end: float = 0.5
    clustered: float = 0.25
    cluster_floor: float | None = None
    threshold: float = 0.25
    threshold_floor: float | None = 0.75
    max_image_guidance: float = 0.35
    header_cap: float = 0.15
    concept_alignment: float = 0.9
    logit_scale: float = 100.0
    space: str = "projected"


# name -> (low, high) for the numeric settings, both ends allowed
_RANGES: dict[str, tuple[float, float]] = {
    "linear_start": (-1.0, 1.0),
    "linear_end": (-1.0, 1.0),
    "clustered": (-1.0, 1.0),
    "cluster_floor": (0.0, 1.0),
    "threshold": (-1.0, 1.0),
    "threshold_floor": (0.0, 1.0),
    "max_image_guidance": (0.0, 1.0),
    "header_cap": (0.0, 1.0),
    "concept_alignment": (0.0, 1.0),
    "logit_scale": (1e-3, 1e3),
}


def check(settings: ImagePromptSettings, key: str = "image_prompt") -> ImagePromptSettings:
    """Return ``settings`` if valid; else raise ValueError naming ``key.field`` and the value."""
    if settings.method not in METHODS:
        raise ValueError(f"{key}.method: unknown method {settings.method!r} "
                         f"(use {', '.join(METHODS)})")
    if settings.space not in SPACES:
        raise ValueError(f"{key}.space: unknown space {settings.space!r} (use {', '.join(SPACES)})")
    for field in fields(settings):
        if field.name not in _RANGES:
            continue
        value = getattr(settings, field.name)
        if value is None and field.name in ("cluster_floor", "threshold_floor"):
            continue
        low, high = _RANGES[field.name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}.{field.name}: {value!r} is not a number")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{key}.{field.name}: {value!r} is outside [{low:g}, {high:g}]")
    return settings


def check_inputs(hidden: Tensor, image: Tensor, projection: Tensor,
                 settings: ImagePromptSettings, concept: Tensor | None = None,
                 key: str = "image_prompt") -> None:
    """Raise ValueError, naming ``key``, if the tensors' shapes cannot go together."""
    if hidden.ndim != 3 or image.ndim != 3 or projection.ndim != 2:
        raise ValueError(f"{key}: expected prompt states (B, T, D), image embeddings (B, N, P) "
                         f"and a projection (P, D), got {tuple(hidden.shape)}, "
                         f"{tuple(image.shape)}, {tuple(projection.shape)}")
    width, size = projection.shape
    if size != hidden.shape[-1] or width != image.shape[-1]:
        raise ValueError(f"{key}: the vision model's projection gives {image.shape[-1]}-wide "
                         f"embeddings, the text encoder's maps {hidden.shape[-1]} to {width} "
                         f"(projection {tuple(projection.shape)}): not the same CLIP")
    if settings.space == "hidden" and width != size:
        raise ValueError(f"{key}.space: 'hidden' needs image embeddings as wide as the prompt "
                         f"states ({width} != {size}); use 'projected'")
    for name, tensor in (("image", image), ("concept", concept)):
        if tensor is None:
            continue
        if tensor.shape[0] not in (1, hidden.shape[0]):
            raise ValueError(f"{key}: {name} batch {tensor.shape[0]} for {hidden.shape[0]} prompts")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{key}: {name} embeddings are not finite")
    if concept is not None and (concept.ndim != 3 or concept.shape[-1] != size):
        raise ValueError(f"{key}: concept prompt states {tuple(concept.shape)} do not match the "
                         f"prompt's width {size}")


# ---- per-token weights: (similarity (B, T), settings) -> weights (B, T) ----

def _floor(s: Tensor, floor: float | None) -> Tensor:
    """``floor`` for every row, or the row's mean similarity over tokens 1.. when None: (B, 1)."""
    if floor is None:
        return s[:, 1:].mean(dim=1, keepdim=True)
    return torch.full((s.shape[0], 1), floor, dtype=s.dtype, device=s.device)


def linear(s: Tensor, settings: ImagePromptSettings) -> Tensor:
    """Ramp from ``linear_start`` (header) to ``linear_end`` (last token) (seed: Linear)."""
    ramp = torch.linspace(settings.linear_start, settings.linear_end, s.shape[1], device=s.device)
    return ramp.expand(s.shape).clone()


def clustered(s: Tensor, settings: ImagePromptSettings) -> Tensor:
    """``clustered`` times tents around the similarity peaks (seed: Clustered)."""
    if settings.clustered == 0:
        return torch.zeros_like(s)
    return tent(peaks(s, _floor(s, settings.cluster_floor))) * settings.clustered


def threshold(s: Tensor, settings: ImagePromptSettings) -> Tensor:
    """``threshold`` where similarity reaches ``threshold_floor``, else 0 (seed: Threshold)."""
    passing = s >= _floor(s, settings.threshold_floor)
    return torch.where(passing, settings.threshold, 0.0).to(s.dtype)


Weights = Callable[[Tensor, ImagePromptSettings], Tensor]
WEIGHTS: tuple[Weights, ...] = (linear, clustered, threshold)


def token_weights(s: Tensor, settings: ImagePromptSettings) -> Tensor:
    """Fold `WEIGHTS` with `mapping.combine`, cap the header at ``header_cap``, all at the max."""
    w = WEIGHTS[0](s, settings)
    for weights in WEIGHTS[1:]:
        w = combine(w, weights(s, settings))
    w[:, 0] = w[:, 0].clamp(-settings.header_cap, settings.header_cap)
    return w.clamp(-settings.max_image_guidance, settings.max_image_guidance)


# ---- methods: (hidden, image, projection, settings, concept) -> hidden ----

class Method(Protocol):
    """The one signature every method has."""

    def __call__(self, hidden: Tensor, image: Tensor, projection: Tensor,
                 settings: ImagePromptSettings, concept: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True)
class _Space:
    """Where tokens are compared (``to``) and how a move there comes back (``target``)."""

    weight: Tensor | None  # (P, D), None in the hidden space
    inverse: Tensor | None  # (D, P)

    def to(self, x: Tensor) -> Tensor:
        return x if self.weight is None else x @ self.weight.mT

    def target(self, x: Tensor, xp: Tensor, y: Tensor) -> Tensor:
        """Where token ``x`` (projected: ``xp``) lands when it takes image token ``y`` whole."""
        return y if self.inverse is None else x + (y - xp) @ self.inverse.mT


def _space(projection: Tensor, settings: ImagePromptSettings) -> _Space:
    if settings.space == "hidden":
        return _Space(None, None)
    weight = projection.float()
    return _Space(weight, torch.linalg.pinv(weight))


def _gather(tokens: Tensor, index: Tensor) -> Tensor:
    """``tokens[b, index[b, t]]``: (B, N, P), (B, T) -> (B, T, P)."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _concept(x: Tensor, xp: Tensor, image: Tensor, concept: Tensor, space: _Space,
             settings: ImagePromptSettings) -> tuple[Tensor, Tensor]:
    """Which prompt tokens the concept prompt hands to the image, and their targets (seed: map)."""
    cp = space.to(concept.float()).expand(x.shape[0], -1, -1)
    # each concept token (from 1) takes its own image token, in order, none reused
    image_of, _ = ordered_fit(similarity(image, cp, settings.logit_scale), start=1)
    # each prompt token finds its best concept token
    concept_of, s = best_fit(similarity(cp, xp, settings.logit_scale))
    chosen = image_of.gather(1, concept_of)
    selected = (s > settings.concept_alignment) & (concept_of >= 1) & (chosen >= 0)
    selected[:, 0] = False  # the header is never handed over
    return selected, space.target(x, xp, _gather(image, chosen.clamp(min=0)))


def flex(hidden: Tensor, image: Tensor, projection: Tensor, settings: ImagePromptSettings,
         concept: Tensor | None = None) -> Tensor:
    """Map ``image`` onto ``hidden`` by best fit and move each token by its weight (flexdiffuse)."""
    # 1. both in one space; every prompt token's best image token and similarity
    space = _space(projection, settings)
    x = hidden.float()
    xp = space.to(x)
    y = image.float().expand(x.shape[0], -1, -1)
    index, s = best_fit(similarity(y, xp, settings.logit_scale))
    target = space.target(x, xp, _gather(y, index))
    # 2. weights; a positive weight that covers the rest of the distance (w >= 1 - s) takes the
    #    image token whole, except at the header
    w = token_weights(s, settings).unsqueeze(-1)
    snap = (w > 0) & (w >= (1.0 - s).unsqueeze(-1))
    snap[:, 0] = False
    moved = torch.where(snap, target, x + w * (target - x))
    out = torch.where(w == 0, hidden, moved.to(hidden.dtype))
    # 3. concept prompt, as an override
    if concept is not None:
        selected, chosen = _concept(x, xp, y, concept, space, settings)
        out = torch.where(selected.unsqueeze(-1), chosen.to(hidden.dtype), out)
    return out


def image_only(hidden: Tensor, image: Tensor, projection: Tensor, settings: ImagePromptSettings,
               concept: Tensor | None = None) -> Tensor:
    """Prompt with the image alone: its first T tokens, the header moved ``header_cap`` of the way.

    ``hidden`` is a placeholder prompt's states (the seed encodes ``"{}"``); only its header
    survives, moved towards the image's first (pooled-position) token. ``concept`` is unused.
    """
    space = _space(projection, settings)
    x = hidden.float()
    count = min(x.shape[1], image.shape[1])
    y = image[:, :count].float().expand(x.shape[0], -1, -1)
    target = space.target(x[:, :count], space.to(x[:, :count]), y)
    out = x.clone()
    out[:, 1:count] = target[:, 1:]
    out[:, 0] = x[:, 0] + settings.header_cap * (target[:, 0] - x[:, 0])
    return out.to(hidden.dtype)


METHODS: dict[str, Method] = {"flex": flex, "image_only": image_only}


def guide(hidden: Tensor, image: Tensor, projection: Tensor, settings: ImagePromptSettings,
          concept: Tensor | None = None) -> Tensor:
    """Check the settings and shapes, then run ``settings.method``; raises ValueError."""
    check(settings)
    check_inputs(hidden, image, projection, settings, concept)
    return METHODS[settings.method](hidden, image, projection, settings, concept)
