"""Real-ESRGAN on CPU: our PyTorch path against the ncnn runtime, and streamed peak memory.

1. Seconds per tile (128 and 256 px) for x4plus and fast, same weights and input, timed in
   alternation in this run: ncnn (fp32) is the baseline, the ratio is ours / ncnn (below 1
   is faster). PyTorch variants: NCHW or channels-last memory, `no_grad` or
   `inference_mode`, float32 or bfloat16 (``bf16``, the CPU default where it is native), and
   1 or 2 intra-op threads. Each line also gives the PSNR of the variant's output against
   ncnn's (float32 paths: over 100 dB, only rounding differs).
2. Peak RSS of `hypermosaic.upscale.run.upscale_file` (model fast, default 256 px tiles, the
   default `auto` dtype, printed) for inputs 4096 px wide, 1024 and 4096 px tall (outputs
   16384 px wide), each in a fresh process; the ratio is against the shorter image and
   against the output's raw size.

Run from the repository root: python -m benchmarks.bench_upscale [--quick] [--part tiles|memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks._machine import print_machine
from hypermosaic.identity import ESRGAN_MODELS
from hypermosaic.pipelines.esrgan import load_model, ncnn_model_files

# Peak RSS from VmHWM: getrusage's ru_maxrss would carry the parent's peak across fork/exec.
_RSS_CHILD = """
import json, re, sys, time, torch
from hypermosaic.pipelines.esrgan import load_upscaler
from hypermosaic.upscale import plan_jobs, upscale_file
torch.set_num_threads(int(sys.argv[3]))
(job,) = plan_jobs([sys.argv[1]], sys.argv[2], "fast")
upscaler = load_upscaler("fast", device="cpu")  # the CLI's default dtype, auto
start = time.perf_counter()
upscale_file(job, upscaler)
status = open("/proc/self/status").read()
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": peak_kib / 1024,
                  "dtype": str(upscaler.dtype).removeprefix("torch.")}))
"""


def _ncnn_runner(name: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import ncnn

    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_packed", "use_fp16_storage",
                   "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, option, False)
    net.opt.num_threads = threads
    param, bin_path = ncnn_model_files(ESRGAN_MODELS[name].ncnn_stem)
    net.load_param(str(param))
    net.load_model(str(bin_path))

    def run(chw: np.ndarray) -> np.ndarray:
        mat = ncnn.Mat(chw)
        extractor = net.create_extractor()
        extractor.input("data", mat)
        return np.array(extractor.extract("output")[1])

    return run


def _torch_runner(
    model: torch.nn.Module, channels_last: bool, inference: bool, threads: int,
    dtype: torch.dtype = torch.float32,
) -> Callable[[np.ndarray], np.ndarray]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(dtype=dtype, memory_format=fmt)  # .to() works in place

    def run(chw: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        with torch.inference_mode() if inference else torch.no_grad():
            x = torch.from_numpy(chw)[None].to(dtype).contiguous(memory_format=fmt)
            return model(x).clamp_(0, 1)[0].float().numpy()

    return run


def tile_seconds(
    name: str, size: int, variants: list[str], repeats: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best-of-`repeats` seconds per tile for each variant, run in alternation, and each
    variant's output."""
    from skimage import data

    photo = data.astronaut()[64 : 64 + size, 160 : 160 + size].astype(np.float32) / 255.0
    chw = np.ascontiguousarray(photo.transpose(2, 0, 1))
    model = load_model(name)
    runners = {}
    for variant in variants:
        threads = 2 if variant.endswith("2t") else 1
        if variant.startswith("ncnn"):
            runners[variant] = _ncnn_runner(name, threads)
        else:
            dtype = torch.bfloat16 if "bf16" in variant else torch.float32
            runners[variant] = _torch_runner(
                model, "cl" in variant, "inference" in variant, threads, dtype
            )
    best = dict.fromkeys(variants, float("inf"))
    outputs = {}
    for _ in range(repeats):
        for variant, run in runners.items():
            start = time.perf_counter()
            outputs[variant] = run(chw)
            best[variant] = min(best[variant], time.perf_counter() - start)
    return best, outputs


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2, dtype=np.float64))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def peak_rss(height: int, folder: Path, threads: int) -> dict[str, float]:
    """Stream a 4096 x `height` photo mosaic through `upscale_file` in a fresh process."""
    import pyvips
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    tile = pyvips.Image.new_from_array(photo, interpretation="srgb")
    src = folder / f"in-{height}.tif"
    tile.replicate(8, height // 512 + 1).crop(0, 0, 4096, height).tiffsave(
        str(src), tile=True, compression="deflate"
    )
    dst = folder / f"out-{height}.tif"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(src), str(dst), str(threads)],
        check=True, capture_output=True, text=True, env=env,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["output_raw_mib"] = 4096 * 4 * height * 4 * 3 / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, small RSS run")
    parser.add_argument("--part", choices=["tiles", "memory"], help="run only this part")
    args = parser.parse_args()
    print_machine()
    if args.part != "memory":
        tile_figures(2 if args.quick else 3)
    if args.part != "tiles":
        memory_figures([256, 1024] if args.quick else [1024, 4096], threads=1)


def tile_figures(repeats: int) -> None:
    """Part 1: seconds per tile, ours against ncnn."""
    torch_variants = ["torch nchw no_grad", "torch nchw inference", "torch cl no_grad",
                      "torch cl inference", "torch cl inference bf16"]
    two_threads = ["ncnn 2t", "torch cl inference 2t", "torch cl inference bf16 2t"]
    largest = ["ncnn", "torch nchw no_grad", "torch cl inference", "torch cl inference bf16"]
    plan = [
        ("x4plus", 128, ["ncnn", *torch_variants, *two_threads]),
        ("x4plus", 256, largest),
        ("fast", 128, ["ncnn", *torch_variants, *two_threads]),
        ("fast", 256, largest),
    ]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; best of {repeats}, s/tile")
    for name, size, variants in plan:
        seconds, outputs = tile_seconds(name, size, variants, repeats)
        baseline = {threads: seconds["ncnn 2t" if threads == 2 else "ncnn"]
                    for threads in (1, 2) if ("ncnn 2t" if threads == 2 else "ncnn") in seconds}
        for variant, value in seconds.items():
            threads = 2 if variant.endswith("2t") else 1
            print(f"{name:>6} {size:>3}px  {variant:<27} {value:8.3f} s   "
                  f"ratio vs ncnn ({threads}t) {value / baseline[threads]:.2f}   "
                  f"PSNR vs ncnn {_psnr(outputs[variant], outputs['ncnn']):6.1f} dB")


def memory_figures(heights: list[int], threads: int) -> None:
    """Part 2: peak RSS of the streamed path for two image heights."""
    with tempfile.TemporaryDirectory() as folder:
        runs = {h: peak_rss(h, Path(folder), threads) for h in heights}
    short, tall = runs[heights[0]], runs[heights[1]]
    for height, figures in runs.items():
        print(f"stream fast ({figures['dtype']}) 4096x{height} -> {4096 * 4}x{height * 4}: "
              f"{figures['seconds']:.0f} s, peak RSS {figures['peak_mib']:.0f} MiB, "
              f"output raw {figures['output_raw_mib']:.0f} MiB, "
              f"peak/raw {figures['peak_mib'] / figures['output_raw_mib']:.2f}")
    print(f"peak RSS ratio {heights[1]} vs {heights[0]} rows (4x the pixels): "
          f"{tall['peak_mib'] / short['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
