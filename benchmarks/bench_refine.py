"""Detail pass: batched windows against one UNet call per window, and peak memory.

1. Windows per second of a band of the detail pass (`hypermosaic.pipelines.refine`) on the
   tiny random Stable Diffusion with a four-block VAE of SD's factor 8 (a 64 px window is
   8x8 latents, as a 512 px window is 64x64 in SD), classifier-free guidance 7.5: all windows
   of a step through the UNet in calls of ``--batch`` windows, against one call per window.
   Same band, same pixels (the largest difference is printed). The routes alternate for
   ``--rounds`` rounds and the fastest of each is kept; the ratio is printed.
2. Peak RSS of the whole command's detail pass (ESRGAN and refine, streamed) on a short and a
   ``--tall`` times taller image of the same width, each in its own process: the ratio of the
   peaks' growth over the process's start shows memory that does not follow the height.

Run from the repository root (it builds its model with `tests.tiny`)::

    python -m benchmarks.bench_refine [--width 1024] [--rounds 3] [--batch 16] [--tall 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks._machine import print_machine
from hypermosaic.pipelines.refine import refine_band
from hypermosaic.upscale.refine import RefineConfig
from hypermosaic.upscale.strips import plan_refine
from tests.tiny import tiny_pipeline


def band_seconds(pipe, width: int, batch: int) -> tuple[float, int, np.ndarray]:
    """Seconds to refine one band ``width`` px wide in calls of ``batch`` windows; its
    windows and pixels."""
    refine = RefineConfig(prompt="a forest", model="tiny", steps=4, strength=0.5,
                          batch_size=batch)
    plan = plan_refine(64, width, 8, 64, refine)
    band = plan.bands[0]
    pixels = (np.random.default_rng(0).random((64, width, 3)) * 255).astype(np.uint8)
    start = time.perf_counter()
    result = refine_band(pipe, pixels, band, plan, refine)
    return time.perf_counter() - start, len(band.columns) * 2, result.pixels


_MEMORY_CHILD = """
import resource, sys
from pathlib import Path
import numpy as np, pyvips, torch
torch.set_num_threads(1)
from hypermosaic.upscale import refine_config, upscale_images
from tests.helpers import save_srvgg
from tests.tiny import save_tiny_pipeline
folder, height, width = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tiny = save_tiny_pipeline(folder / f"tiny{height}")
esrgan = save_srvgg(folder / "x2.safetensors", 2)
src = folder / f"in{height}.png"
rng = np.random.default_rng(0)
pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
pyvips.Image.new_from_array(pixels, interpretation="srgb").write_to_file(str(src))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refine = refine_config({"prompt": "a house", "model": str(tiny), "steps": 1, "strength": 1.0,
                        "guidance": 1.0, "batch_size": 16})
upscale_images([src], folder / f"out{height}.tif", model=str(esrgan), device="cpu",
               dtype="float32", refine=refine)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def peak_growth(height: int, width: int) -> int:
    """KiB the peak RSS of a fresh process rises by while upscaling and refining an image."""
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, folder, str(height),
                                 str(width)], capture_output=True, text=True, check=True,
                                env={"OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
                                     "PATH": "/usr/bin:/bin", "PYTHONPATH": "."})
    return int(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1024, help="band width in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tall", type=int, default=8, help="height ratio of the two images")
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)
    pipe = tiny_pipeline(vae_factor=8)

    # 1. Batched against one call per window, alternating; fastest of each.
    best = {1: float("inf"), args.batch: float("inf")}
    images = {}
    for _ in range(args.rounds):
        for batch in best:
            seconds, windows, images[batch] = band_seconds(pipe, args.width, batch)
            best[batch] = min(best[batch], seconds)
    diff = np.abs(images[1].astype(int) - images[args.batch].astype(int)).max()
    one, many = windows / best[1], windows / best[args.batch]
    print(f"windows/s ({windows // 2} windows x 2 steps, 64 px, width {args.width}): "
          f"one per call {one:.1f}, {args.batch} per call {many:.1f}, "
          f"ratio {many / one:.2f}x (largest pixel difference {diff})")

    # 2. Peak memory against the image's height.
    short, tall = 64, 64 * args.tall
    small, large = peak_growth(short, 256), peak_growth(tall, 256)
    print(f"peak RSS growth, refined 512 x {2 * short}: {small / 1024:.0f} MiB; "
          f"512 x {2 * tall}: {large / 1024:.0f} MiB; ratio {large / max(small, 1):.2f} "
          f"for {args.tall}x the pixels")


if __name__ == "__main__":
    main()
