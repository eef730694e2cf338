"""`hypermosaic canvas`: mixture-of-diffusers canvases, side by side on the Dask pool.

Each (config, seed) pair is one canvas: planned here (pure, every input checked before work
starts), rendered by one task on a worker that holds the model (`CanvasPlugin`, loaded once per
worker), and written here: PNG up to `PNG_MAX_PIXELS`, tiled BigTIFF beyond, optionally a
DeepZoom pyramid, and with ``upscale = 4`` a Real-ESRGAN enlargement beside it. Every file is
written to a temporary name and renamed, so a failed run leaves earlier outputs intact.
Workers report each denoising step as a Dask event, which drives the progress callback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, WorkerPlugin, as_completed, get_worker

from hypermosaic.canvas_config import CanvasConfig
from hypermosaic.canvas_plan import CanvasPlan, check_window_stride, plan_canvas
from hypermosaic.errors import InputError
from hypermosaic.executor import cpu_count, open_client

__all__ = [
    "CanvasJob",
    "CanvasPlugin",
    "CanvasResult",
    "PNG_MAX_PIXELS",
    "check_windows",
    "plan_jobs",
    "plugin_name",
    "render_task",
    "run_canvases",
    "write_deepzoom",
    "write_image",
]

PNG_MAX_PIXELS = 2**28  # 16384 x 16384; beyond, a tiled BigTIFF that viewers read lazily
StepHook = Callable[[int, int, int], None]


@dataclass(frozen=True)
class CanvasJob:
    """One canvas to render: a config and the plan of one of its seeds."""

    config: CanvasConfig
    plan: CanvasPlan

    @property
    def stem(self) -> str:
        """The output file name without suffix: ``<config name>-<seed>``."""
        return f"{self.config.name}-{self.plan.seed}"

    @property
    def key(self) -> str:
        """A Dask key derived from everything that decides the task's result."""
        what = repr((self.plan, self.config.model, self.config.device, self.config.dtype,
                     self.config.upscale, self.config.upscale_model))
        return f"canvas-{self.stem}-{hashlib.blake2b(what.encode(), digest_size=8).hexdigest()}"


@dataclass
class CanvasResult:
    """The files written for one canvas."""

    job: CanvasJob
    outputs: dict[str, Path] = field(default_factory=dict)


def plan_jobs(configs: Sequence[CanvasConfig]) -> list[CanvasJob]:
    """Plan every seed of every config; `InputError` before any work for a bad input.

    Checks that each config names a model that is there (located without loading it), that
    its sliding windows leave no gaps at the model's native size, that the ESRGAN model of an
    ``upscale`` exists, and that no two canvases would write the same file.
    """
    from hypermosaic.pipelines.models import locate_model, native_size

    jobs = []
    natives: dict[str, int | None] = {}
    for config in configs:
        if config.model is None:
            raise InputError(f"{config.name}: model: no model given (set model in the config "
                             "or pass --model)")
        if config.upscale > 1:
            _check_upscaler(config)
        jobs.extend(CanvasJob(config, plan_canvas(config, seed)) for seed in config.seed)
    for config in configs:
        assert config.model is not None
        if config.model not in natives:
            try:
                natives[config.model] = native_size(locate_model(config.model, key="model"))
            except InputError as exc:
                raise InputError(f"{config.name}: {exc}") from None
        check_windows(config, natives[config.model])
    seen: dict[Path, str] = {}
    for job in jobs:
        target = job.config.out / job.stem
        if target in seen:
            raise InputError(f"{job.config.name}: two canvases would write {target}.*; give the "
                             "configs different names or outputs")
        seen[target] = job.stem
    return jobs


def check_windows(config: CanvasConfig, native: int | None) -> None:
    """`check_window_stride` for the brushes' window of ``config`` (its ``window_size``, else
    the model's ``native`` side in pixels, when known), the error naming the config."""
    size = config.window_size or native
    if size is None:
        return
    try:
        check_window_stride(config.window_stride, size, config.window_size)
    except InputError as exc:
        raise InputError(f"{config.name}: {exc}") from None


def _check_upscaler(config: CanvasConfig) -> None:
    from hypermosaic.pipelines.esrgan import MODELS

    name = config.upscale_model
    if name not in MODELS and not Path(name).is_file():
        raise InputError(f"{config.name}: upscale_model: {name!r} is neither one of "
                         f"{', '.join(MODELS)} nor a weights file")


class CanvasPlugin(WorkerPlugin):
    """Loads one Stable Diffusion model once per worker (and ESRGAN models on first use)."""

    def __init__(self, model: str, device: str, dtype: str, torch_threads: int = 0) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.torch_threads = torch_threads
        self.name = plugin_name(model, device, dtype)
        self.pipe: Any = None
        self.upscalers: dict[str, Any] = {}

    def setup(self, worker: Any) -> None:
        import torch

        from hypermosaic.pipelines.models import (
            load_pipeline,
            quiet_libraries,
            resolve_device_dtype,
        )

        quiet_libraries()
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        device, dtype = resolve_device_dtype(self.device, self.dtype)
        self.pipe = load_pipeline(self.model, device=device, dtype=dtype)

    def teardown(self, worker: Any) -> None:
        self.pipe = None
        self.upscalers.clear()

    def upscaler(self, name: str) -> Any:
        """The ESRGAN upscaler ``name`` on this worker's device, loaded on first use."""
        if name not in self.upscalers:
            from hypermosaic.pipelines.esrgan import load_upscaler

            self.upscalers[name] = load_upscaler(name, device=self.pipe.device)
        return self.upscalers[name]


def plugin_name(model: str, device: str, dtype: str) -> str:
    """The registration name of the plugin holding ``model`` (registering twice is harmless)."""
    digest = hashlib.blake2b(f"{model}|{device}|{dtype}".encode(), digest_size=6).hexdigest()
    return f"hypermosaic-canvas-{digest}"


def render_task(
    plugin: str, plan: CanvasPlan, upscale_model: str | None, topic: str, index: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one canvas on this worker; with ``upscale_model`` also its ESRGAN enlargement.

    Each finished step is logged as the event ``[index, step, steps]`` under ``topic``.
    """
    from hypermosaic.pipelines.canvas import render_canvas

    worker = get_worker()
    holder = worker.plugins[plugin]

    def on_step(step: int, steps: int) -> None:
        worker.log_event(topic, [index, step, steps])

    image = render_canvas(holder.pipe, plan, on_step)
    if upscale_model is None:
        return image, None
    from hypermosaic.pipelines.tiled_upscale import upscale_array

    return image, upscale_array(holder.upscaler(upscale_model), image)


def run_canvases(
    jobs: Sequence[CanvasJob],
    *,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Client | None = None,
    on_step: StepHook | None = None,
) -> list[CanvasResult]:
    """Render ``jobs`` on the pool and write their files; results in the order of ``jobs``.

    ``on_step(index, step, steps)`` is called (on the client's event thread) as canvas
    ``index`` finishes each step. A worker's error (a model that cannot load) is raised here.
    """
    results = [CanvasResult(job) for job in jobs]
    if not jobs:
        return results
    pool = nullcontext(client) if client is not None else open_client(
        workers, scheduler_address, gpu=True
    )
    topic = f"hypermosaic-canvas-{uuid.uuid4().hex}"
    with pool as active:
        # 1. One model plugin per distinct (model, device, dtype).
        threads = max(1, cpu_count() // max(1, len(active.nthreads())))
        for spec in dict.fromkeys(_model_spec(job.config) for job in jobs):
            active.register_plugin(CanvasPlugin(*spec, torch_threads=threads))
        # 2. One task per canvas; progress arrives as events.
        if on_step is not None:
            active.subscribe_topic(topic, lambda event: on_step(*event[1]))
        futures = {
            active.submit(
                render_task, plugin_name(*_model_spec(job.config)), job.plan,
                job.config.upscale_model if job.config.upscale > 1 else None, topic, index,
                key=job.key,
            ): index
            for index, job in enumerate(jobs)
        }
        # 3. Write each canvas as it comes back.
        try:
            for future in as_completed(futures):
                index = futures[future]
                image, upscaled = future.result()
                results[index].outputs = _write_outputs(jobs[index], image, upscaled)
        finally:
            if on_step is not None:
                active.unsubscribe_topic(topic)
    return results


def _model_spec(config: CanvasConfig) -> tuple[str, str, str]:
    return str(config.model), config.device, config.dtype


def _write_outputs(job: CanvasJob, image: np.ndarray, upscaled: np.ndarray | None
                   ) -> dict[str, Path]:
    config = job.config
    outputs = {"image": write_image(image, config.out / job.stem, config.format)}
    final = image
    if upscaled is not None:
        outputs["upscaled"] = write_image(
            upscaled, config.out / f"{job.stem}-x{config.upscale}", config.format
        )
        final = upscaled
    if config.deepzoom:
        outputs["deepzoom"] = write_deepzoom(final, config.out, job.stem)
    return outputs


def write_image(image: np.ndarray, stem: Path, fmt: str = "auto") -> Path:
    """Write ``(H, W, 3)`` uint8 as ``stem.png``, or as a tiled BigTIFF ``stem.tif`` when
    ``fmt`` is ``tiff`` or (``auto``) the image has more than `PNG_MAX_PIXELS`. Atomic."""
    import pyvips

    height, width = image.shape[:2]
    tiff = fmt == "tiff" or (fmt == "auto" and height * width > PNG_MAX_PIXELS)
    path = stem.with_name(stem.name + (".tif" if tiff else ".png"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    vips = pyvips.Image.new_from_array(np.ascontiguousarray(image))
    try:
        if tiff:
            vips.tiffsave(str(tmp), tile=True, tile_width=256, tile_height=256, bigtiff=True,
                          compression="deflate")
        else:
            vips.pngsave(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_deepzoom(image: np.ndarray, folder: Path, stem: str) -> Path:
    """Write ``stem.dzi`` and ``stem_files/`` (JPEG tiles) in ``folder``, replacing old ones."""
    import pyvips

    staging = folder / f".{stem}.{os.getpid()}.dz"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        pyvips.Image.new_from_array(np.ascontiguousarray(image)).dzsave(
            str(staging / stem), tile_size=256, overlap=0, suffix=".jpg[Q=90]", layout="dz"
        )
        tiles = folder / f"{stem}_files"
        shutil.rmtree(tiles, ignore_errors=True)
        os.replace(staging / f"{stem}_files", tiles)
        os.replace(staging / f"{stem}.dzi", folder / f"{stem}.dzi")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / f"{stem}.dzi"
