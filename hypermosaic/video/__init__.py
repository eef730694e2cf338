"""``hypermosaic video``: a looping infinite-zoom video of a finished build.

One job a module: `settings` (the options, codecs and their validation), `camera` (the zoom
path, its sharp stop, easing and level maths), `planes` (frames as YUV 4:2:0), `frames`
(rendering a view from the node images), `encode` (PyAV, or `GifEncoder` for a GIF, written
atomically) and `run` (the build, the path, the frames and `render_video`, the entry point)::

    from hypermosaic.video import render_video

    result = render_video("out/demo", size=(1280, 720), seconds_per_level=6)
    print(result.path, result.frames)
"""

from __future__ import annotations

from hypermosaic.video.run import VideoResult, render_video
from hypermosaic.video.settings import VideoSettings

__all__ = ["VideoResult", "VideoSettings", "render_video"]
