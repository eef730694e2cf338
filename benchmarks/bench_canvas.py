"""Canvas: batched windows against one UNet call per window; tiled against untiled VAE decode.

1. Seconds per denoising step of a canvas of overlapping 64 px windows (tiny random Stable
   Diffusion with a four-block VAE of SD's factor 8, so a 64 px window is 8x8 latents as in
   SD; classifier-free guidance 7.5), for grids of 12 and 48 windows: all windows of a
   step through the UNet in calls of ``--batch-size`` windows, against the original per-tile
   loop (one call per window, its two guidance rows batched). Same plan, same pixels (the
   largest difference is printed). The routes alternate for ``--rounds`` rounds and the fastest
   timed step of each is reported: on a shared machine the others measure the neighbours' load.
   Each model dtype of ``--dtype`` (the canvas config's ``dtype``) is measured in turn: float32,
   the CPU default, and bfloat16, which halves the arithmetic on a CPU with native bfloat16
   and so helps the compute-bound batched calls most.
   ``--vae-factor 2`` is the tests' two-block VAE (64 px = 32x32 latents), where the tiny
   UNet's arithmetic, not its per-call overhead, dominates on a CPU.
2. Peak memory of decoding a ``--side`` px latent canvas in one VAE pass against
   `decode_tiled`, each in its own process (peak RSS growth over the process's RSS before the
   decode), with the seconds each took, for the tests' two-block VAE. The default 512 px
   decodes untiled in well under a minute on two cores; the tiny VAE's mid-block attention
   over all latent positions makes 1024 px take many minutes untiled.

Run from the repository root (it builds its model with `tests.tiny`)::

    python -m benchmarks.bench_canvas [--steps 4] [--rounds 5] [--batch-size 64] [--threads 2]
                                      [--window 64] [--vae-factor 8] [--side 512]
                                      [--dtype float32,bfloat16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks._machine import print_machine
from hypermosaic.canvas.config import canvas_config_from_dict
from hypermosaic.canvas.plan import CanvasPlan, plan_canvas
from hypermosaic.pipelines.canvas import render_canvas
from tests.tiny import tiny_pipeline


def grid_plan(rows: int, cols: int, steps: int, batch_size: int, window: int) -> CanvasPlan:
    """A rows x cols grid of ``window`` px windows overlapping by half a window."""
    prompts = [[f"tile {r} {c}, a forest" for c in range(cols)] for r in range(rows)]
    raw = {"steps": steps, "seed": 1, "guidance": 7.5, "batch_size": batch_size,
           "grid": {"prompt": prompts, "tile_height": window, "tile_width": window,
                    "tile_row_overlap": window // 2, "tile_col_overlap": window // 2}}
    return plan_canvas(canvas_config_from_dict(raw, base=".", source="bench"))


def _status_mb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def seconds_per_step(pipe, plan: CanvasPlan) -> tuple[float, int, np.ndarray]:
    """Fastest wall time between step callbacks (the first step, warm-up, excluded), and the
    render's peak RSS growth in MB (the peak is reset first through ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = _status_mb("VmRSS")
    stamps = [time.perf_counter()]
    image = render_canvas(pipe, plan, lambda step, steps: stamps.append(time.perf_counter()))
    gaps = np.diff(stamps)[1:]
    return float(gaps.min()), _status_mb("VmHWM") - before, image


def step_figures(pipe, steps: int, batch_size: int, rounds: int, window: int) -> None:
    dtype = str(pipe.unet.dtype).removeprefix("torch.")
    for rows, cols in ((3, 4), (6, 8)):
        batched = grid_plan(rows, cols, steps, batch_size, window)
        single = dataclasses.replace(batched, batch_size=1)
        fast = slow = float("inf")
        fast_mb = slow_mb = 0
        for _ in range(rounds):  # alternate the routes so both see the same load
            seconds, grown, image_fast = seconds_per_step(pipe, batched)
            fast, fast_mb = min(fast, seconds), max(fast_mb, grown)
            seconds, grown, image_slow = seconds_per_step(pipe, single)
            slow, slow_mb = min(slow, seconds), max(slow_mb, grown)
        diff = int(np.abs(image_fast.astype(int) - image_slow.astype(int)).max())
        print(f"{dtype:>8} {rows * cols:3d} windows ({batched.width}x{batched.height} px): "
              f"batched {fast:.3f} s/step (peak +{fast_mb} MB), per-window {slow:.3f} s/step "
              f"(peak +{slow_mb} MB), ratio {slow / fast:.1f}x, max pixel difference {diff}")


DECODE = """
import json, sys, time, torch
from tests.tiny import tiny_pipeline
from hypermosaic.pipelines.canvas import decode_tiled, vae_scale_factor

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024

mode, side, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
vae = tiny_pipeline().vae
f = vae_scale_factor(vae)
latents = torch.randn(1, 4, side // f, side // f, generator=torch.Generator().manual_seed(0))
open("/proc/self/clear_refs", "w").write("5")  # the peak so far (imports, set-up) is not ours
before, start = rss("VmRSS"), time.perf_counter()
with torch.no_grad():
    if mode == "tiled":
        decode_tiled(vae, latents, 256 // f, 64 // f)
    else:
        vae.decode(latents / vae.config.scaling_factor).sample.numpy()
print(json.dumps({"peak_mb": rss("VmHWM") - before, "seconds": time.perf_counter() - start}))
"""


def memory_figures(side: int, threads: int) -> None:
    runs = {}
    for mode in ("untiled", "tiled"):
        done = subprocess.run([sys.executable, "-c", DECODE, mode, str(side), str(threads)],
                              capture_output=True, text=True, check=True)
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    untiled, tiled = runs["untiled"], runs["tiled"]
    print(f"VAE decode of a {side}x{side} px canvas: untiled peak +{untiled['peak_mb']} MB "
          f"({untiled['seconds']:.1f} s), tiled (256 px tiles) peak +{tiled['peak_mb']} MB "
          f"({tiled['seconds']:.1f} s), ratio {untiled['peak_mb'] / max(1, tiled['peak_mb']):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=64, help="window side, px")
    parser.add_argument("--dtype", default="float32,bfloat16",
                        help="comma-separated model dtypes, each measured in turn (the canvas "
                        "config's dtype; bfloat16 pays where the CPU has it natively)")
    parser.add_argument("--vae-factor", type=int, choices=(2, 8), default=8,
                        help="the tiny VAE's scale factor (8: SD's, 64 px = 8x8 latents)")
    parser.add_argument("--side", type=int, default=512,
                        help="decoded canvas side, px (the untiled decode of 1024 px takes many "
                        "minutes on two cores)")
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)
    latents = args.window // args.vae_factor
    print(f"device cpu, torch threads {args.threads}, guidance 7.5, {args.window} px windows "
          f"({latents}x{latents} latents), batch of {args.batch_size} windows")
    for dtype in args.dtype.split(","):
        pipe = tiny_pipeline(vae_factor=args.vae_factor).to(dtype=getattr(torch, dtype))
        step_figures(pipe, args.steps, args.batch_size, args.rounds, args.window)
    memory_figures(args.side, args.threads)


if __name__ == "__main__":
    main()
