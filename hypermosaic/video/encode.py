"""Encoding frames one at a time into a file that appears only when complete.

`VideoWriter` takes `Planes` as the renderer makes them and hands them to the encoder at once,
so no list of frames is ever held. It writes to a temporary name beside the output
(`hypermosaic.store.temporary_path`) and renames it into place on `VideoWriter.close`, so an
interrupted render leaves whatever the output held before. Videos go through PyAV; a GIF
through `GifEncoder`, which does what dedicated GIF encoders do (a palette per scene, frame
differencing with transparency) and has Pillow's LZW coder compress each frame.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.video.stream import VideoStream
from PIL import GifImagePlugin, Image

from hypermosaic.errors import InputError
from hypermosaic.store import temporary_path
from hypermosaic.video.planes import Planes, pack, planes_to_rgb
from hypermosaic.video.settings import CODECS, CONTAINERS

__all__ = ["BT709", "GIF_SCENE", "GIF_SLACK", "GifEncoder", "VideoWriter"]

BT709 = 1
"""The H.273 code of BT.709 (matrix, primaries, transfer) tagged on the encoded stream."""
GIF_SLACK = 4
"""A GIF pixel keeps the colour already on screen (or takes its left neighbour's) while that is
within this many levels (the largest channel difference) of the closest colour its palette has
for the new frame."""
GIF_SCENE = 2.0
"""A GIF scene (one palette) ends when its palette's error on a frame (the mean, or that of the
worst 1% of the pixels) exceeds this many times the error of a palette made for that frame."""
_COLOURS = 255
_TRANSPARENT = 255  # the palette index left free for "unchanged"
_RUN_PASSES = 8


class VideoWriter:
    """Encodes frames one at a time into a temporary file, renamed over ``path`` on `close`.

    Use as a context manager: on an exception (Ctrl-C included) the partial file is removed and
    whatever ``path`` held before is left untouched. Raises InputError when this PyAV lacks the
    codec's encoder.
    """

    def __init__(
        self, path: Path, codec: str, width: int, height: int, fps: float,
        crf: int | None = None, preset: str | None = None,
    ) -> None:
        spec = CODECS[codec]
        self.path = Path(path)
        self.codec = codec
        self._tmp = temporary_path(self.path)
        self._index = 0
        self._gif: GifEncoder | None = None
        self._file: BinaryIO | None = None
        self._container: av.container.OutputContainer | None = None
        if codec == "gif":
            self._file = open(self._tmp, "wb")  # closed by close or abort
            self._gif = GifEncoder(self._file, width, height, fps)
            return
        self._container = av.open(
            str(self._tmp), mode="w", format=CONTAINERS[self.path.suffix.lower()]
        )
        rate = Fraction(fps).limit_denominator(1001)
        try:
            stream = self._container.add_stream(spec.encoder, rate=rate)
        except (ValueError, av.FFmpegError) as exc:
            self.abort()
            raise InputError(
                f"--codec {codec}: this PyAV has no {spec.encoder} encoder ({exc})"
            ) from None
        if not isinstance(stream, VideoStream):  # every encoder in CODECS is a video one
            self.abort()
            raise TypeError(f"{spec.encoder} is not a video encoder")
        self._stream = stream
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = BT709
        context.color_range = 1
        options: dict[str, object] = dict(spec.options)
        options["crf"] = str(spec.default_crf if crf is None else crf)
        if codec == "vp9":
            options["cpu-used"] = preset or spec.default_preset
        else:
            options["preset"] = preset or spec.default_preset
        stream.options = options

    def write(self, planes: Planes) -> None:
        """Encode one frame."""
        if self._gif is not None:
            self._gif.write(planes_to_rgb(planes))
            return
        if self._container is None:
            raise ValueError("write after close")
        frame = pack(planes)
        frame.pts = self._index
        self._index += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoder, close the file and move it into place."""
        if self._gif is not None and self._file is not None:
            self._gif.close()
            self._file.close()
        elif self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close the file and remove it, leaving ``path`` as it was."""
        try:
            if self._file is not None:
                self._file.close()
            if self._container is not None:
                self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is not None:
            self.abort()


class GifEncoder:
    """Writes an animated GIF one RGB frame at a time, as dedicated GIF encoders do.

    1. A palette per scene, not per frame: a frame is mapped (no dithering) to the current
       scene's 255 colours; when that palette's error on the frame (on average, or on its worst
       1% of pixels) is over `GIF_SCENE` times the error of a palette made for the frame
       (median cut), the frame starts a new scene with that palette (the first scene's is the
       global colour table, later ones travel as local tables).
    2. Frame differencing: a pixel whose colour on screen is still within `GIF_SLACK` of the
       closest its palette offers is left as it is (transparent), and only the rectangle
       around the changed pixels is stored. A scene's first frame is differenced too: the
       pixels it keeps need no colour of the new palette.
    3. Runs for the LZW coder: a changed pixel takes its left neighbour's colour where that is
       as close (within `GIF_SLACK`), a few pixels at a time (`_RUN_PASSES`).

    Frames are never held: only the picture on screen (what a decoder shows) is kept. Delays
    are whole centiseconds that add up to the frame times at ``fps``; the GIF loops forever.
    Raises OSError as the file does (a full disk included).
    """

    def __init__(self, file: BinaryIO, width: int, height: int, fps: float) -> None:
        self.file, self.width, self.height, self.fps = file, width, height, fps
        self.frames = 0
        self.scenes = 0
        self._palette: Image.Image | None = None  # the scene's, as a P image for quantize
        self._colours = np.zeros((256, 3), np.uint8)  # the same, as an array
        self._local = False  # whether the scene's palette is a local colour table
        self._shown: np.ndarray | None = None  # the RGB picture a decoder shows now

    def write(self, rgb: np.ndarray) -> None:
        """Add one HxWx3 uint8 frame."""
        # 1. quantise to the scene's palette, or start a new scene
        image = Image.fromarray(rgb)
        own = image.quantize(_COLOURS, dither=Image.Dither.NONE)
        own_colours = _palette_array(own)
        # mapped as later frames will be, so that a frame that did not change keeps every pixel
        index = _map(image, own)
        new_scene = self._palette is None
        if self._palette is not None:
            scene = _map(image, self._palette)
            if _worse(_distance(self._colours[scene], rgb), _distance(own_colours[index], rgb)):
                new_scene = True
            else:
                index = scene
        if new_scene:
            self._local = self._palette is not None
            self._palette, self._colours = own, own_colours
            self.scenes += 1
        # 2. unchanged pixels (within the slack) become transparent
        # a pixel may show any colour c with |c - rgb| <= |best - rgb| + slack (largest channel)
        allowed = _distance(self._colours[index], rgb) + GIF_SLACK
        if self._shown is None:
            self.file.write(self._header())
            still = np.zeros(index.shape, bool)
        else:
            still = _distance(self._shown, rgb) <= allowed
        out = np.where(still, np.uint8(_TRANSPARENT), index)
        # 3. runs: a changed pixel takes its left neighbour's index where that is close enough
        for _ in range(_RUN_PASSES):
            left = np.concatenate([out[:, :1], out[:, :-1]], axis=1)
            take = (~still & (left != _TRANSPARENT)
                    & (_distance(self._colours[left], rgb) <= allowed))
            out = np.where(take, left, out)
        # 4. store the rectangle around the changed pixels
        changed = ~still
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        if rows.size == 0:  # nothing changed: one transparent pixel keeps the frame
            y0, y1, x0, x1 = 0, 1, 0, 1
        else:
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        delay = round(100 * (self.frames + 1) / self.fps) - round(100 * self.frames / self.fps)
        self.file.write(self._frame(out[y0:y1, x0:x1], (x0, y0), delay,
                                    transparent=self._shown is not None))
        shown = self._colours[out]
        self._shown = shown if self._shown is None else np.where(still[..., None], self._shown,
                                                                   shown)
        self.frames += 1

    def close(self) -> None:
        """End the GIF (its trailer); the caller closes the file."""
        self.file.write(b";")

    def _header(self) -> bytes:
        """The logical screen with the first scene's palette as global colour table, and the
        NETSCAPE2.0 extension that loops the animation forever."""
        size = self.width.to_bytes(2, "little") + self.height.to_bytes(2, "little")
        loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
        return b"GIF89a" + size + bytes([0xF7, 0, 0]) + self._colours.tobytes() + loop

    def _frame(
        self, index: np.ndarray, offset: tuple[int, int], delay: int, transparent: bool
    ) -> bytes:
        """One frame (graphic control extension, image descriptor, LZW data) as Pillow's GIF
        writer encodes it; disposal 1 leaves it on screen under the next."""
        image = Image.fromarray(np.ascontiguousarray(index), "P")
        image.putpalette(self._colours.tobytes())
        params: dict[str, object] = {"duration": delay * 10, "disposal": 1}
        if transparent:
            params["transparency"] = _TRANSPARENT
        if self._local:
            params["include_color_table"] = True
        return b"".join(GifImagePlugin.getdata(image, offset, **params))


def _palette_array(image: Image.Image) -> np.ndarray:
    """A P image's palette as 256 x 3 uint8 (unused entries black)."""
    rgb = image.getpalette()
    if rgb is None:  # a quantised image always has a palette
        raise ValueError("quantize gave an image without a palette")
    colours = np.zeros((256, 3), np.uint8)
    found = np.array(rgb[: 256 * 3], np.uint8).reshape(-1, 3)
    colours[: len(found)] = found
    return colours


def _distance(colours: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the largest channel difference between two HxWx3 pictures."""
    d = np.abs(colours.astype(np.int16) - rgb)
    return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])  # 5x faster than max(axis)


def _map(image: Image.Image, palette: Image.Image) -> np.ndarray:
    """The indices of ``palette``'s colours that Pillow maps an RGB image to (no dithering)."""
    return np.asarray(image.quantize(palette=palette, dither=Image.Dither.NONE))


def _worse(scene: np.ndarray, own: np.ndarray) -> bool:
    """Whether the scene's palette (per-pixel distances ``scene``) is over `GIF_SCENE` times
    worse than the frame's own (``own``): on average, or on the worst 1% of the pixels (a new
    colour still small in the frame), beyond a few levels that no eye tells apart."""
    if scene.mean() > GIF_SCENE * own.mean() + 1:
        return True
    worst, own_worst = np.percentile(scene, 99), np.percentile(own, 99)
    return bool(worst > GIF_SCENE * own_worst + 8)
