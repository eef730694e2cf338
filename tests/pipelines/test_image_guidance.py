"""Image-prompt guidance (issue 13): the pure mapping on small tensors and tiny CLIPs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from hypermosaic.pipelines.image_prompt.guidance import (
    ImagePromptSettings,
    check,
    check_inputs,
    clustered,
    flex,
    guide,
    image_only,
    token_weights,
)
from hypermosaic.pipelines.image_prompt.mapping import combine

OFF = ImagePromptSettings(linear_start=0.0, linear_end=0.0, clustered=0.0, threshold=0.0)
HIDDEN = dataclasses.replace(OFF, space="hidden", max_image_guidance=1.0)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _fit(x: torch.Tensor, y: torch.Tensor, scale: float = 100.0) -> tuple[list[int], list[float]]:
    """By hand, as flexdiffuse's ``_map_emb`` (align order, reuse): per text token of one row."""
    xn = x / x.norm(dim=-1, keepdim=True)
    yn = y / y.norm(dim=-1, keepdim=True)
    table = [(scale * (yn[i] @ xn.T)).softmax(dim=-1) for i in range(len(y))]  # per image token
    index = []
    for t in range(len(x)):
        column = [row[t].item() for row in table]
        index.append(column.index(max(column)))  # ties: the first image token
    return index, [table[i][t].item() for t, i in enumerate(index)]


def _seed_tent(s: list[float], floor: float) -> list[float]:
    """flexdiffuse's ``_clustered_guidance`` walk from peaks down to valleys, written out."""
    n = len(s)
    peak = [t for t in range(1, n - 1) if s[t] >= floor and s[t - 1] <= s[t] >= s[t + 1]]
    if not peak:
        return [0.0] * n
    valley = [0] + [p + math.ceil((q - p) / 2) for p, q in zip(peak, peak[1:], strict=False)]
    valley.append(n - 1)
    w = [1.0] * n
    w[0] -= 1.0
    k = 0
    for a in peak:
        if valley[k] < a:
            d = a - valley[k]
            for i in range(1, d):
                w[a - i] -= i / d
            k += 1
        d = valley[k] - a
        for i in range(1, d + 1):
            w[a + i] -= i / d
    return w


def _seed_tween(x: torch.Tensor, y: torch.Tensor, st: ImagePromptSettings) -> torch.Tensor:
    """flexdiffuse's ``Tweener.tween`` for non-negative settings, token by token, own matches."""
    index, s = _fit(x, y, st.logit_scale)
    n = len(x)
    w = torch.linspace(st.linear_start, st.linear_end, n).tolist()
    floor = sum(s[1:]) / (n - 1) if st.cluster_floor is None else st.cluster_floor
    w = [max(a, st.clustered * b) for a, b in zip(w, _seed_tent(s, floor), strict=True)]
    bar = st.threshold_floor
    assert bar is not None
    w = [max(a, st.threshold if v >= bar else 0.0)
         for a, v in zip(w, s, strict=True)]
    w[0] = min(w[0], st.header_cap)
    out = torch.empty_like(x)
    for t in range(n):
        iw = min(w[t], st.max_image_guidance)
        if iw == 0:
            out[t] = x[t]
        elif iw >= 1.0 - s[t] and t > 0:
            out[t] = y[index[t]]
        else:
            out[t] = x[t] + (y[index[t]] - x[t]) * iw
    return out


def _near_copies(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt (1, 10, 16) with tokens 2, 5, 7 close to image tokens; image (1, 12, 16)."""
    y = _randn(1, 12, 16, seed=seed)
    x = _randn(1, 10, 16, seed=seed + 1)
    for t, i in ((2, 4), (5, 9), (7, 0)):
        x[0, t] = y[0, i] + 0.05 * _randn(16, seed=seed + t)
    return x, y


# ---- tiny CLIP, built in code ---------------------------------------------------------------

@pytest.fixture(scope="module")
def clip() -> dict[str, Any]:
    """Tiny seeded CLIP text and vision towers with projections (32 -> 24 <- 40), and states."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, vocab_size=300, projection_dim=24)).eval()
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=40, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        image_size=64, patch_size=8, projection_dim=24)).eval()
    ids = torch.randint(1, 299, (2, 77), generator=torch.Generator().manual_seed(1))
    pixels = _randn(2, 3, 64, 64, seed=2)
    with torch.no_grad():
        hidden = text.text_model(ids).last_hidden_state
        states = vision.vision_model(pixels).last_hidden_state
        image = vision.visual_projection(vision.vision_model.post_layernorm(states))
    return {"hidden": hidden, "image": image, "projection": text.text_projection.weight.detach()}


def test_all_guidance_zero_leaves_prompt_identical(clip: dict[str, Any]) -> None:
    h, y, w = clip["hidden"], clip["image"], clip["projection"]
    assert torch.equal(guide(h, y, w, OFF), h)
    assert torch.equal(guide(h, y, w, ImagePromptSettings(max_image_guidance=0.0)), h)
    assert not torch.equal(guide(h, y, w, ImagePromptSettings()), h)


def test_batch_is_the_same_as_one_by_one(clip: dict[str, Any]) -> None:
    h, y, w = clip["hidden"], clip["image"], clip["projection"]
    st = ImagePromptSettings(clustered=0.4, threshold_floor=None)
    whole = guide(h, y, w, st)
    for b in range(2):
        torch.testing.assert_close(whole[b:b + 1], guide(h[b:b + 1], y[b:b + 1], w, st))


def test_header_moves_at_most_header_cap(clip: dict[str, Any]) -> None:
    h, y, w = clip["hidden"][:1], clip["image"][:1], clip["projection"]
    st = ImagePromptSettings(linear_start=1.0, linear_end=1.0, max_image_guidance=1.0)
    out = guide(h, y, w, st)
    index, _ = _fit(h[0] @ w.T, y[0])
    target = h[0, 0] + (y[0, index[0]] - w @ h[0, 0]) @ torch.linalg.pinv(w).T
    moved = (out[0, 0] - h[0, 0]).norm() / (target - h[0, 0]).norm()
    assert moved.item() == pytest.approx(st.header_cap, rel=1e-4)
    assert torch.equal(guide(h, y, w, dataclasses.replace(st, header_cap=0.0))[0, 0], h[0, 0])


def test_projected_space_equals_hidden_space_for_a_rotation() -> None:
    x, y = _near_copies()
    q, _ = torch.linalg.qr(_randn(16, 16, seed=7))
    st = ImagePromptSettings(threshold_floor=None, clustered=0.5)
    rotated = flex(x, y, q, st)
    plain = flex(x, y @ q, q, dataclasses.replace(st, space="hidden"))
    torch.testing.assert_close(rotated, plain, atol=1e-5, rtol=1e-5)


def test_linear_moves_tokens_in_proportion_to_the_ramp() -> None:
    x, y = _randn(1, 12, 16, seed=3), _randn(1, 20, 16, seed=4)
    st = dataclasses.replace(HIDDEN, linear_start=0.05, linear_end=0.3, logit_scale=1.0)
    out = flex(x, y, torch.eye(16), st)
    index, s = _fit(x[0], y[0], 1.0)
    ramp = torch.linspace(0.05, 0.3, 12)
    assert max(s) < 0.7  # no token takes its image token whole
    for t in range(12):
        step = (out[0, t] - x[0, t]) / (y[0, index[t]] - x[0, t])
        torch.testing.assert_close(step, torch.full_like(step, ramp[t].item()))


def test_threshold_touches_only_tokens_above_the_floor() -> None:
    x, y = _near_copies()
    for floor in (0.5, None):
        st = dataclasses.replace(HIDDEN, threshold=0.3, threshold_floor=floor)
        out = flex(x, y, torch.eye(16), st)
        _, s = _fit(x[0], y[0])
        bar = sum(s[1:]) / 9 if floor is None else floor
        above = {t for t in range(10) if s[t] >= bar}
        changed = {t for t in range(10) if not torch.equal(out[0, t], x[0, t])}
        assert changed == above and 0 < len(above) < 10


def test_clustered_weights_peaks_and_their_slopes() -> None:
    s = torch.tensor([[0.05, 0.1, 0.6, 0.2, 0.1, 0.15, 0.1, 0.3, 0.7, 0.2, 0.1, 0.05]])
    st = ImagePromptSettings(clustered=0.5, cluster_floor=0.5)
    w = clustered(s, st)
    # peaks 2 and 8; valleys 0, 5 (half-way, rounded up) and 11
    hand = [0, 1 / 2, 1, 2 / 3, 1 / 3, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0]
    torch.testing.assert_close(w[0], 0.5 * torch.tensor(hand))
    torch.testing.assert_close(w[0], 0.5 * torch.tensor(_seed_tent(s[0].tolist(), 0.5)))
    assert not clustered(s, dataclasses.replace(st, cluster_floor=0.8)).any()  # no peak


def test_clustered_moves_only_peaks_and_neighbours() -> None:
    x, y = _near_copies()
    st = dataclasses.replace(HIDDEN, clustered=0.2, cluster_floor=0.5, logit_scale=5.0)
    out = flex(x, y, torch.eye(16), st)
    index, s = _fit(x[0], y[0], 5.0)
    w = _seed_tent(s, 0.5)
    assert [t for t in range(10) if w[t] == 1.0] == [2, 5, 7]  # the near copies are the peaks
    assert w == [0.0, 0.5, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5, 0.0]
    for t in range(10):
        assert torch.equal(out[0, t], x[0, t]) == (w[t] == 0)
        if 0 < w[t] < 1:  # a neighbour: part of the way, by the tent
            expected = x[0, t] + 0.2 * w[t] * (y[0, index[t]] - x[0, t])
            torch.testing.assert_close(out[0, t], expected)


def test_concept_prompt_hands_aligned_tokens_to_the_image() -> None:
    e, _ = torch.linalg.qr(_randn(16, 16, seed=5))
    x = e[None, :6].clone()  # prompt: header e0, tokens e1..e5
    concept = torch.stack([e[6], e[3], e[7], e[0]])[None]  # matches prompt token 3 and header
    y = torch.stack([e[9], e[11], e[3] + 0.3 * e[10], e[12], e[13]])[None]
    out = flex(x, y, torch.eye(16), HIDDEN, concept=concept)
    # concept token 1 (= e3) takes image token 2, its best; prompt token 3 aligns with it
    assert torch.equal(out[0, 3], y[0, 2])
    keep = [0, 1, 2, 4, 5]  # the header is never handed over, unaligned tokens stay
    assert torch.equal(out[0, keep], x[0, keep])
    strict = dataclasses.replace(HIDDEN, concept_alignment=1.0)
    assert torch.equal(flex(x, y, torch.eye(16), strict, concept=concept), x)


def test_negative_settings_move_away_from_the_image() -> None:
    x, y = _randn(1, 12, 16, seed=3), _randn(1, 20, 16, seed=4)
    st = dataclasses.replace(HIDDEN, linear_start=-0.3, linear_end=-0.3, logit_scale=1.0)
    out = flex(x, y, torch.eye(16), st)
    index, _ = _fit(x[0], y[0], 1.0)
    for t in range(1, 12):
        target = y[0, index[t]]
        assert (out[0, t] - target).norm() > (x[0, t] - target).norm()
        torch.testing.assert_close(out[0, t], x[0, t] - 0.3 * (target - x[0, t]))
    # a negative threshold alone still acts (flexdiffuse's whole-map blend dropped it)
    x, y = _near_copies()
    st = dataclasses.replace(HIDDEN, threshold=-0.3, threshold_floor=0.5)
    out = flex(x, y, torch.eye(16), st)
    index, s = _fit(x[0], y[0])
    assert s[2] >= 0.5
    assert (out[0, 2] - y[0, index[2]]).norm() > (x[0, 2] - y[0, index[2]]).norm()


def test_combine_matches_flexdiffuse_for_non_negative_maps() -> None:
    a, b = torch.rand(2, 30, generator=torch.Generator().manual_seed(6))
    assert torch.equal(combine(a, b), torch.maximum(a, b))
    assert torch.equal(combine(-a, -b), torch.minimum(-a, -b))
    assert torch.equal(combine(a, -b), a - b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flex_matches_flexdiffuse_formula(seed: int) -> None:
    x, y = _near_copies(seed)
    for st in (
        dataclasses.replace(ImagePromptSettings(space="hidden"), threshold_floor=0.5),
        ImagePromptSettings(space="hidden", linear_end=1.0, max_image_guidance=1.0,
                            threshold=1.0, threshold_floor=0.2, clustered=0.0),
        ImagePromptSettings(space="hidden", header_cap=1.0, threshold=0.0, clustered=0.5),
    ):
        out = flex(x, y, torch.eye(16), st)
        torch.testing.assert_close(out[0], _seed_tween(x[0], y[0], st), atol=1e-5, rtol=1e-5)


def test_token_weights_cap_both_signs() -> None:
    s = torch.full((1, 5), 0.1)
    st = ImagePromptSettings(linear_start=-1.0, linear_end=1.0, clustered=0.0, threshold=0.0,
                             max_image_guidance=0.4, header_cap=0.15)
    w = token_weights(s, st)[0]
    torch.testing.assert_close(w, torch.tensor([-0.15, -0.4, 0.0, 0.4, 0.4]))


def test_image_only_prompts_with_the_image_tokens() -> None:
    x, y = _randn(1, 8, 16, seed=8), _randn(1, 12, 16, seed=9)
    st = ImagePromptSettings(method="image_only", space="hidden")
    out = guide(x, y, torch.eye(16), st)
    assert torch.equal(out[0, 1:], y[0, 1:8])
    # flexdiffuse: the image header moved 85% towards the placeholder prompt's
    torch.testing.assert_close(out[0, 0], y[0, 0] + 0.85 * (x[0, 0] - y[0, 0]))
    q, _ = torch.linalg.qr(_randn(16, 16, seed=10))
    rotated = image_only(x, y @ q.T, q, dataclasses.replace(st, space="projected"))
    torch.testing.assert_close(rotated, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("changes", "key"), [
    ({"linear_end": float("nan")}, "image_prompt.linear_end"),
    ({"linear_start": 1.5}, "image_prompt.linear_start"),
    ({"clustered": float("inf")}, "image_prompt.clustered"),
    ({"threshold_floor": -0.1}, "image_prompt.threshold_floor"),
    ({"cluster_floor": 2.0}, "image_prompt.cluster_floor"),
    ({"max_image_guidance": -0.2}, "image_prompt.max_image_guidance"),
    ({"header_cap": 1.2}, "image_prompt.header_cap"),
    ({"concept_alignment": float("nan")}, "image_prompt.concept_alignment"),
    ({"logit_scale": 0.0}, "image_prompt.logit_scale"),
    ({"threshold": "0.5"}, "image_prompt.threshold"),
    ({"method": "ip-adaptr"}, "image_prompt.method"),
    ({"space": "pixels"}, "image_prompt.space"),
])
def test_bad_settings_raise_naming_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"^{key}: "):
        check(dataclasses.replace(ImagePromptSettings(), **changes))


def test_check_names_the_caller_key() -> None:
    with pytest.raises(ValueError, match=r"^regions\[2\]\.image_prompt\.linear_end: "):
        check(ImagePromptSettings(linear_end=-3.0), key="regions[2].image_prompt")
    assert check(ImagePromptSettings(threshold_floor=None)).threshold_floor is None


def test_mismatched_shapes_raise(clip: dict[str, Any]) -> None:
    h, y, w = clip["hidden"], clip["image"], clip["projection"]
    st = ImagePromptSettings()
    with pytest.raises(ValueError, match="not the same CLIP"):
        check_inputs(h, y[..., :20], w, st)
    with pytest.raises(ValueError, match=r"image_prompt\.space"):
        check_inputs(h, y, w, dataclasses.replace(st, space="hidden"))
    with pytest.raises(ValueError, match="batch 3"):
        check_inputs(h, y[:1].expand(3, -1, -1), w, st)
    with pytest.raises(ValueError, match="not finite"):
        check_inputs(h, torch.full_like(y, float("nan")), w, st)
    with pytest.raises(ValueError, match="concept"):
        check_inputs(h, y, w, st, concept=h[..., :8])
