"""Zoom video: render + encode against encoding the same frames already rendered.

Builds (or reuses, with ``--build``) a depth-3 recolor hypermosaic, then in two child processes
(so each peak RSS is its own):

* route: `render_video` at 1920x1080, H.264, frames rendered from the node images and encoded
  one at a time (rendering on a second thread, ahead of the encoder);
* baseline: the same frames rendered beforehand into a raw YUV file (not timed), then only
  encoded, with the same encoder settings.

Prints frames per second of each, the ratio (what rendering costs on top of encoding), the CPU
seconds per frame (which, unlike wall time, does not depend on what else the machine runs), and
peak RSS. Target: at least 24 frames per second of render + encode.

With ``--gif`` it measures the GIF preview instead (``hypermosaic video BUILD --gif --seconds
6``): the same frames encoded by `GifEncoder` (a palette per scene, frame differencing) and as
before it (every frame whole, quantised to its own palette, through PyAV), with the size, the
mean difference from the rendered frames and the encoding time of each.

    python -m benchmarks.bench_video                    # builds into a temporary folder (~2 min)
    python -m benchmarks.bench_video --build /tmp/b3    # reuse (or create) a build there
    python -m benchmarks.bench_video --gif --build out/demo   # an existing build, as it is
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
from PIL import Image, ImageSequence

from benchmarks._machine import print_machine
from hypermosaic.build import build_config_from_dict, build_mosaic
from hypermosaic.video import VideoSettings, render_video
from hypermosaic.video.camera import zoom_path
from hypermosaic.video.encode import GifEncoder, VideoWriter
from hypermosaic.video.planes import Planes, planes_to_rgb
from hypermosaic.video.run import zoom_frames
from hypermosaic.video.settings import CODECS, frame_count
from hypermosaic.video.target import choose_path, open_build
from tests.helpers import per_frame_palette_gif

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ensure_build(folder: Path, size: int, grid: int) -> None:
    """A depth-3 recolor build in ``folder`` (resumed / reused when already there)."""
    config = build_config_from_dict(
        {"seed": 7, "size": size, "grid": grid, "depth": 3, "engine": "recolor",
         "primary": {"image": "images/chelsea.png"}, "tiles": {"strength": 0.6},
         "out": str(folder)},
        base=EXAMPLES, source="bench_video",
    )
    started = time.perf_counter()
    result = build_mosaic(config, publish=False)
    print(f"build: {result.total} nodes of {size} px, grid {grid}, depth 3 "
          f"({result.reused} reused) in {time.perf_counter() - started:.1f} s", flush=True)


def settings_from(args: argparse.Namespace) -> VideoSettings:
    return VideoSettings(width=args.width, height=args.height, fps=args.fps,
                         seconds_per_level=args.seconds_per_level, preset=args.preset)


def measure_route(args: argparse.Namespace) -> dict[str, float]:
    """Render + encode through `render_video`."""
    settings = settings_from(args)
    cpu, started = cpu_seconds(), time.perf_counter()
    result = render_video(args.build, args.out / "route.mp4", settings=settings)
    wall = time.perf_counter() - started
    return {"frames": result.frames, "wall": wall, "cpu": cpu_seconds() - cpu,
            "rss": peak_rss_mb()}


def measure_baseline(args: argparse.Namespace) -> dict[str, float]:
    """Render the same frames to a raw file first (untimed), then time encoding them."""
    settings = settings_from(args)
    store, plan = open_build(args.build)
    target = choose_path(store, plan, None)
    path = zoom_path(plan, target, settings.width, settings.height)
    frames = frame_count(settings, len(target))
    fade = min(frames // 2, round(settings.fade * settings.fps))
    raw = args.out / "frames.yuv"
    with raw.open("wb") as handle:
        for planes in zoom_frames(store, plan, path, settings, frames, fade):
            for plane in planes:
                handle.write(plane.tobytes())
    w, h = settings.width, settings.height
    frame_bytes = w * h * 3 // 2
    cpu, started = cpu_seconds(), time.perf_counter()
    with raw.open("rb") as handle, VideoWriter(
        args.out / "baseline.mp4", "h264", w, h, settings.fps, preset=settings.preset
    ) as writer:
        for _ in range(frames):
            flat = np.frombuffer(handle.read(frame_bytes), dtype=np.uint8)
            writer.write(Planes(flat[: w * h].reshape(h, w),
                                flat[w * h: w * h * 5 // 4].reshape(h // 2, w // 2),
                                flat[w * h * 5 // 4:].reshape(h // 2, w // 2)))
        writer.close()
    wall = time.perf_counter() - started
    return {"frames": frames, "wall": wall, "cpu": cpu_seconds() - cpu, "rss": peak_rss_mb()}


def measure_gif(build: Path) -> None:
    """Size, accuracy and encoding time of the 6 s 480x270 GIF preview, both ways."""
    settings = VideoSettings(width=480, height=270, fps=15.0, seconds=6.0, codec="gif")
    store, plan = open_build(build)
    target = choose_path(store, plan, None)
    path = zoom_path(plan, target, settings.width, settings.height)
    count = frame_count(settings, len(target))
    fade = min(count // 2, round(settings.fade * settings.fps))
    frames = [planes_to_rgb(p) for p in zoom_frames(store, plan, path, settings, count, fade)]

    def scene_gif() -> bytes:
        out = io.BytesIO()
        gif = GifEncoder(out, settings.width, settings.height, settings.fps)
        for rgb in frames:
            gif.write(rgb)
        gif.close()
        return out.getvalue()

    print(f"{count} frames of {settings.width}x{settings.height} at {settings.fps:g} fps")
    for name, encode in (("a palette per frame (before)", lambda: per_frame_palette_gif(
            frames, settings.fps)), ("GifEncoder (scenes, differencing)", scene_gif)):
        started = time.perf_counter()
        data = encode()
        seconds = time.perf_counter() - started
        with Image.open(io.BytesIO(data)) as image:
            error = np.mean([np.abs(np.asarray(f.convert("RGB"), np.int16) - rgb).mean()
                             for f, rgb in zip(ImageSequence.Iterator(image), frames,
                                               strict=True)])
        print(f"{name:34s}: {len(data):>10,} bytes, mean difference {error:.2f} levels, "
              f"encoded in {seconds:.1f} s")


def child_environment() -> dict[str, str]:
    """This process's environment less what starting the build's Dask cluster put in it.

    A LocalCluster sets its workers' pre-spawn variables in the parent's own environment
    (``MALLOC_TRIM_THRESHOLD_=65536``, one OpenMP thread); inherited by the measuring child,
    the first makes glibc give every frame-sized buffer back to the kernel, which costs a
    third more CPU per frame than `hypermosaic video` started from a shell.
    """
    spawned = dask.config.get("distributed.nanny.pre-spawn-environ", {})
    return {key: value for key, value in os.environ.items()
            if str(spawned.get(key, object())) != value}


def child(args: argparse.Namespace, which: str) -> dict[str, float]:
    """Run one measurement in a fresh process (with `child_environment`), read its JSON line."""
    command = [sys.executable, __file__, "--measure", which, "--build", str(args.build),
               "--out", str(args.out), "--width", str(args.width), "--height", str(args.height),
               "--fps", str(args.fps), "--seconds-per-level", str(args.seconds_per_level)]
    if args.preset:
        command += ["--preset", args.preset]
    output = subprocess.run(command, check=True, capture_output=True, text=True,
                            env=child_environment()).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, help="build folder (made if missing)")
    parser.add_argument("--node-size", type=int, default=256)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--seconds-per-level", type=float, default=4.0)
    parser.add_argument("--preset", help="x264 preset (default: the library's)")
    parser.add_argument("--gif", action="store_true",
                        help="measure the GIF preview's size instead (needs --build)")
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=["route", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.gif:
        if args.build is None:
            parser.error("--gif needs --build (an existing build)")
        print_machine()
        measure_gif(args.build)
        return

    if args.measure is not None:
        measure = measure_route if args.measure == "route" else measure_baseline
        print(json.dumps(measure(args)))
        return
    print_machine()

    with tempfile.TemporaryDirectory() as folder:
        args.out = Path(folder)
        if args.build is None:
            args.build = Path(folder) / "build"
        ensure_build(args.build, args.node_size, args.grid)
        print(f"machine: {os.cpu_count()} cores, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        route = child(args, "route")
        baseline = child(args, "baseline")

    frames = route["frames"]
    fps_route, fps_base = frames / route["wall"], frames / baseline["wall"]
    preset = args.preset or CODECS["h264"].default_preset
    print(f"{frames} frames, {args.width}x{args.height}, H.264 ({preset}), "
          f"{args.seconds_per_level:g} s per level at {args.fps:g} fps")
    print(f"render + encode : {fps_route:6.1f} frames/s  {route['cpu'] / frames * 1000:6.1f} "
          f"CPU-ms/frame  peak RSS {route['rss']:.0f} MB")
    print(f"encode only     : {fps_base:6.1f} frames/s  {baseline['cpu'] / frames * 1000:6.1f} "
          f"CPU-ms/frame  peak RSS {baseline['rss']:.0f} MB")
    print(f"ratio (encode-only fps / render+encode fps): {fps_base / fps_route:.2f}x")
    print(f"render+encode at {fps_route:.1f} frames/s: target 24 "
          f"{'met' if fps_route >= 24 else 'NOT met'} under this load; with both cores to "
          f"itself (CPU time / 2) it would be at most {2 * frames / route['cpu']:.1f} frames/s")


if __name__ == "__main__":
    main()
