"""The stream batch on the tiny LCM model: the same frames as the plain few-step loop, and
input changes on screen within one pass through the steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hypermosaic.canvas import canvas_config_from_dict, plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.pipelines.canvas import loop, render_canvas
from hypermosaic.pipelines.models import make_scheduler
from hypermosaic.pipelines.stream import StreamBatch, lcm_schedule, lcm_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")
H, W = 64, 96


@pytest.fixture(scope="module")
def lcm():
    from tests.tiny import tiny_pipeline

    return tiny_pipeline("lcm")


def write_mask(path: Path, box: tuple[int, int, int, int], width: int = W) -> Path:
    alpha = np.zeros((H, width), np.uint8)
    top, bottom, left, right = box
    alpha[top:bottom, left:right] = 255
    Image.fromarray(alpha, "L").save(path)
    return path


def plan_of(tmp_path: Path, box: tuple[int, int, int, int], prompt: str = "a red fox",
            steps: int = 4, bootstrap: int = 0, width: int = W):
    raw = {"width": width, "height": H, "steps": steps, "seed": 5, "scheduler": "lcm",
           "guidance": 6.0, "bootstrap_steps": bootstrap,
           "background": {"prompt": "a green meadow"},
           "regions": [{"kind": "brush", "prompt": prompt, "blur": 4.0,
                        "mask": str(write_mask(tmp_path / f"m{box}-{width}.png", box, width))}]}
    return plan_canvas(canvas_config_from_dict(raw, base=tmp_path, source="test"))


def plain_latents(pipe, plan, monkeypatch) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    decode = loop.decode_tiled

    def capture(vae, latents, tile, overlap):
        seen.append(latents.clone())
        return decode(vae, latents, tile, overlap)

    monkeypatch.setattr(loop, "decode_tiled", capture)
    render_canvas(pipe, plan)
    monkeypatch.undo()
    return seen[0]


def test_lcm_step_per_row_equals_the_scheduler(lcm):
    scheduler = make_scheduler("lcm", lcm.scheduler)
    schedule = lcm_schedule(make_scheduler("lcm", lcm.scheduler), 4)
    scheduler.set_timesteps(4)
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    eps = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(2))
    for i, t in enumerate(scheduler.timesteps):
        theirs = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
        z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
        ours = lcm_step(schedule, torch.tensor([i]), eps, x, z)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bootstrap", [0, 1])
def test_a_frame_equals_the_plain_loop_once_inputs_stop_changing(lcm, tmp_path, monkeypatch,
                                                                bootstrap):
    """Two latents entered with other inputs are still in the ring (and share its UNet
    calls) while the frames entered after the change go through it."""
    changing = plan_of(tmp_path, (0, 32, 0, 48), "a blue boat", bootstrap=bootstrap)
    plan = plan_of(tmp_path, (16, 64, 32, 96), bootstrap=bootstrap)
    stream = StreamBatch(lcm)
    frames = [stream.advance(changing, k, seed=100 + k) for k in range(2)]
    frames += [stream.advance(plan, k, seed=100 + k) for k in range(2, 3 + plan.steps)]
    assert frames[:plan.steps - 1] == [None] * (plan.steps - 1)
    done = [f for f in frames if f is not None]
    assert [f.index for f in done] == [0, 1, 2, 3]
    assert [f.plan == plan for f in done] == [False, False, True, True]
    for frame in done[2:]:  # entered after the last change
        reference = plain_latents(lcm, dataclasses.replace(plan, seed=frame.seed), monkeypatch)
        torch.testing.assert_close(frame.latents, reference, atol=1e-4, rtol=0)


def test_a_mask_change_at_frame_k_shows_by_frame_k_plus_steps(lcm, tmp_path):
    before = plan_of(tmp_path, (0, 64, 0, 24), width=64)
    after = plan_of(tmp_path, (0, 64, 40, 64), width=64)
    stream = StreamBatch(lcm)
    k, steps = 4, before.steps
    shown: dict[int, np.ndarray] = {}
    for call in range(k + steps + 1):
        frame = stream.advance(before if call < k else after, call, seed=7)
        if frame is not None:
            shown[call] = frame.image
    unchanged = shown[k - 1]
    changed = [call for call in sorted(shown) if not np.array_equal(shown[call], unchanged)]
    assert changed and changed[0] <= k + steps
    # the fixed seed: once the ring holds only the new inputs, frames are still
    assert np.array_equal(shown[k + steps - 1], shown[k + steps])
    assert not np.array_equal(shown[k + steps - 2], shown[k + steps - 1])


def test_the_stream_refuses_what_it_does_not_paint(lcm, tmp_path):
    plan = dataclasses.replace(plan_of(tmp_path, (0, 32, 0, 32)), scheduler="euler")
    with pytest.raises(InputError, match="scheduler"):
        StreamBatch(lcm).advance(plan, 0, 0)
