"""Encoding frames through PyAV, one at a time, into a file that appears only when complete.

`VideoWriter` takes `Planes` as the renderer makes them and hands them to the encoder at once,
so no list of frames is ever held. It writes to a temporary name beside the output
(`hypermosaic.store.temporary_path`) and renames it into place on `VideoWriter.close`, so an
interrupted render leaves whatever the output held before. A GIF gets each frame quantised to
its own 256-colour palette.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.video.stream import VideoStream
from PIL import Image

from hypermosaic.errors import InputError
from hypermosaic.store import temporary_path
from hypermosaic.video.planes import Planes, pack, planes_to_rgb
from hypermosaic.video.settings import CODECS, CONTAINERS

__all__ = ["BT709", "VideoWriter"]

BT709 = 1
"""The H.273 code of BT.709 (matrix, primaries, transfer) tagged on the encoded stream."""


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
        if codec == "gif":
            stream.pix_fmt = "pal8"
            return
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
        frame = _gif_frame(planes) if self.codec == "gif" else pack(planes)
        frame.pts = self._index
        self._index += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoder, close the file and move it into place."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close the file and remove it, leaving ``path`` as it was."""
        self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is not None:
            self.abort()


def _gif_frame(planes: Planes) -> av.VideoFrame:
    """A palette frame for GIF: the frame quantised to its own 256 colours."""
    image = Image.fromarray(planes_to_rgb(planes)).quantize(256)
    rgb = image.getpalette()
    if rgb is None:  # a quantised image always has a palette
        raise ValueError("quantize gave an image without a palette")
    colours = np.array(rgb[: 256 * 3], np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), np.uint8)
    palette[:, 0] = 255
    palette[: len(colours), 1:] = colours
    # pal8 takes an (indices, ARGB palette) pair, as PyAV documents; its stub types only arrays
    pair = cast(Any, (np.asarray(image), palette))
    return av.VideoFrame.from_ndarray(pair, format="pal8")
