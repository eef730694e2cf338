"""``hypermosaic video``: a looping infinite-zoom video of a build, as deep as asked.

One job a module: `settings` (the options, codecs and their validation), `camera` (the zoom
path, its sharp stop, easing and level maths), `target` (the build, the plan the camera flies
through and the node it falls into), `regions` (which nodes draw a view), `planes` (frames as
YUV 4:2:0), `frames` (rendering a view from the node images), `deeper` (the nodes a video below
its build needs, made first from the build's config), `encode` (PyAV, or `GifEncoder` for a
GIF, written atomically) and `run` (the frames and `render_video`, the entry point)::

    from hypermosaic.video import render_video

    result = render_video("out/demo", size=(1280, 720), seconds_per_level=6)
    print(result.path, result.frames)
    deeper = render_video("out/demo", depth=6, config="examples/demo.toml")
"""

from __future__ import annotations

from hypermosaic.video.run import VideoResult, render_video
from hypermosaic.video.settings import VideoSettings

__all__ = ["VideoResult", "VideoSettings", "render_video"]
