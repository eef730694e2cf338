"""What a zoom video is made with: `VideoSettings`, the codec table, and their validation.

The options of ``hypermosaic video`` become one `VideoSettings` here (`settings_from_options`
fills the defaults that depend on the output file: a GIF is small and slow, a ``.webm`` is VP9),
and `check_inputs` rejects a bad one before any work, naming the option and its value. Every
later step takes the validated settings as they are.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from hypermosaic.errors import InputError
from hypermosaic.tree import parse_address

__all__ = [
    "CODECS",
    "CONTAINERS",
    "DEFAULT_FPS",
    "DEFAULT_SIZE",
    "GIF_FPS",
    "GIF_SIZE",
    "SECONDS_PER_LEVEL",
    "Codec",
    "VideoSettings",
    "check_inputs",
    "check_workers",
    "default_out",
    "frame_count",
    "settings_from_options",
]

SECONDS_PER_LEVEL = 4.0
DEFAULT_SIZE = (1920, 1080)
DEFAULT_FPS = 30.0
GIF_SIZE = (480, 270)
"""A GIF is a preview: small and slow unless asked otherwise."""
GIF_FPS = 15.0


@dataclass(frozen=True)
class Codec:
    """An encoder PyAV can drive, the containers it may go in, and its quality range."""

    encoder: str
    suffixes: tuple[str, ...]
    crf_range: tuple[int, int]
    default_crf: int
    options: tuple[tuple[str, str], ...]
    presets: tuple[str, ...]
    default_preset: str


CODECS: dict[str, Codec] = {
    "h264": Codec(
        "libx264", (".mp4", ".mkv", ".mov"), (0, 51), 23, (),
        ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
         "veryslow"),
        "superfast",
    ),
    "vp9": Codec(
        "libvpx-vp9", (".webm", ".mkv", ".mp4"), (0, 63), 33,
        (("b", "0"), ("row-mt", "1"), ("deadline", "good")),
        tuple(str(n) for n in range(9)), "5",
    ),
    "av1": Codec(
        "libsvtav1", (".webm", ".mkv", ".mp4"), (1, 63), 35, (),
        tuple(str(n) for n in range(14)), "10",
    ),
    "gif": Codec("gif", (".gif",), (0, 0), 0, (), ("default",), "default"),
}
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}


@dataclass(frozen=True)
class VideoSettings:
    """What to render. ``seconds`` or ``seconds_per_level`` (not both; default
    `SECONDS_PER_LEVEL`) sets the length.

    ``path`` is a node address key (``3_4/1_2``); None takes the build's focus or the central
    path. ``depth`` is the target's depth (a shorter path is continued through central tiles);
    None goes as deep as the build (or the path). ``ease`` is the fraction of the time spent
    accelerating at the start and decelerating at the end (0: constant speed). ``fade`` is the
    length of the loop cross-fade in seconds. ``drift=False`` needs ``loop=False`` (see
    `hypermosaic.video.camera.zoom_path`).
    """

    width: int = DEFAULT_SIZE[0]
    height: int = DEFAULT_SIZE[1]
    fps: float = DEFAULT_FPS
    seconds: float | None = None
    seconds_per_level: float | None = None
    codec: str = "h264"
    crf: int | None = None
    preset: str | None = None
    path: str | None = None
    depth: int | None = None
    ease: float = 0.0
    drift: bool = True
    loop: bool = True
    fade: float = 1.0


def default_out(build_dir: Path, gif: bool) -> Path:
    """The video file written when none is named: ``zoom.mp4`` (``zoom.gif``) in the build."""
    return Path(build_dir) / ("zoom.gif" if gif else "zoom.mp4")


def settings_from_options(
    out_file: Path,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    seconds: float | None = None,
    seconds_per_level: float | None = None,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    gif: bool = False,
    path: str | None = None,
    depth: int | None = None,
    ease: float = 0.0,
    fade: float = 1.0,
    loop: bool = True,
    drift: bool = True,
) -> VideoSettings:
    """The settings ``hypermosaic video``'s options ask for, with the defaults that depend on
    the file filled in: a ``.gif`` (or ``gif``) is a `GIF_SIZE`, `GIF_FPS` preview; the codec
    is vp9 for a ``.webm``, else h264. Only an unset (None) ``size`` or ``fps`` takes its
    default: an ``fps`` of 0 is kept, for `check_inputs` to refuse like any other bad value.

    Raises InputError when a codec is asked of a GIF. The rest is `check_inputs`'s.
    """
    suffix = Path(out_file).suffix.lower()
    gif = gif or suffix == ".gif"
    if codec is None:
        codec = "gif" if gif else ("vp9" if suffix == ".webm" else "h264")
    elif gif:
        raise InputError("--codec does not apply to --gif")
    width, height = (GIF_SIZE if gif else DEFAULT_SIZE) if size is None else size
    if fps is None:
        fps = GIF_FPS if gif else DEFAULT_FPS
    return VideoSettings(
        width=width, height=height, fps=fps,
        seconds=seconds, seconds_per_level=seconds_per_level, codec=codec, crf=crf,
        preset=preset, path=path, depth=depth, ease=ease, drift=drift, loop=loop, fade=fade,
    )


def _number(option: str, value: object, integer: bool = False) -> float:
    """``value`` as a number, or InputError naming ``option``: a boolean is not a number (in
    Python ``True == 1``), nor is NaN, nor (where ``integer``) a float."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a number"
        raise InputError(f"{option} {value!r}: not {want}")
    if math.isnan(float(value)):
        raise InputError(f"{option} {value}: not a number")
    return float(value)


def check_workers(workers: object) -> None:
    """Refuse a ``--workers`` that is not a whole number of at least 1 (None is the default).

    Raises InputError.
    """
    if workers is not None and _number("--workers", workers, integer=True) < 1:
        raise InputError(f"--workers {workers}: must be at least 1")


def check_inputs(settings: VideoSettings, out_file: Path) -> None:
    """Reject bad settings before any work; the message names the option and its value.
    Booleans and NaN are refused where a number is asked for.

    Raises InputError.
    """
    width = _number("--size", settings.width, integer=True)
    height = _number("--size", settings.height, integer=True)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise InputError(
            f"--size {settings.width}x{settings.height}: width and height must be even and positive"
        )
    if max(width, height) > 8192:
        raise InputError(f"--size {settings.width}x{settings.height}: at most 8192 pixels a side")
    if not 0 < _number("--fps", settings.fps) <= 240:
        raise InputError(f"--fps {settings.fps:g}: must be in (0, 240]")
    if settings.seconds is not None and settings.seconds_per_level is not None:
        raise InputError("give --seconds or --seconds-per-level, not both")
    for name, length in (("--seconds", settings.seconds),
                         ("--seconds-per-level", settings.seconds_per_level)):
        if length is not None and not 0 < _number(name, length) <= 3600:
            raise InputError(f"{name} {length:g}: must be in (0, 3600]")
    codec = CODECS.get(settings.codec)
    if codec is None:
        raise InputError(f"--codec {settings.codec}: choose one of h264, vp9, av1 (or --gif)")
    suffix = out_file.suffix.lower()
    if suffix not in codec.suffixes:
        raise InputError(
            f"--out {out_file}: a {settings.codec} video needs a file ending in "
            + ", ".join(codec.suffixes)
        )
    low, high = codec.crf_range
    if settings.crf is not None and settings.codec == "gif":
        raise InputError("--crf does not apply to a GIF")
    if settings.crf is not None and not low <= _number("--crf", settings.crf, True) <= high:
        raise InputError(f"--crf {settings.crf}: {settings.codec} takes {low} to {high}")
    if settings.preset is not None and settings.preset not in codec.presets:
        raise InputError(
            f"--preset {settings.preset}: {settings.codec} takes " + ", ".join(codec.presets)
        )
    if not 0 <= _number("--ease", settings.ease) <= 0.5:
        raise InputError(f"--ease {settings.ease:g}: must be in [0, 0.5]")
    if not 0 <= _number("--fade", settings.fade) <= 3600:
        raise InputError(f"--fade {settings.fade:g}: must be in [0, 3600]")
    if settings.loop and not settings.drift:
        raise InputError(
            "--no-drift needs --no-loop: only the drifting zoom ends framing the target as it "
            "began framing the canvas, which is what lets the video loop"
        )
    if settings.depth is not None and _number("--depth", settings.depth, True) < 1:
        raise InputError(f"--depth {settings.depth}: must be at least 1")
    if settings.path is not None:
        try:
            steps = len(parse_address(settings.path))
        except ValueError as exc:
            raise InputError(f"--path {settings.path}: {exc}") from None
        if settings.depth is not None and steps > settings.depth:
            raise InputError(f"--path {settings.path}: {steps} levels deep, deeper than "
                             f"--depth {settings.depth}")


def frame_count(settings: VideoSettings, levels: int) -> int:
    """Frames in the video: ``seconds`` x fps, or seconds per level x levels x fps (at least 2)."""
    seconds = settings.seconds
    if seconds is None:
        seconds = (settings.seconds_per_level or SECONDS_PER_LEVEL) * levels
    return max(2, round(seconds * settings.fps))
