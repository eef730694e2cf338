"""hypermosaic: hypermosaics and ultra-large generated images.

The core package imports without torch; the torch/diffusers parts live in
`hypermosaic.pipelines` and the click commands in `hypermosaic.cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"
