"""`hypermosaic upscale`: Real-ESRGAN, tiled and seamless, on images larger than RAM.

Entry point: `upscale_images`. `plan_jobs` pairs inputs with outputs and checks them;
`upscale_file` streams one job; `record` keeps, beside each output, the settings that made
it, so that a re-run skips only what the same settings made. ``refine`` (`RefineConfig`,
`refine_config`) adds the detail pass: `strips` plans it, `detail` runs it band by band.
"""

from __future__ import annotations

from hypermosaic.upscale.plan import UpscaleJob, plan_jobs
from hypermosaic.upscale.refine import RefineConfig, refine_config
from hypermosaic.upscale.run import UpscaleResult, upscale_files, upscale_images
from hypermosaic.upscale.stream import upscale_file

__all__ = [
    "RefineConfig",
    "UpscaleJob",
    "UpscaleResult",
    "plan_jobs",
    "refine_config",
    "upscale_file",
    "upscale_files",
    "upscale_images",
]
