"""`hypermosaic canvas`: seamless canvases far larger than a model's native size, painted
with mixture-of-diffusers tiling (prompt grids, text, image, reroll and brush regions).

Entry point: `paint_canvases`. Configs: `CanvasConfig` (`load_canvas_config` reads TOML, or a
Mixture of Diffusers JSON file); `plan_canvas` resolves one seed into its pure `CanvasPlan`.
A config that runs, but not quite as written, is reported as a `CanvasWarning` (one line
naming the file and the key; the command line prints it as ``warning: ...``).
"""

from __future__ import annotations

from hypermosaic.canvas.config import CanvasConfig, CanvasWarning, canvas_config_from_dict
from hypermosaic.canvas.jobs import CanvasJob, plan_jobs
from hypermosaic.canvas.load import load_canvas_config
from hypermosaic.canvas.plan import CanvasPlan, plan_canvas
from hypermosaic.canvas.run import CanvasResult, paint_canvases

__all__ = [
    "CanvasConfig",
    "CanvasJob",
    "CanvasPlan",
    "CanvasResult",
    "CanvasWarning",
    "canvas_config_from_dict",
    "load_canvas_config",
    "paint_canvases",
    "plan_canvas",
    "plan_jobs",
]
