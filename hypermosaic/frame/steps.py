"""The model steps of a frame run: inpainting candidates and img2img at the model's size (on
arrays), the detail pass (the canvas's mixture-of-diffusers windows over the enlarged artwork,
for prints that want more than the model's size can hold), and the enlargement to the print's
pixels (tiled ESRGAN, then resampling), streamed from file to file so that a print larger than
memory can be made.

Models are reached through `hypermosaic.registry` only; each step loads its model and lets it go
when done, so no two models are in memory together.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyvips

from hypermosaic import registry
from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.canvas import canvas_config_from_dict, plan_canvas
from hypermosaic.frame.config import FrameConfig
from hypermosaic.frame.geometry import Corners
from hypermosaic.images import encode, resize
from hypermosaic.progress import ProgressCallback, report
from hypermosaic.tiling import DEFAULT_OVERLAP, tile_windows
from hypermosaic.tree import ROOT
from hypermosaic.upscale import UpscaleJob, upscale_file

__all__ = ["MASK_GROW", "enlarged", "img2img_artwork", "inpaint_candidates", "quad_mask",
           "refine_artwork"]

MASK_GROW = 1.5  # px the repainted area reaches past the quadrilateral: the frame's inner edge
FEATHER = 2  # px of soft edge inside the repainted area (the inpaint engine's compositing)


def quad_mask(corners: Corners, width: int, height: int, grow: float = MASK_GROW) -> np.ndarray:
    """A uint8 mask (255 inside) of the pixel centres within ``grow`` px of the quadrilateral."""
    ys, xs = np.mgrid[0:height, 0:width]
    inside = np.ones((height, width), bool)
    for start, end in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        edge = end - start
        # signed distance to the side, > 0 inside (the corners run clockwise on screen)
        cross = edge[0] * (ys - start[1]) - edge[1] * (xs - start[0])
        inside &= cross / max(float(np.hypot(*edge)), 1e-12) >= -grow
    return np.where(inside, 255, 0).astype(np.uint8)


def _settings(config: FrameConfig, model: str) -> dict[str, object]:
    return {"model": model, "scheduler": config.scheduler, "dtype": config.dtype,
            "batch_size": 1, "device": config.device}


def inpaint_candidates(config: FrameConfig, image: np.ndarray, mask: np.ndarray,
                       seeds: tuple[int, ...], progress: ProgressCallback | None
                       ) -> Iterator[np.ndarray]:
    """One inpainted ``image`` per seed, in order, each as soon as it is made; outside
    ``mask`` each equals ``image``. The inpainting model if the config names one, else the
    model by masked latent blending."""
    engine = registry.inpaint_engine(_settings(config, config.inpaint_model or config.model))
    report(progress, "candidates", 0, len(seeds))
    for done, seed in enumerate(seeds, 1):
        job = registry.inpaint_job(image=image, mask=mask, prompt=config.prompt,
                                   negative_prompt=config.negative_prompt,
                                   steps=config.inpaint_steps, guidance=config.guidance,
                                   seeds=(seed,), feather=FEATHER)
        candidate: np.ndarray = engine.candidates(job)[0]
        report(progress, "candidates", done, len(seeds))
        yield candidate


def _padding(short: int, native: int) -> tuple[int, int]:
    return (native - short) // 2, native - short - (native - short) // 2


def img2img_artwork(config: FrameConfig, image: np.ndarray, native: int) -> np.ndarray:
    """``image`` (at most ``native`` on each side) repainted by img2img with the print prompt.

    The model sees it padded to a ``native`` square by mirroring its edges (as the seed's author
    padded to 512²), and the result is cropped back to ``image``'s size.
    """
    height, width = image.shape[:2]
    (top, bottom), (left, right) = _padding(height, native), _padding(width, native)
    square = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="symmetric")
    job = TileJob(address=ROOT, seed=config.seed, prompt=config.the_print_prompt,
                  negative_prompt=config.negative_prompt, strength=config.strength,
                  steps=config.steps, guidance=config.guidance)
    engine = registry.diffusion_engine(_settings(config, config.model))
    painted = engine.tiles(square[None], [job], TileContext(square, 1, square))[0]
    return np.ascontiguousarray(painted[top : top + height, left : left + width])


def _refine_input(config: FrameConfig, artwork: np.ndarray, size: tuple[int, int]
                  ) -> np.ndarray:
    """``artwork`` at ``size`` (width, height): through the ESRGAN model until it is at least
    that large, then resampled (bicubic resampling alone with ``upscaler = "bicubic"``)."""
    if config.esrgan:
        upscaler = registry.load_upscaler(config.upscaler, device=config.device,
                                          dtype=config.dtype)
        while artwork.shape[1] < size[0] or artwork.shape[0] < size[1]:
            artwork = registry.upscale_array(upscaler, artwork)
        del upscaler
    return resize(artwork, *size)


def refine_artwork(config: FrameConfig, artwork: np.ndarray, size: tuple[int, int], out: Path,
                   progress: ProgressCallback | None) -> np.ndarray:
    """``artwork`` enlarged to ``size`` (width, height) and redrawn at ``refine_strength`` by
    canvas windows of the model's size with the print prompt, so that the enlargement gains
    real detail and no seam (`hypermosaic.canvas`: one background prompt over the whole
    canvas, one image region holding the enlarged artwork until its strength lets it go).
    The canvas reads the enlarged artwork from a hidden folder in ``out``, removed on return."""
    with tempfile.TemporaryDirectory(prefix=".refine-", dir=out) as work:
        source = Path(work) / "refine-input.png"
        source.write_bytes(encode(_refine_input(config, artwork, size)))
        return _redraw(config, source, size, progress)


def _redraw(config: FrameConfig, source: Path, size: tuple[int, int],
            progress: ProgressCallback | None) -> np.ndarray:
    """The canvas over ``source`` (the enlarged artwork, ``size``), its model loaded here and
    let go on return."""
    width, height = size
    raw = {
        "name": "refine", "seed": config.seed, "steps": config.steps,
        "scheduler": config.scheduler, "model": config.model, "device": config.device,
        "dtype": config.dtype, "width": width, "height": height, "guidance": config.guidance,
        "negative_prompt": config.negative_prompt, "batch_size": config.batch_size,
        "background": {"prompt": config.the_print_prompt},
        "regions": [{"kind": "image", "top": 0, "bottom": height, "left": 0, "right": width,
                     "image": str(source), "strength": config.refine_strength}],
    }
    plan = plan_canvas(canvas_config_from_dict(raw, base=source.parent, source="frame.refine"))
    pipe = registry.load_canvas_pipeline(config.model, config.device, config.dtype)
    return registry.render_canvas(
        pipe, plan, lambda step, steps: report(progress, "refine steps", step, steps))


def _passes(width: int, height: int, target: tuple[int, int], scale: int) -> list[tuple[int, int]]:
    """The (width, height) fed to each ESRGAN pass: as many as its scale fits in ``target``."""
    sizes = []
    while width * scale <= target[0] and height * scale <= target[1]:
        sizes.append((width, height))
        width, height = width * scale, height * scale
    return sizes


def _esrgan(config: FrameConfig, artwork: Path, size: tuple[int, int], target: tuple[int, int],
            work: Path, progress: ProgressCallback | None) -> Path:
    """``artwork`` through the ESRGAN model as many times as its scale fits in ``target``, each
    pass streamed (`hypermosaic.upscale.upscale_file`) into a tiled TIFF in ``work``; the last
    file (``artwork`` itself if none fits). The model is let go on return."""
    upscaler = registry.load_upscaler(config.upscaler, device=config.device, dtype=config.dtype)
    passes = _passes(*size, target, upscaler.scale)
    overlap = min(DEFAULT_OVERLAP, upscaler.tile - 1)
    total = sum(len(tile_windows(h, upscaler.tile, overlap))
                * len(tile_windows(w, upscaler.tile, overlap)) for w, h in passes)
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        report(progress, "tiles", done, total)

    for index, (width, height) in enumerate(passes, 1):
        job = UpscaleJob(artwork, work / f"pass-{index}.tif", width, height, upscaler.scale)
        artwork = upscale_file(job, upscaler, on_tile=tick)
    return artwork


def _resample(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    """``image`` lazily resampled to exactly ``width`` x ``height``: Lanczos down, bicubic up
    (as `hypermosaic.images.resize` does for arrays)."""
    if (image.width, image.height) == (width, height):
        return image
    kernel = "lanczos3" if width < image.width else "cubic"
    return image.resize(width / image.width, vscale=height / image.height, kernel=kernel)


@contextmanager
def enlarged(config: FrameConfig, artwork: Path, size: tuple[int, int], target: tuple[int, int],
             progress: ProgressCallback | None) -> Iterator[pyvips.Image]:
    """``artwork`` (a file of ``size``) enlarged to ``target`` (width, height), as a lazy image
    valid inside the block: the ESRGAN model, tiled, as many times as its scale fits, then
    resampled the rest of the way.

    Nothing is held whole: each pass streams into a temporary tiled TIFF (in a hidden folder
    beside ``artwork``, removed when the block ends), which the resampling reads with random
    access, so memory does not grow with ``target`` and the print's mirrored bleed can be read.
    """
    with tempfile.TemporaryDirectory(prefix=".enlarge-", dir=artwork.parent) as work:
        if config.esrgan:
            artwork = _esrgan(config, artwork, size, target, Path(work), progress)
        # revalidate: libvips caches loads by file name, and a later run replaces the file
        yield _resample(pyvips.Image.new_from_file(str(artwork), revalidate=True), *target)
