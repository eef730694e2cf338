"""The painting a browser edits: its palette of semantic brushes, their masks, the background,
and the canvas config that says all of it.

A `Painting` is plain data (masks are uint8 alpha arrays of the canvas's size). It becomes a
`hypermosaic canvas` config on disk (`write_config`: ``painting.toml``, ``masks/brush-N.png``
and ``background.png``), and the stream paints the plan of exactly that config
(`plan_painting` writes it and plans it with `hypermosaic.canvas.plan_canvas`), so an export is
the config the frames came from and `hypermosaic canvas` renders it to the same image.
`read_painting` loads such a config back (its brushes, masks and background; other regions
are refused).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from hypermosaic.canvas import CanvasPlan, load_canvas_config, plan_canvas
from hypermosaic.canvas.background import read_mask
from hypermosaic.errors import InputError
from hypermosaic.images import encode, load_image
from hypermosaic.store import atomic_write

__all__ = ["CONFIG_NAME", "Brush", "Painting", "config_text", "mask_from_png", "plan_painting",
           "read_painting", "write_config"]

CONFIG_NAME = "painting.toml"
MAX_BRUSHES = 16
COLOUR = "#[0-9a-fA-F]{6}"


@dataclass(frozen=True)
class Brush:
    """One palette entry: a prompt painted where ``mask`` (uint8 ``(H, W)``, 255 = on) is,
    shown in ``colour``; ``blur`` is the mask's standard deviation in px, ``strength`` its
    weight."""

    prompt: str
    colour: str = "#e6194b"
    blur: float = 8.0
    strength: float = 1.0
    negative_prompt: str = ""
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8), compare=False,
                             repr=False)


@dataclass(frozen=True)
class Painting:
    """Everything a canvas config of the painting holds: size, model, seed, LCM steps, the
    background prompt (and photo, uint8 ``(H, W, 3)``) and the brushes."""

    width: int
    height: int
    model: str
    seed: int = 0
    steps: int = 4
    guidance: float = 1.5
    bootstrap_steps: int = 0
    background: str = "a plain white wall"
    feather: int = 8
    brushes: tuple[Brush, ...] = ()
    photo: np.ndarray | None = field(default=None, compare=False, repr=False)

    def with_mask(self, index: int, mask: np.ndarray) -> Painting:
        """The painting with brush ``index``'s mask replaced (`InputError` for a bad one)."""
        if not 0 <= index < len(self.brushes):
            raise InputError(f"mask: no brush {index}")
        if mask.shape != (self.height, self.width):
            raise InputError(f"mask: {mask.shape[1]}x{mask.shape[0]} but the canvas is "
                             f"{self.width}x{self.height}")
        brushes = list(self.brushes)
        brushes[index] = replace(brushes[index], mask=mask.astype(np.uint8))
        return replace(self, brushes=tuple(brushes))

    def empty_mask(self) -> np.ndarray:
        return np.zeros((self.height, self.width), np.uint8)


def _toml(value: object) -> str:
    """A TOML value: JSON's strings, numbers and booleans are TOML's too."""
    return json.dumps(value, ensure_ascii=False)


def config_text(painting: Painting) -> str:
    """The canvas config of ``painting`` (paths relative to its folder)."""
    lines = [
        "# A painting from `hypermosaic paint`: render it with `hypermosaic canvas`.",
        f"model = {_toml(painting.model)}",
        f"width = {painting.width}",
        f"height = {painting.height}",
        f"seed = {painting.seed}",
        f"steps = {painting.steps}",
        'scheduler = "lcm"',
        f"guidance = {_toml(float(painting.guidance))}",
        f"bootstrap_steps = {painting.bootstrap_steps}",
        "",
        "[background]",
        f"prompt = {_toml(painting.background)}",
    ]
    if painting.photo is not None:
        lines += ['image = "background.png"', f"feather = {painting.feather}"]
    for index, brush in enumerate(painting.brushes):
        lines += [
            "",
            "[[regions]]",
            'kind = "brush"',
            f'mask = "masks/brush-{index}.png"',
            f"prompt = {_toml(brush.prompt)}",
            f"negative_prompt = {_toml(brush.negative_prompt)}",
            f"blur = {_toml(float(brush.blur))}",
            f"strength = {_toml(float(brush.strength))}",
            f"# colour = {_toml(brush.colour)}",
        ]
    return "\n".join(lines) + "\n"


def write_config(painting: Painting, folder: Path) -> Path:
    """Write ``painting`` as a canvas config in ``folder``; returns the config's path.

    Masks are grey PNGs (the canvas reads grey level when there is no alpha); files are
    written atomically, and only when their bytes changed.
    """
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    files: dict[Path, bytes] = {folder / CONFIG_NAME: config_text(painting).encode()}
    for index, brush in enumerate(painting.brushes):
        mask = brush.mask if brush.mask.size else painting.empty_mask()
        files[folder / "masks" / f"brush-{index}.png"] = encode(mask[..., None], "png")
    if painting.photo is not None:
        files[folder / "background.png"] = encode(painting.photo, "png")
    for path, data in files.items():
        if not path.exists() or path.read_bytes() != data:
            atomic_write(path, data)
    return folder / CONFIG_NAME


def plan_painting(painting: Painting, folder: Path) -> CanvasPlan:
    """The `CanvasPlan` of ``painting``: its config written in ``folder`` and planned as
    `hypermosaic canvas` plans it (so the frames are that command's canvas)."""
    return plan_canvas(load_canvas_config(write_config(painting, folder)))


def read_painting(path: Path | str, model: str | None = None) -> Painting:
    """The painting of a canvas config made of brushes and a background (what `write_config`
    writes); `InputError` naming the key for anything else (text regions, a grid)."""
    path = Path(path)
    config = load_canvas_config(path, {"model": model})
    if config.grid is not None:
        raise InputError(f"{path}: grid: a painting has only brushes and a background")
    height, width = config.size
    brushes = []
    for index, region in enumerate(config.regions):
        if region.kind != "brush" or len(region.prompt) != 1:
            raise InputError(f"{path}: regions.{index}: a painting has only brushes of one "
                             "prompt")
        mask = read_mask(region.mask, height, width, f"regions.{index}.mask")
        brushes.append(Brush(region.prompt[0][0], _colour(path, index), region.blur,
                             region.strength, region.negative_prompt or "",
                             np.round(mask * 255).astype(np.uint8)))
    background = config.background
    photo = None if background is None or background.image is None else load_image(
        background.image)
    if config.model is None:
        raise InputError(f"{path}: model: give one (--model)")
    return Painting(
        width=width, height=height, model=config.model, seed=config.seed[0],
        steps=config.steps, guidance=config.guidance, bootstrap_steps=config.bootstrap_steps,
        background="" if background is None else background.prompt[0][0],
        feather=8 if background is None else background.feather,
        brushes=tuple(brushes[:MAX_BRUSHES]), photo=photo)


def _colour(path: Path, index: int) -> str:
    """The colour ``write_config`` noted in a comment after brush ``index``, else a default."""
    found = re.findall(rf'# colour = "({COLOUR})"', path.read_text(encoding="utf-8"))
    palette = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4")
    return found[index] if index < len(found) else palette[index % len(palette)]


def mask_from_png(data: bytes, painting: Painting) -> np.ndarray:
    """A mask sent by the page (a PNG of the canvas's size; alpha, else grey) as uint8."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (painting.width, painting.height):
                raise InputError(f"mask: {image.width}x{image.height} but the canvas is "
                                 f"{painting.width}x{painting.height}")
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            plane = image.convert("RGBA").getchannel("A") if has_alpha else image.convert("L")
            return np.asarray(plane, np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise InputError(f"mask: not a readable PNG ({exc})") from None
