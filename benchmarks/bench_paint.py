"""Paint: the multi-prompt stream batch against the plain few-step loop, and stroke latency.

1. Frames per second of a painting (two brushes over a background prompt, LCM, ``--steps``
   steps, fixed seed) on the tiny random LCM model: the stream batch (`StreamBatch`: one UNet
   pass over the windows of all ``steps`` latents per frame) against the plain loop that runs
   every step per frame (`render_canvas`), both decoding each frame. The routes alternate for
   ``--rounds`` rounds of ``--frames`` frames and the fastest round of each is reported (on a
   shared machine the others measure the neighbours' load), with their ratio. Measured for the
   four-block VAE of SD's factor 8 with ``--window`` px windows (8x8 latents for 64 px, where
   a UNet call's overhead weighs most, as on a GPU) on a ``--side`` px canvas (24 windows per
   latent) and on one window's canvas (3 windows: one per prompt), and for the tests'
   two-block VAE (64 px = 32x32 latents, where the tiny UNet's arithmetic dominates on a CPU).
2. Latency from a stroke to the first frame that shows it, in the engine (a new mask every
   frame) and through the whole server (`hypermosaic paint`'s app on a one-worker Dask pool,
   a WebSocket client sending a mask and waiting for the first frame of that version; a
   128 px canvas of the factor-8 model), p50 and p95, with the peak RSS growth of the engine's
   process.

Run from the repository root (it builds its models with `tests.tiny`)::

    python -m benchmarks.bench_paint [--steps 4] [--frames 8] [--rounds 5] [--side 128]
                                     [--window 64] [--threads 2] [--strokes 15]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._machine import print_machine
from hypermosaic.canvas import CanvasPlan, canvas_config_from_dict, plan_canvas
from hypermosaic.pipelines.canvas import render_canvas
from hypermosaic.pipelines.stream import StreamBatch
from tests.tiny import tiny_pipeline


def _status_mb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def mask_file(folder: Path, side: int, left: int, right: int) -> str:
    alpha = np.zeros((side, side), np.uint8)
    alpha[side // 4 : 3 * side // 4, left:right] = 255
    path = folder / f"mask-{side}-{left}-{right}.png"
    Image.fromarray(alpha, "L").save(path)
    return str(path)


def painting_plan(folder: Path, side: int, steps: int, window: int | None,
                  right: int | None = None) -> CanvasPlan:
    """Two brushes (the second one's right edge at ``right``) over a background prompt."""
    right = side // 2 if right is None else right
    raw = {"width": side, "height": side, "steps": steps, "seed": 3, "scheduler": "lcm",
           "guidance": 1.5, "window_size": window,
           "background": {"prompt": "a plain white wall"},
           "regions": [
               {"kind": "brush", "prompt": "a red apple", "blur": 8.0,
                "mask": mask_file(folder, side, 0, side // 4)},
               {"kind": "brush", "prompt": "a blue sky", "blur": 8.0,
                "mask": mask_file(folder, side, side // 4 + 8, right)}]}
    return plan_canvas(canvas_config_from_dict(raw, base=folder, source="bench"))


def fps_figures(pipe, plan: CanvasPlan, frames: int, rounds: int) -> None:
    stream = StreamBatch(pipe)
    for k in range(plan.steps):  # fill the ring
        stream.advance(plan, k, plan.seed)
    fast = slow = float("inf")
    for _ in range(rounds):  # alternate the routes so both see the same load
        start = time.perf_counter()
        for k in range(frames):
            stream.advance(plan, k, plan.seed)
        fast = min(fast, (time.perf_counter() - start) / frames)
        start = time.perf_counter()
        for _ in range(max(1, frames // 2)):
            render_canvas(pipe, plan)
        slow = min(slow, (time.perf_counter() - start) / max(1, frames // 2))
    windows = len(stream.slots[0].scene.windows) if stream.slots else 0
    print(f"  {plan.width}x{plan.height} px, {windows} windows per latent: stream "
          f"{1 / fast:.1f} fps, plain loop {1 / slow:.1f} fps, ratio {slow / fast:.2f}x")


def engine_latency(pipe, folder: Path, side: int, steps: int, window: int | None,
                   frames: int) -> None:
    """A new mask every frame; latency = from the call it entered with to its frame."""
    plans = [painting_plan(folder, side, steps, window, right) for right in
             (side // 2, 3 * side // 4)]
    stream = StreamBatch(pipe)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = _status_mb("VmRSS")
    entered: dict[int, float] = {}
    latencies = []
    for k in range(frames + steps):
        entered[k] = time.perf_counter()
        frame = stream.advance(plans[k % 2], k, 3)
        if frame is not None:
            latencies.append(time.perf_counter() - entered.pop(frame.index))
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    print(f"  engine: stroke -> frame p50 {p50:.0f} ms, p95 {p95:.0f} ms; "
          f"peak RSS +{_status_mb('VmHWM') - before} MB")


def server_latency(steps: int, strokes: int, threads: int) -> None:
    """The whole route: browser message, plan, Dask task, JPEG, WebSocket."""
    import websockets.sync.client
    from distributed import Client, LocalCluster

    from hypermosaic.paint import blank_painting, paint_app
    from hypermosaic.paint.app import read_frame_message
    from hypermosaic.publish import start_server

    side = 128
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "lcm"
        tiny_pipeline("lcm", vae_factor=8).save_pretrained(model, safe_serialization=True)
        painting = blank_painting(str(model), side, side, steps=steps)
        with (LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=50) as cluster,
              Client(cluster) as client,
              paint_app(painting, Path(tmp) / "out", client) as app,
              start_server(app) as server,
              websockets.sync.client.connect(server.url.replace("http", "ws") + "paint",
                                             max_size=None) as socket):
            latencies, frames, start = [], 0, time.perf_counter()
            for stroke in range(strokes + 1):
                alpha = np.zeros((side, side, 4), np.uint8)
                alpha[8:56, 4 + 2 * stroke : 20 + 2 * stroke, 3] = 255
                buffer = io.BytesIO()
                Image.fromarray(alpha, "RGBA").save(buffer, "PNG")
                sent = time.perf_counter()
                socket.send(json.dumps({"type": "mask", "index": stroke % 3, "png":
                                        base64.b64encode(buffer.getvalue()).decode()}))
                version = None
                while True:
                    message = socket.recv()
                    if isinstance(message, str):
                        version = json.loads(message).get("version", version)
                        continue
                    frames += 1
                    if version is not None and read_frame_message(message)[0]["version"] >= version:
                        break
                if stroke:  # the first waits for the model to load and the ring to fill
                    latencies.append(time.perf_counter() - sent)
            seconds = time.perf_counter() - start
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    print(f"  server ({side}x{side} px, VAE factor 8, one worker of {threads} threads): "
          f"stroke -> frame p50 {p50:.0f} ms, p95 {p95:.0f} ms over {strokes} strokes; "
          f"{frames / seconds:.1f} fps through the socket")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side", type=int, default=128, help="canvas side, px")
    parser.add_argument("--window", type=int, default=64, help="window side, px (factor 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strokes", type=int, default=15)
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)
    print(f"device cpu, torch threads {args.threads}, LCM {args.steps} steps, guidance 1.5")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = ((8, args.window, args.side), (8, args.window, args.window), (2, None, 64))
        for index, (factor, window, side) in enumerate(cases):
            pipe = tiny_pipeline("lcm", vae_factor=factor)
            plan = painting_plan(folder, side, args.steps, window)
            latent = (window or pipe.unet.config.sample_size * factor) // factor
            print(f"VAE factor {factor}, windows of {latent}x{latent} latents:")
            fps_figures(pipe, plan, args.frames, args.rounds)
            engine_latency(pipe, folder, side, args.steps, window, args.frames)
            if index == 0:
                for steps in (2, 8):
                    fps_figures(pipe, dataclasses.replace(plan, steps=steps), args.frames,
                                args.rounds)
    server_latency(args.steps, args.strokes, args.threads)


if __name__ == "__main__":
    main()
