"""`hypermosaic video OUT_DIR`: render the build's looping infinite-zoom video."""

from __future__ import annotations

from pathlib import Path

import click

from hypermosaic.cli.progress import console, progress_bars
from hypermosaic.tree import address_key

__all__ = ["video_command"]


def _parse_size(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` (``4k`` and ``1080p`` accepted) as two integers."""
    if value is None:
        return None
    named = {"4k": "3840x2160", "1080p": "1920x1080", "720p": "1280x720"}
    width, sep, height = named.get(value.lower(), value).lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT (for example 1920x1080)")
    return int(width), int(height)


@click.command("video")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Video file (.mp4, .webm, .mkv, .mov or .gif). Default: OUT_DIR/zoom.mp4.")
@click.option("--size", callback=_parse_size, metavar="WxH",
              help="Frame size, e.g. 1920x1080 or 4k (even sides). [default: 1920x1080; "
                   "480x270 with --gif]")
@click.option("--fps", type=float, help="Frames per second. [default: 30; 15 with --gif]")
@click.option("--seconds", type=float, help="Length of the whole video.")
@click.option("--seconds-per-level", type=float,
              help="Length per level of zoom (the default: 4 s per level).")
@click.option("--codec", type=click.Choice(["h264", "vp9", "av1"]),
              help="Video codec. [default: vp9 for .webm, else h264]")
@click.option("--crf", type=int, help="Constant quality (lower is better; h264 default 23).")
@click.option("--preset", help="Encoder speed preset (h264: ultrafast..veryslow, default "
                               "superfast; vp9: cpu-used 0-8; av1: 0-13).")
@click.option("--gif", is_flag=True, help="Write an animated GIF preview instead of a video.")
@click.option("--path", "path", metavar="R_C/R_C/...",
              help="Zoom into this node (default: the build's focus, else the central path).")
@click.option("--depth", type=int,
              help="Levels to zoom down, continuing --path through central tiles; deeper than "
                   "the build needs --config. [default: the build's depth, or --path's]")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              metavar="BUILD.toml",
              help="The build's config (OUT_DIR replaces its out): nodes the video needs and "
                   "the build lacks, below its depth too, are made first, as the build would.")
@click.option("--ease", type=float, default=0.0, show_default=True,
              help="Fraction of the time spent accelerating and decelerating at the ends.")
@click.option("--fade", type=float, default=1.0, show_default=True,
              help="Seconds of the loop cross-fade at the end.")
@click.option("--no-loop", is_flag=True, help="End on the target node instead of looping.")
@click.option("--no-drift", is_flag=True,
              help="Zoom straight at the target instead of drifting it to the centre "
                   "(needs --no-loop: only the drifting zoom can loop).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Threads decoding node images, and with --config local worker processes "
                   "making nodes (the video is the same for any number). [default: 2 threads; "
                   "processes sized for the machine]")
@click.option("--scheduler-address", metavar="tcp://HOST:PORT",
              help="With --config, make the nodes on an existing Dask cluster.")
def video_command(out_dir: Path, out_file: Path | None, size: tuple[int, int] | None,
                  fps: float | None, seconds: float | None, seconds_per_level: float | None,
                  codec: str | None, crf: int | None, preset: str | None, gif: bool,
                  path: str | None, depth: int | None, config: Path | None, ease: float,
                  fade: float, no_loop: bool, no_drift: bool, workers: int | None,
                  scheduler_address: str | None) -> None:
    """Render a looping zoom from the whole hypermosaic in OUT_DIR down to its deepest node,
    or, with the build's --config, as deep as --depth asks."""
    from hypermosaic.video import render_video  # imported when rendering: --help stays quick

    out_console = console()
    with progress_bars(out_console) as on_progress:
        result = render_video(
            out_dir, out_file, size=size, fps=fps, seconds=seconds,
            seconds_per_level=seconds_per_level, codec=codec, crf=crf, preset=preset, gif=gif,
            path=path, depth=depth, ease=ease, fade=fade, loop=not no_loop,
            drift=not no_drift, config=config, workers=workers,
            scheduler_address=scheduler_address, progress=on_progress,
        )
    made = f", after making {result.nodes_made:,} nodes" if result.nodes_made else ""
    out_console.print(
        f"wrote {result.path}: {result.frames} frames of {result.width}x{result.height} at "
        f"{result.fps:g} fps ({result.codec}), zooming into {address_key(result.target)}{made}",
        soft_wrap=True,
    )
