"""An uploaded image's format and size, read from its header before anything is decoded.

A 631-byte JPEG can claim 30000 x 30000 pixels: OpenCV (up to 2^30 pixels
by default) would then allocate 2.7 GB to decode it. So the service reads
the size from the PNG IHDR chunk or the JPEG frame header (SOFn) and refuses
what is too large before ``cv2.imdecode`` runs. Only PNG and JPEG are
accepted: the formats the API documents, and the ones whose headers this
reads.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that start a frame (and carry its size): SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-RST7, SOI (EOI ends the image).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


class ImageHeaderError(ValueError):
    """Not a PNG or JPEG, or a header that cannot be read; the message says which."""


def image_dimensions(data: bytes) -> tuple[str, int, int]:
    """("png" | "jpeg", width, height) from the header; raises ImageHeaderError."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageHeaderError("a PNG without its IHDR header chunk (truncated?)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"\xff\xd8"):
        return "jpeg", *_jpeg_dimensions(data)
    raise ImageHeaderError("not a PNG or JPEG image")


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i < n:
        if data[i] != 0xFF:
            raise ImageHeaderError(f"a JPEG with bytes between its markers at offset {i} (damaged?)")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        if i + 2 > n:
            break
        length = struct.unpack(">H", data[i:i + 2])[0]
        if length < 2:
            raise ImageHeaderError(f"a JPEG segment of length {length} at offset {i} (damaged)")
        if marker in _SOF:
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3:i + 7])
            return width, height
        i += length
    raise ImageHeaderError("a JPEG without a frame header (SOF) before its image data (truncated or damaged)")
