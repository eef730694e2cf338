"""Print sizes: parsing, the pixel rounding rule, bleed, and the errors naming their key."""

from __future__ import annotations

import math
import re

import pytest

from hypermosaic.frame.sizes import PrintSize, mm_from_px, parse_size, print_size, px_from_mm


@pytest.mark.parametrize(
    ("text", "mm"),
    [
        ("50x70cm", (500.0, 700.0)),
        ("50 x 70 cm", (500.0, 700.0)),
        ("500x700mm", (500.0, 700.0)),
        ("50×70CM", (500.0, 700.0)),
        ("19.7x27.6in", (19.7 * 25.4, 27.6 * 25.4)),
        ('20x28"', (508.0, 711.2)),
        ("8 x 10 inches", (203.2, 254.0)),
    ],
)
def test_parse_size(text: str, mm: tuple[float, float]) -> None:
    assert parse_size(text) == pytest.approx(mm)


def test_50x70cm_at_300_dpi() -> None:
    """Nearest pixel, halves up: 500 mm = 5905.51 px → 5906; 700 mm = 8267.72 px → 8268."""
    size = print_size("50x70cm")
    assert size.pixels == size.trim_px == (5906, 8268)
    assert size.bleed_px == 0
    assert size.printed_mm == pytest.approx((5906 * 25.4 / 300, 8268 * 25.4 / 300))


def test_bleed_is_rounded_once_and_added_on_every_side() -> None:
    size = print_size("50x70cm", dpi=300, bleed_mm=3)
    assert size.bleed_px == 35  # 3 mm = 35.43 px
    assert size.trim_px == (5906, 8268)
    assert size.pixels == (5976, 8338)
    assert size.printed_mm[0] == pytest.approx(506.0, abs=25.4 / 300)


def test_rounding_and_back() -> None:
    assert px_from_mm(25.4, 300) == 300
    assert px_from_mm(12.7, 1) == 1  # exactly half a pixel rounds up (round() would give 0)
    assert px_from_mm(12.69, 1) == 0
    assert mm_from_px(300, 300) == pytest.approx(25.4)
    assert print_size('20x28"', dpi=240).pixels == (4800, 6720)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("50x70ft", "frame.size: unknown unit 'ft' in '50x70ft' (use mm, cm, in or \")"),
        ("50x70", "frame.size: '50x70' has no unit (use mm, cm, in or \")"),
        (
            "fifty by seventy",
            "frame.size: cannot read 'fifty by seventy' as WIDTHxHEIGHT and a unit",
        ),
        ("0x70cm", "frame.size: '0x70cm' must be larger than 0 on both sides"),
    ],
)
def test_bad_sizes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_size(text)


@pytest.mark.parametrize("dpi", [0, -300, math.nan, math.inf])
def test_bad_dpi(dpi: float) -> None:
    message = f"frame.dpi: must be a finite number > 0, got {dpi!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        print_size("50x70cm", dpi=dpi)


@pytest.mark.parametrize("bleed", [-1.0, math.nan])
def test_bad_bleed(bleed: float) -> None:
    message = f"frame.bleed: must be a finite number of mm >= 0, got {bleed!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        print_size("50x70cm", bleed_mm=bleed)


def test_print_size_checks_its_fields() -> None:
    with pytest.raises(ValueError, match=r"^frame\.size: must be finite, got nanx700.0mm$"):
        PrintSize(math.nan, 700.0)
    with pytest.raises(ValueError, match=r"^frame\.dpi: "):
        PrintSize(500.0, 700.0, dpi=0)
