"""`hypermosaic frame`: from a photo of an empty picture frame to a print file (issue 14).

Entry point: `frame_print`. `frame_config` reads the ``[frame]`` config and options,
`plan_frame` computes every size before any work; the pieces: the frame's geometry
(`geometry`), print sizes (`sizes`), the print file (`printfile`), the colour fix (`colour`).
"""

from __future__ import annotations

from hypermosaic.frame.config import FrameConfig, frame_config
from hypermosaic.frame.plan import FramePlan, plan_frame
from hypermosaic.frame.run import FrameResult, frame_print

__all__ = ["FrameConfig", "FramePlan", "FrameResult", "frame_config", "frame_print", "plan_frame"]
