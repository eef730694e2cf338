"""`frame_print`: from a photo of an empty picture frame to a print file and an "on the wall"
preview (issue 14; the workflow of seed 002, one command).

Everything the user can get wrong is checked before any work and before the output folder is
made (`prepare`); the run then holds the folder's lock and writes each output atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from hypermosaic import registry
from hypermosaic.errors import Interrupted
from hypermosaic.frame.colour import balance_cast
from hypermosaic.frame.config import FrameConfig, frame_config
from hypermosaic.frame.geometry import preview_on_wall, rectify
from hypermosaic.frame.plan import FramePlan, plan_frame
from hypermosaic.frame.printfile import write_print
from hypermosaic.frame.reuse import Candidates
from hypermosaic.frame.steps import (
    enlarged,
    img2img_artwork,
    inpaint_candidates,
    quad_mask,
    refine_artwork,
)
from hypermosaic.images import encode, load_image, resize
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.store import atomic_write, folder_lock

__all__ = ["FrameResult", "Prepared", "frame_print", "prepare"]

DEFAULT_NATIVE = 512  # a model whose configs do not say its side: SD 1.x's
STEPS = 8


@dataclass(frozen=True)
class Prepared:
    """A checked config with its photo and plan: what the run needs, nothing written yet."""

    config: FrameConfig
    photo: np.ndarray
    plan: FramePlan


@dataclass(frozen=True)
class FrameResult:
    """What a frame run wrote, in the order it wrote it, and how long it took."""

    plan: FramePlan
    candidates: tuple[Path, ...]
    rectified: Path
    artwork: Path
    refined: Path | None  # with the detail pass only
    print: Path
    preview: Path
    seconds: float


def _native(config: FrameConfig) -> int:
    """The img2img model's side; both models located first (`InputError` naming the key)."""
    source = registry.locate_model(config.model, key="frame.model")
    if config.inpaint_model is not None:
        registry.locate_model(config.inpaint_model, key="frame.inpaint_model")
    return registry.native_size(source) or DEFAULT_NATIVE


def prepare(config: FrameConfig) -> Prepared:
    """Check everything before any work: the photo and mask files, the frame's corners, the
    print size, unit, DPI and bleed, the models and the upscaler's weights. `InputError`
    naming the key or the file; nothing is written (the output folder is not even made)."""
    photo = load_image(config.photo)
    mask = load_image(config.mask) if config.mask is not None else None
    native = _native(config)
    if config.esrgan:
        registry.describe_upscaler(config.upscaler, device=config.device)
    height, width = photo.shape[:2]
    return Prepared(config, photo, plan_frame(config, (width, height), mask, native))


def _write_png(path: Path, image: np.ndarray) -> Path:
    atomic_write(path, encode(image))
    return path


def _preview_source(final: pyvips.Image, photo: np.ndarray) -> np.ndarray:
    """``final`` box-averaged by the largest whole factor that keeps it at least the photo's
    size (the frame is smaller still): the preview's pixels, a small array whatever the print."""
    factor = max(1, min(final.width // photo.shape[1], final.height // photo.shape[0]))
    return np.asarray(final.shrink(factor, factor).numpy() if factor > 1 else final.numpy())


def _candidates(config: FrameConfig, plan: FramePlan, work: np.ndarray, mask: np.ndarray,
                progress: ProgressCallback | None) -> tuple[list[Path], np.ndarray]:
    """Every candidate's file, and the chosen candidate: those kept from an earlier run with
    the same settings are read back (`Candidates`), the others inpainted and recorded."""
    kept = Candidates(config, work, mask)
    images = {index: kept.kept(plan.candidate_path(index), seed)
              for index, seed in enumerate(plan.seeds)}
    missing = [index for index, image in images.items() if image is None]
    made = inpaint_candidates(config, work, mask, tuple(plan.seeds[i] for i in missing),
                              progress) if missing else iter(())  # no model loaded for none
    for index, candidate in zip(missing, made, strict=True):
        _write_png(plan.candidate_path(index), candidate)
        kept.add(plan.candidate_path(index), plan.seeds[index])
        images[index] = candidate
    chosen = images[config.choose - 1]
    assert chosen is not None
    return [plan.candidate_path(index) for index in images], chosen


def _run(prepared: Prepared, progress: ProgressCallback | None) -> FrameResult:
    """The numbered steps of a frame run, in the locked output folder."""
    config, photo, plan = prepared.config, prepared.photo, prepared.plan
    start = time.monotonic()
    # 1. inpaint the frame's inside in the scaled photo, one candidate per seed
    work = np.array(resize(photo, *plan.work_size))  # writable, as torch wants
    mask = quad_mask(plan.work_corners, *plan.work_size)
    candidates, chosen = _candidates(config, plan, work, mask, progress)
    report(progress, "steps", 1, STEPS)
    # 2. the chosen candidate's frame rectified to the print's aspect ratio
    rectified = rectify(chosen, plan.work_corners, *plan.rectified_size)
    rectified_path = _write_png(plan.out / "rectified.png", rectified)
    report(progress, "steps", 2, STEPS)
    # 3. img2img at the model's size with the print prompt
    artwork = img2img_artwork(config, resize(rectified, *plan.artwork_size), plan.native)
    report(progress, "steps", 3, STEPS)
    # 4. the colour fix: the wall's cast divided out
    if config.colour_fix > 0:
        artwork = balance_cast(artwork, config.colour_fix)
    artwork_path = _write_png(plan.out / "artwork.png", artwork)
    report(progress, "steps", 4, STEPS)
    # 5. the detail pass, if asked: enlarged and redrawn by canvas windows of the model's size
    source, source_size, refined_path = artwork_path, plan.artwork_size, None
    if plan.refined_size is not None:
        refined = refine_artwork(config, artwork, plan.refined_size, plan.out, progress)
        source = refined_path = _write_png(plan.out / "refined.png", refined)
        source_size = plan.refined_size
    report(progress, "steps", 5, STEPS)
    # 6. enlarged to the trim size's pixels at the DPI, lazily (streamed, see `enlarged`)
    with enlarged(config, source, source_size, plan.print.trim_px, progress) as final:
        report(progress, "steps", 6, STEPS)
        # 7. the print file, with its DPI, sRGB profile and mirrored bleed, written once
        print_path = write_print(final, plan.out / f"print.{config.format}", plan.print.dpi,
                                 plan.print.bleed_mm)
        report(progress, "steps", 7, STEPS)
        # 8. the room photo with the artwork warped into the frame
        preview = _write_png(plan.out / "on-the-wall.png",
                             preview_on_wall(photo, _preview_source(final, photo), plan.corners))
    report(progress, "steps", 8, STEPS)
    return FrameResult(plan, tuple(candidates), rectified_path, artwork_path, refined_path,
                       print_path, preview, time.monotonic() - start)


def frame_print(config: FrameConfig | Path | str | None = None, *,
                progress: ProgressCallback | None = None, **options: Any) -> FrameResult:
    """Inpaint the empty frame of a photo, make the print file and the "on the wall" preview.

    ``config`` is a `FrameConfig`, or a TOML file whose ``[frame]`` table ``options`` (the
    same keys; None: not given) override. Writes into ``out``: ``candidate-N-seed-S.png``
    (step 1; ``candidates.json`` records them, and a later run with the same settings reuses
    them), ``rectified.png``, ``artwork.png``, ``refined.png`` (with ``refine_strength``),
    ``print.tif`` (or ``.png``) and
    ``on-the-wall.png``. Raises `InputError` before any work for bad input, `Interrupted`
    on Ctrl-C (the files written so far are complete and kept).
    """
    if isinstance(config, FrameConfig):
        config = frame_config(None, **{**config.model_dump(), **options})
    else:
        config = frame_config(config, **options)
    prepared = prepare(config)
    with folder_lock(config.out):
        try:
            report(progress, "steps", 0, STEPS)
            return _run(prepared, progress)
        except KeyboardInterrupt:
            raise Interrupted(f"the files written so far are complete and kept in "
                              f"{config.out}; run the same command again to redo the rest"
                              ) from None
