"""The frame config: the ``[frame]`` table of a TOML file and the command line's options,
validated into one `FrameConfig`.

Options override the file's keys; paths in a file (``photo``, ``mask``, ``out``) are relative
to that file. Types and ranges are checked here, one line naming the key; what needs the photo
or the sizes' grammar (corners, masks, units, DPI) is checked by `hypermosaic.frame.plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from hypermosaic.errors import InputError
from hypermosaic.frame.sizes import DEFAULT_DPI
from hypermosaic.identity import BICUBIC, Device, Dtype, SchedulerName, UpscalerOrBicubic
from hypermosaic.settings import Strict, read_config_file, validation_message

__all__ = ["DOCS", "FrameConfig", "frame_config"]

DOCS = "docs/print.md"
_PATH_KEYS = ("photo", "mask", "out")

Corner = tuple[float, float]


class FrameConfig(Strict):
    """Everything `hypermosaic.frame.frame_print` needs, its keys as in ``[frame]``."""

    photo: Path
    corners: str | list[Corner] | None = None
    mask: Path | None = None
    size: str
    dpi: float = DEFAULT_DPI
    bleed: float = 0.0
    prompt: str
    print_prompt: str | None = None
    negative_prompt: str = ""
    model: str
    inpaint_model: str | None = None
    scheduler: SchedulerName = "default"
    candidates: Annotated[int, Field(ge=1, le=64)] = 4
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    choose: Annotated[int, Field(ge=1)] = 1
    inpaint_size: Annotated[int, Field(ge=64, le=4096)] | None = None
    inpaint_steps: Annotated[int, Field(ge=1, le=1000)] = 30
    steps: Annotated[int, Field(ge=1, le=1000)] = 30
    strength: Annotated[float, Field(gt=0, le=1)] = 0.5
    guidance: Annotated[float, Field(ge=0, le=50)] = 7.5
    colour_fix: Annotated[float, Field(ge=0, le=1)] = 0.0
    refine_strength: Annotated[float, Field(ge=0, lt=1)] = 0.0
    refine_scale: Annotated[int, Field(ge=2, le=8)] = 2
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    upscaler: UpscalerOrBicubic = "x4plus"
    format: Literal["tif", "png"] = "tif"
    device: Device = "auto"
    dtype: Dtype = "auto"
    out: Path = Path("out")

    @property
    def the_print_prompt(self) -> str:
        """The img2img prompt: ``print_prompt``, else the inpainting ``prompt``."""
        return self.print_prompt or self.prompt

    @property
    def refine(self) -> bool:
        """Whether the detail pass (canvas windows over the enlarged artwork) runs."""
        return self.refine_strength > 0

    @property
    def esrgan(self) -> bool:
        """Whether an ESRGAN model (not bicubic resampling) enlarges the artwork."""
        return self.upscaler != BICUBIC


class _FrameFile(Strict):
    frame: FrameConfig


def frame_config(path: Path | str | None = None, **options: Any) -> FrameConfig:
    """The config in ``path``'s ``[frame]`` table (none: options only) with ``options`` (not
    None) laid over it; `InputError` naming the file (or ``options``) and the key."""
    raw: dict[str, Any] = {}
    source = "options"
    if path is not None:
        path = Path(path)
        source = str(path)
        data = read_config_file(path)
        unknown = sorted(set(data) - {"frame"})
        if unknown:
            raise InputError(f"{path}: {unknown[0]}: unknown table (the keys go under [frame])")
        raw = dict(data.get("frame", {}))
        for key in _PATH_KEYS:
            if isinstance(raw.get(key), str):
                raw[key] = str(path.parent / raw[key])
    raw.update({key: value for key, value in options.items() if value is not None})
    try:
        return _FrameFile.model_validate({"frame": raw}).frame
    except ValidationError as error:
        raise InputError(validation_message(error, source, docs=DOCS)) from None
