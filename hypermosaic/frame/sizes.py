"""Print sizes: a frame's inside (`50x70cm`), a DPI and a bleed turned into the print's pixels.

Rounding rule: each physical length becomes ``floor(mm / 25.4 * dpi + 0.5)`` pixels (the nearest
pixel, halves up), so a print is never more than half a pixel (0.04 mm at 300 dpi) off its size.
The bleed is rounded the same way once, on its own, and added on every side, so the trim box is a
whole-pixel rectangle centred in the print: 50x70cm at 300 dpi is 5906x8268 pixels, and with a 3 mm
bleed (35 px a side) 5976x8338. Errors are ValueErrors naming the key: ``frame.size``,
``frame.dpi`` or ``frame.bleed``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DPI",
    "MM_PER_INCH",
    "PrintSize",
    "check_bleed",
    "check_dpi",
    "mm_from_px",
    "parse_size",
    "print_size",
    "px_from_mm",
]

MM_PER_INCH = 25.4
DEFAULT_DPI = 300.0
_MM_PER_UNIT = {"mm": 1.0, "cm": 10.0, '"': MM_PER_INCH}
_MM_PER_UNIT.update(dict.fromkeys(("in", "inch", "inches"), MM_PER_INCH))
_UNITS = 'mm, cm, in or "'
_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_SIZE = re.compile(
    rf"^\s*(?P<w>{_NUMBER})\s*[x×]\s*(?P<h>{_NUMBER})\s*(?P<unit>[^\s\d.]*)\s*$", re.IGNORECASE
)


def parse_size(text: str) -> tuple[float, float]:
    """``WIDTHxHEIGHT`` with one unit (mm, cm, in or ") → (width, height) in mm."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(
            f"frame.size: cannot read {text!r} as WIDTHxHEIGHT and a unit, e.g. 50x70cm"
        )
    unit = match["unit"].lower()
    if not unit:
        raise ValueError(f"frame.size: {text!r} has no unit (use {_UNITS})")
    if unit not in _MM_PER_UNIT:
        raise ValueError(f"frame.size: unknown unit {match['unit']!r} in {text!r} (use {_UNITS})")
    width, height = (float(match[key]) * _MM_PER_UNIT[unit] for key in ("w", "h"))
    if width <= 0 or height <= 0:
        raise ValueError(f"frame.size: {text!r} must be larger than 0 on both sides")
    return width, height


def check_dpi(dpi: float) -> float:
    """The DPI as a float; ValueError unless it is a finite number > 0."""
    if (
        isinstance(dpi, bool)
        or not isinstance(dpi, int | float)
        or not math.isfinite(dpi)
        or dpi <= 0
    ):
        raise ValueError(f"frame.dpi: must be a finite number > 0, got {dpi!r}")
    return float(dpi)


def check_bleed(bleed_mm: float) -> float:
    """The bleed in mm as a float; ValueError unless it is a finite number >= 0."""
    ok = not isinstance(bleed_mm, bool) and isinstance(bleed_mm, int | float)
    if not ok or not math.isfinite(bleed_mm) or bleed_mm < 0:
        raise ValueError(f"frame.bleed: must be a finite number of mm >= 0, got {bleed_mm!r}")
    return float(bleed_mm)


def px_from_mm(mm: float, dpi: float) -> int:
    """A length in mm → whole pixels at ``dpi``, to the nearest pixel (halves up)."""
    return math.floor(mm / MM_PER_INCH * dpi + 0.5)


def mm_from_px(px: int, dpi: float) -> float:
    """Pixels at ``dpi`` → their physical length in mm."""
    return px * MM_PER_INCH / dpi


@dataclass(frozen=True)
class PrintSize:
    """A print: the trim size (the frame's inside) in mm, its DPI and the bleed per side in mm."""

    width_mm: float
    height_mm: float
    dpi: float = DEFAULT_DPI
    bleed_mm: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width_mm) and math.isfinite(self.height_mm)):
            raise ValueError(f"frame.size: must be finite, got {self.width_mm}x{self.height_mm}mm")
        if self.width_mm <= 0 or self.height_mm <= 0:
            raise ValueError(f"frame.size: must be > 0, got {self.width_mm}x{self.height_mm}mm")
        check_dpi(self.dpi)
        check_bleed(self.bleed_mm)

    @property
    def trim_px(self) -> tuple[int, int]:
        """(width, height) of the trim box in pixels, bleed left out."""
        return px_from_mm(self.width_mm, self.dpi), px_from_mm(self.height_mm, self.dpi)

    @property
    def bleed_px(self) -> int:
        """Bleed pixels added on each side."""
        return px_from_mm(self.bleed_mm, self.dpi)

    @property
    def pixels(self) -> tuple[int, int]:
        """(width, height) of the whole print file: the trim box plus the bleed on both sides."""
        width, height = self.trim_px
        return width + 2 * self.bleed_px, height + 2 * self.bleed_px

    @property
    def printed_mm(self) -> tuple[float, float]:
        """(width, height) in mm that the print file's pixels really measure at its DPI."""
        width, height = self.pixels
        return mm_from_px(width, self.dpi), mm_from_px(height, self.dpi)


def print_size(text: str, dpi: float = DEFAULT_DPI, bleed_mm: float = 0.0) -> PrintSize:
    """Parse ``text`` (e.g. ``50x70cm``) and check the DPI and bleed into a `PrintSize`."""
    width, height = parse_size(text)
    return PrintSize(width, height, check_dpi(dpi), check_bleed(bleed_mm))
