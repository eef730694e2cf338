"""Image prompts in the diffusion engine: a tile batch guided by CLIP image embeddings against
the same batch unguided, on the same model and engine, and the vision calls each batch makes.

Models, built in code and seeded: the tiny Stable Diffusion of `tests.tiny` (the one
`bench_diffusion_batch` uses: a two-level UNet 32/64 wide with cross-attention, a two-block VAE,
so a 64 px tile is 32x32 latents, a five-layer CLIP text encoder 32 wide) and a small CLIP vision
model with projection (``--vision-size`` px images in 8 px patches, 4 layers 64 wide, projecting
to the text encoder's 32), larger than the tests' `tiny_vision_model` so that its call weighs
something. One `DiffusionEngine`, built through `hypermosaic.registry.diffusion_engine` with the
style image as a build hands it over, runs every case; each batch is one `tiles` call of B tiles
(one pipeline call), with a distinct prompt per tile, as a build's siblings have.

Cases, per batch size: ``none`` (no image prompt), ``tile`` (``image = "tile"``, every other
setting its default) and ``style`` (a style image, ``examples/images/chelsea.png`` cropped and
resized to the tile as a build does, default settings). The cases alternate within each repeat.
Vision calls are counted by a forward hook on the vision transformer (what
`image_token_embeddings` calls), with the images in each call; the guidance step alone
(`ImagePrompts.guide`: vision call, matching, moving) is timed by wrapping it.

Prints, per batch size and case: the median wall seconds over ``--repeats``; the ratio to
``none`` as the median of the ratios within each repeat, of wall time and of this process's CPU
time (the steadier of the two on a shared CPU; meaningless on a GPU), both noisy when guidance
costs less than the run-to-run spread; the guidance step's median milliseconds and their share
of the unguided batch's median wall time (the steadiest figure); vision calls per batch; images
per call; the largest pixel difference to ``none`` (the guidance did act). Then the peak RSS of
the process tree (psutil, every 0.2 s) and the RSS with the SD model loaded and with the vision
model added. Exits 1 unless every guided batch made exactly one vision call and no unguided
batch any.

    python -m benchmarks.bench_image_prompt [--batch-sizes 1 4 8] [--repeats 7]   # repo root
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._machine import print_machine
from benchmarks.bench_build import PeakRSS, tree_rss
from hypermosaic import registry
from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.image_prompts import TILE, ImagePromptConfig
from hypermosaic.images import encode, load_image, resize, square_crop
from hypermosaic.tree import node_seed
from tests.tiny import save_tiny_pipeline

STYLE = Path(__file__).resolve().parents[1] / "examples" / "images" / "chelsea.png"
CASES = ("none", "tile", "style")
MB = 1024 * 1024


def save_vision_model(path: Path, image_size: int) -> Path:
    """A seeded CLIP vision model with projection: ``image_size`` px, 8 px patches, 4 layers
    64 wide, 4 heads, projecting to 32 (the tiny text encoder's width); saved to ``path``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(image_size=image_size, patch_size=8, hidden_size=64,
                              intermediate_size=256, num_attention_heads=4, num_hidden_layers=4,
                              layer_norm_eps=1e-5, projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPVisionModelWithProjection(config).eval().save_pretrained(path)
    return path


def parameters(module: Any) -> str:
    """A module's parameter count, in millions."""
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--size", type=int, default=64, help="tile side, px")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--vision-size", type=int, default=64, help="vision model's image side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="median of this many runs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)
    largest = max(args.batch_sizes)

    with tempfile.TemporaryDirectory() as folder, PeakRSS() as peak:
        # 1. the models, the engine (as a build's worker gets it) and the vision model, loaded
        model = save_tiny_pipeline(Path(folder) / "tiny-sd")
        vision_dir = save_vision_model(Path(folder) / "vision", args.vision_size)
        style = resize(square_crop(load_image(STYLE)), args.size, args.size)
        engine = registry.diffusion_engine({
            "model": str(model), "batch_size": largest, "device": args.device,
            "style_images": ((str(STYLE), encode(style)),),
        })
        rss_sd = tree_rss()
        vision = engine.image_prompts.vision(str(vision_dir), None)  # cached: the one it uses
        rss_vision = tree_rss()

        # 2. a forward hook counting vision calls (and images per call); `guide` timed
        calls: list[int] = []

        def count_call(module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any],
                       output: Any) -> None:
            pixels = kwargs.get("pixel_values", inputs[0] if inputs else None)
            calls.append(len(pixels))

        vision.model.vision_model.register_forward_hook(count_call, with_kwargs=True)
        guide_ms: list[float] = []
        guide = engine.image_prompts.guide

        def timed_guide(*guide_args: Any) -> Any:
            start = time.perf_counter()
            result = guide(*guide_args)
            guide_ms.append(1000 * (time.perf_counter() - start))
            return result

        engine.image_prompts.guide = timed_guide

        # 3. the jobs of each case and batch size, the same tiles and prompts in every case
        def settings(image: str) -> tuple[tuple[str, Any], ...]:
            config = ImagePromptConfig(image=image, vision_model=str(vision_dir))
            return tuple(config.model_dump().items())

        prompts = {"none": None, "tile": settings(TILE), "style": settings(str(STYLE))}
        inits = np.random.default_rng(0).integers(
            0, 256, (largest, args.size, args.size, 3), dtype=np.uint8
        )
        context = TileContext(parent=inits[0], grid=int(np.ceil(np.sqrt(largest))),
                              primary=inits[0])

        def jobs(case: str, count: int) -> list[TileJob]:
            addresses = [((i // 4, i % 4),) for i in range(count)]
            return [TileJob(address=a, seed=node_seed(0, a), prompt=f"a shell, tile {i}",
                            negative_prompt="", strength=args.strength, steps=args.steps,
                            guidance=7.5, image_prompt=prompts[case])
                    for i, a in enumerate(addresses)]

        def run(case: str, count: int) -> Callable[[], np.ndarray]:
            batch = jobs(case, count)
            return lambda: engine.tiles(inits[:count], batch, context)

        for case in CASES:  # warm-up: first-call allocations
            run(case, 1)()

        # 4. the cases alternate within each repeat; medians over the repeats, ratios paired
        #    within a repeat (a guided batch against the unguided one just before it)
        keys = [(count, case) for count in args.batch_sizes for case in CASES]
        seconds: dict[tuple[int, str], list[float]] = {key: [] for key in keys}
        cpu: dict[tuple[int, str], list[float]] = {key: [] for key in keys}
        guide_times: dict[tuple[int, str], list[float]] = {key: [] for key in keys}
        vision_calls: dict[tuple[int, str], list[list[int]]] = {key: [] for key in keys}
        images: dict[tuple[int, str], np.ndarray] = {}
        routes = {key: run(key[1], key[0]) for key in keys}
        for _ in range(args.repeats):
            for key in keys:
                calls.clear()
                guide_ms.clear()
                start, start_cpu = time.perf_counter(), time.process_time()
                images[key] = routes[key]()
                seconds[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
                vision_calls[key].append(list(calls))
                guide_times[key].extend(guide_ms)

    # 5. the table
    pipe = engine.img2img
    print(f"tiny SD (tests.tiny: UNet {parameters(pipe.unet)}, VAE {parameters(pipe.vae)}, "
          f"text encoder {parameters(pipe.text_encoder)} params), CLIP vision "
          f"{args.vision_size} px / 8 px patches, 4 x 64 wide ({parameters(vision.model)} params)")
    print(f"tiles of {args.size} px, {args.steps} steps x strength {args.strength}, guidance "
          f"7.5, {engine.device}, CPU threads {args.threads}, median of {args.repeats}, "
          f"one tiles() call per batch")
    print(f"{'batch':>5} {'case':>5} {'seconds':>8} {'vs none':>8} {'cpu vs':>7} "
          f"{'guide ms':>9} {'share':>6} {'vision calls':>12} {'images/call':>11} "
          f"{'px diff':>7}")
    wrong = []
    for count, case in keys:
        median, unguided = (statistics.median(seconds[count, c]) for c in (case, "none"))
        ratio, cpu_ratio = (statistics.median(a / b for a, b in zip(times[count, case],
                                                                    times[count, "none"],
                                                                    strict=True))
                            for times in (seconds, cpu))
        guided = guide_times[count, case]
        guide = statistics.median(guided) if guided else 0.0
        guide_text = (f"{guide:9.1f} {guide / 10 / unguided:5.1f}%" if guided
                      else f"{'-':>9} {'-':>6}")
        per_batch = {len(c) for c in vision_calls[count, case]}
        sizes = sorted({n for c in vision_calls[count, case] for n in c})
        diff = int(np.abs(images[count, case].astype(int)
                          - images[count, "none"].astype(int)).max())
        print(f"{count:5d} {case:>5} {median:8.3f} {ratio:7.3f}x {cpu_ratio:6.3f}x "
              f"{guide_text} {'/'.join(map(str, sorted(per_batch))):>12} "
              f"{'/'.join(map(str, sizes)) or '-':>11} {diff:7d}")
        if per_batch != {0 if case == "none" else 1}:
            wrong.append(f"batch {count} {case}: {sorted(per_batch)} vision calls")
    print(f"RSS: {rss_sd // MB:,} MB with the SD model loaded, {rss_vision // MB:,} MB with the "
          f"vision model too; peak RSS {peak.mb:,} MB (process tree, psutil every 0.2 s)")
    if wrong:
        print("expected one vision call per guided batch, none unguided: " + "; ".join(wrong))
        sys.exit(1)


if __name__ == "__main__":
    main()
