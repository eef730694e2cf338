"""Inpainting candidates kept between runs of one output folder.

``candidates.json`` records, for each candidate file, a fingerprint of everything that decides
its pixels: the inpainting image and mask, the prompts, steps, guidance, scheduler, dtype and
device, the model (its name, and a digest of a single-file checkpoint) and the seed. A later
run with the same settings (typically another ``--choose`` after looking at the candidates)
reads those files instead of inpainting again; anything changed, and that candidate is made
afresh. A candidate's PNG is lossless, so a reused candidate is the one that was made.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hypermosaic.frame.config import FrameConfig
from hypermosaic.identity import model_file_digest
from hypermosaic.images import load_image
from hypermosaic.store import atomic_write

__all__ = ["MANIFEST", "Candidates"]

MANIFEST = "candidates.json"


class Candidates:
    """The candidates of one inpainting image and mask in ``out``: which are kept, and a
    record of each one written (`add`)."""

    def __init__(self, config: FrameConfig, image: np.ndarray, mask: np.ndarray) -> None:
        self.out = config.out
        model = config.inpaint_model or config.model
        settings = {
            "model": model, "model_file": model_file_digest(model, "frame.inpaint_model"),
            "inpainting_model": config.inpaint_model is not None, "prompt": config.prompt,
            "negative_prompt": config.negative_prompt, "steps": config.inpaint_steps,
            "guidance": config.guidance, "scheduler": config.scheduler,
            "dtype": config.dtype, "device": config.device,
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for array in (image, mask):
            digest.update(repr(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        self.base = digest.hexdigest()
        self.records = self._read()

    def _read(self) -> dict[str, str]:
        try:
            records = json.loads((self.out / MANIFEST).read_text())
        except (OSError, ValueError):  # none yet, or unreadable: nothing is reused
            return {}
        return records if isinstance(records, dict) else {}

    def fingerprint(self, seed: int) -> str:
        """What decides the pixels of the candidate of ``seed``."""
        return hashlib.sha256(f"{self.base}:{seed}".encode()).hexdigest()

    def kept(self, path: Path, seed: int) -> np.ndarray | None:
        """The candidate in ``path`` if it was made with these settings and ``seed``."""
        if self.records.get(path.name) != self.fingerprint(seed) or not path.is_file():
            return None
        return load_image(path)

    def add(self, path: Path, seed: int) -> None:
        """Record ``path`` (just written) as the candidate of ``seed``."""
        self.records[path.name] = self.fingerprint(seed)
        atomic_write(self.out / MANIFEST, json.dumps(self.records, indent=1).encode())
