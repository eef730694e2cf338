"""Streaming canvases on the torch side: StreamMultiDiffusion's multi-prompt stream batch.

- `schedule`: LCM's update as pure per-row functions (`lcm_schedule`, `lcm_step`).
- `ring`: a latent of the ring (`Slot`) and what it is painted with (`Scene`).
- `predict`: the shared UNet calls of every window of every latent in the ring.
- `engine`: `StreamBatch`, the ring itself (`advance` lets one frame in and one out).

The core reaches it through `hypermosaic.registry` (``stream.batch``) only.
"""

from __future__ import annotations

from hypermosaic.pipelines.stream.engine import StreamBatch, StreamFrame, check_stream_plan
from hypermosaic.pipelines.stream.ring import Scene, Slot
from hypermosaic.pipelines.stream.schedule import LcmSchedule, lcm_schedule, lcm_step

__all__ = [
    "LcmSchedule",
    "Scene",
    "Slot",
    "StreamBatch",
    "StreamFrame",
    "check_stream_plan",
    "lcm_schedule",
    "lcm_step",
]
