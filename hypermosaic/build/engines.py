"""The engine interface: what turns a batch of tiles into sub-images.

An engine is loaded once per worker (`hypermosaic.build.tasks`, in the worker's model cache) and
called with a batch of sibling tiles. Images cross this boundary as ``uint8`` RGB arrays of
shape ``(H, W, 3)``; encoding and files are the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hypermosaic.identity import BICUBIC
from hypermosaic.tree import Address

__all__ = ["Engine", "PrimaryJob", "TileContext", "TileJob"]


@dataclass(frozen=True)
class PrimaryJob:
    """Generate the root image from a prompt."""

    seed: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    size: int


@dataclass(frozen=True)
class TileJob:
    """One tile to turn into a full sub-image; ``seed`` comes from the node's address."""

    address: Address
    seed: int
    prompt: str
    negative_prompt: str
    strength: float
    steps: int
    guidance: float
    init_upscale: str = BICUBIC  # or the ESRGAN model that enlarges the tile into its init
    # `hypermosaic.image_prompts.ImagePromptConfig`'s items; its image is "tile" or the key of
    # a style image the engine was given (workers never read it from disk); None: no image prompt
    image_prompt: tuple[tuple[str, Any], ...] | None = None


@dataclass(frozen=True)
class TileContext:
    """What a batch of sibling tiles shares: their parent's image, its grid, the primary image."""

    parent: np.ndarray
    grid: int
    primary: np.ndarray


class Engine(Protocol):
    """Turns tiles into sub-images; implementations: recolor (core) and diffusion (pipelines)."""

    def primary(self, job: PrimaryJob) -> np.ndarray:
        """The root image, ``(size, size, 3)`` uint8."""
        ...

    def tiles(
        self, inits: np.ndarray, jobs: Sequence[TileJob], context: TileContext
    ) -> np.ndarray:
        """Sub-images ``(B, size, size, 3)`` uint8 for tiles upsampled to ``inits`` (same shape).

        ``jobs[i]`` describes ``inits[i]``. A tile's content is decided by its job, its init
        and the context, but its exact bytes may also depend on its batch-mates: batched
        arithmetic (diffusion's UNet) sums in another order, a difference of up to one uint8
        level. The recolor engine is exact. Callers that need reproducible bytes must call
        with the same batches every time, as the build does
        (`hypermosaic.build.plan.sibling_batches`).
        """
        ...
