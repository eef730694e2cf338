"""A fast path for the PNGs hypermosaic writes and reads most: 8-bit RGB, unfiltered rows.

A build writes every node as PNG and a DeepZoom pyramid decodes every leaf once and encodes
every tile above them, so the codec's speed is much of both. These files are one IHDR, one
IDAT (zlib through libdeflate: faster than zlib at both ends, and at its level 1 smaller than
zlib's level 1) and IEND, each row with filter byte 0 (photographic tiles gain little from
PNG's filters at this level). Any PNG reader opens them. `decode_rgb8` reads back files of
exactly this shape (any IDAT split, ancillary chunks skipped) and answers None for anything
else, so callers fall back to a general decoder; the zlib stream's Adler-32 guards the pixels.
"""

from __future__ import annotations

import struct

import deflate
import numpy as np

__all__ = ["SIGNATURE", "chunk", "decode_rgb8", "encode_rgb8", "rgb8_header"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB8 = (8, 2, 0, 0, 0)  # bit depth, colour type RGB, deflate, adaptive-filter method, no interlace
_LEVEL = 1


def chunk(kind: bytes, payload: bytes | bytearray) -> bytes:
    """One PNG chunk: length, type, payload and CRC-32."""
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", deflate.crc32(body))


def rgb8_header(width: int, height: int) -> bytes:
    """The IHDR payload of an 8-bit RGB image of ``width`` x ``height``."""
    return struct.pack(">II", width, height) + bytes(_RGB8)


def encode_rgb8(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 image, rows unfiltered, libdeflate level 1."""
    height, width, _ = image.shape
    rows = np.zeros((height, 1 + 3 * width), np.uint8)  # a leading 0: filter "none"
    rows[:, 1:] = image.reshape(height, 3 * width)
    compressed = deflate.zlib_compress(rows.tobytes(), _LEVEL)
    return (SIGNATURE + chunk(b"IHDR", rgb8_header(width, height))
            + chunk(b"IDAT", compressed)
            + chunk(b"IEND", b""))


def decode_rgb8(data: bytes) -> np.ndarray | None:
    """The ``(H, W, 3)`` uint8 pixels of an unfiltered 8-bit RGB PNG; None for any other PNG,
    or for one whose structure or zlib stream is damaged (a general decoder then reports it)."""
    view = memoryview(data)
    if bytes(view[:8]) != SIGNATURE or len(data) < 33 or bytes(view[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack(">II", view[16:24])
    if tuple(view[24:29]) != _RGB8 or not width or not height:
        return None
    parts, position = [], 33
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", view[position : position + 4])
        kind = bytes(view[position + 4 : position + 8])
        if kind == b"IDAT":
            parts.append(view[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        elif not kind[0] & 0x20:  # a critical chunk this path does not know (PLTE, ...)
            return None
        position += 12 + length
    else:
        return None
    stride = 1 + 3 * width
    try:
        raw = deflate.zlib_decompress(b"".join(parts), height * stride)
    except deflate.DeflateError:
        return None
    if len(raw) != height * stride:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    if rows[:, 0].any():  # filtered rows: leave them to a general decoder
        return None
    return rows[:, 1:].reshape(height, width, 3).copy()
