"""The unfiltered RGB8 PNG fast path: readers accept what it writes, it reads only what it can."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import pyvips
from PIL import Image

from hypermosaic.images import decode, encode
from hypermosaic.png import decode_rgb8, encode_rgb8

from .helpers import astronaut


def _random(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _photo() -> np.ndarray:
    return astronaut(96, 128)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (17, 300), (256, 256)])
def test_real_readers_accept_what_it_writes(height: int, width: int) -> None:
    image = _random(height, width)
    data = encode(image)
    assert data == encode_rgb8(image)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "RGB" and np.array_equal(np.asarray(opened), image)
    assert np.array_equal(pyvips.Image.new_from_buffer(data, "").numpy(), image)
    decoded = decode(data)
    assert np.array_equal(decoded, image) and decoded.flags.writeable


def _pillow_png(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_other_pngs_fall_back_to_a_general_decoder() -> None:
    photo = _photo()
    palette = Image.fromarray(photo).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    cases = {
        "filtered": (_pillow_png(photo), photo),  # Pillow filters its rows adaptively
        "rgba": (_pillow_png(np.dstack([photo, np.full(photo.shape[:2], 9, np.uint8)])), photo),
        "grey": (_pillow_png(photo[..., 0]), np.repeat(photo[..., :1], 3, axis=2)),
        "palette": (buffer.getvalue(), np.asarray(palette.convert("RGB"))),
        "interlaced": (pyvips.Image.new_from_array(photo).pngsave_buffer(interlace=True), photo),
    }
    for name, (data, expected) in cases.items():
        assert decode_rgb8(data) is None, name
        assert np.array_equal(decode(data), expected), name


def test_libvips_unfiltered_nodes_and_ancillary_chunks_take_the_fast_path() -> None:
    photo = _photo()
    by_libvips = pyvips.Image.new_from_array(photo).pngsave_buffer(compression=1)
    assert np.array_equal(decode_rgb8(by_libvips), photo)  # nodes written before this path
    data = encode_rgb8(photo)
    text = b"tEXtComment\x00hello"
    chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text))
    with_text = data[:33] + chunk + data[33:]
    assert np.array_equal(decode_rgb8(with_text), photo)


def test_damaged_files_are_left_to_the_general_decoder() -> None:
    data = encode_rgb8(_photo())
    truncated = data[: len(data) // 2]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the zlib stream: its Adler-32 no longer matches
    for damaged in (truncated, bytes(flipped), data[:20]):
        assert decode_rgb8(damaged) is None
        with pytest.raises((OSError, SyntaxError, ValueError, pyvips.Error)):
            decode(damaged)
