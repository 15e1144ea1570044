"""Frame codec: COBS framing, CRC-32, header; pure functions plus a streaming deframer.

Wire format (see ``firmware_bridge.spec``)::

    COBS( header(11) | payload | CRC-32 little-endian ) 0x00

COBS comes from the ``cobs`` package (a maintained C-accelerated implementation)
rather than a hand-rolled loop; the tests check it against the firmware's own C
COBS on shared vectors and random data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cobs import cobs

from firmware_bridge.checksum import crc32
from firmware_bridge.errors import CrcError, FrameError
from firmware_bridge.spec import (
    CONST,
    CRC_SIZE,
    HEADER_FORMAT,
    HEADER_SIZE,
    MAX_ENCODED_FRAME,
    MAX_PAYLOAD,
    MESSAGE_BY_TYPE,
)

DELIMITER = b"\x00"
PROTOCOL_VERSION = int(CONST["PROTOCOL_VERSION"])
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """A decoded frame: header fields and the raw payload."""

    msg_type: int
    seq: int
    timestamp_ms: int
    payload: bytes
    flags: int = 0
    version: int = PROTOCOL_VERSION


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (the result contains no 0x00 byte)."""
    return cobs.encode(bytes(data))


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block (without its delimiter).

    Raises:
        FrameError: ``data`` is not valid COBS (contains 0x00 or a length code runs past the end).
    """
    try:
        return cobs.decode(bytes(data))
    except cobs.DecodeError as exc:
        raise FrameError(f"bad COBS block {bytes(data[:16]).hex()}...: {exc}") from exc


def encode_frame(msg_type: int, payload: bytes, *, seq: int, timestamp_ms: int, flags: int = 0,
                 version: int = PROTOCOL_VERSION) -> bytes:
    """Build the wire bytes of one frame, delimiter included.

    ``seq`` and ``timestamp_ms`` wrap modulo 2**32 (serial-number arithmetic on both ends).

    Raises:
        FrameError: the payload is longer than MAX_PAYLOAD.
    """
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = struct.pack(HEADER_FORMAT, version & 0xFF, msg_type & 0xFF, flags & 0xFF, seq & _U32,
                       timestamp_ms & _U32) + bytes(payload)
    body += struct.pack("<I", crc32(body))
    return cobs_encode(body) + DELIMITER


def decode_frame(block: bytes) -> Frame:
    """Decode one COBS block (the bytes between two delimiters) into a :class:`Frame`.

    Checks, in order: COBS, minimum size, CRC-32, protocol version, known
    message type, exact payload size for that type.

    Raises:
        CrcError: the checksum does not match.
        FrameError: anything else is wrong.
    """
    if len(block) > MAX_ENCODED_FRAME:
        raise FrameError(f"frame of {len(block)} encoded bytes exceeds MAX_ENCODED_FRAME={MAX_ENCODED_FRAME}")
    raw = cobs_decode(block)
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise FrameError(f"truncated frame: {len(raw)} bytes, need at least {HEADER_SIZE + CRC_SIZE}")
    body, (crc_rx,) = raw[:-CRC_SIZE], struct.unpack("<I", raw[-CRC_SIZE:])
    crc_calc = crc32(body)
    if crc_rx != crc_calc:
        raise CrcError(f"CRC mismatch: frame says 0x{crc_rx:08X}, contents give 0x{crc_calc:08X}")
    version, msg_type, flags, seq, ts = struct.unpack(HEADER_FORMAT, body[:HEADER_SIZE])
    if version != PROTOCOL_VERSION:
        raise FrameError(f"protocol version {version}, this host speaks {PROTOCOL_VERSION}: "
                         "update the firmware or the host so that both use the same version")
    spec = MESSAGE_BY_TYPE.get(msg_type)
    if spec is None:
        raise FrameError(f"unknown message type 0x{msg_type:02X}")
    payload = body[HEADER_SIZE:]
    if len(payload) != spec.size:
        raise FrameError(f"{spec.name} payload of {len(payload)} bytes, expected {spec.size}")
    return Frame(msg_type=msg_type, seq=seq, timestamp_ms=ts, payload=bytes(payload), flags=flags,
                 version=version)


@dataclass
class ReaderCounters:
    """What a :class:`FrameReader` has seen (frames are counted once each)."""

    frames_ok: int = 0
    crc_errors: int = 0
    malformed: int = 0
    oversize: int = 0
    errors: list[str] = field(default_factory=list)  # the last few messages, newest last


class FrameReader:
    """Split a byte stream into frames at 0x00, decode them, count the bad ones.

    Runs longer than ``MAX_ENCODED_FRAME`` are discarded up to the next delimiter
    (counted as oversize), so memory stays bounded whatever arrives.
    """

    _KEEP_ERRORS = 8

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.counters = ReaderCounters()

    def reset(self) -> None:
        """Forget any partial frame (e.g. after reopening the port)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        """Consume bytes; return the frames completed by them, in order."""
        out: list[Frame] = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(DELIMITER, start)
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                if len(self._buf) + len(chunk) > MAX_ENCODED_FRAME:
                    self._overflow = True
                    self._buf.clear()
                else:
                    self._buf += chunk
            if end < 0:
                break
            start = end + 1
            if self._overflow:
                self.counters.oversize += 1
                self._note(f"oversize frame dropped (> {MAX_ENCODED_FRAME} encoded bytes)")
                self._overflow = False
                continue
            if not self._buf:
                continue  # back-to-back delimiters: idle fill, not an error
            block = bytes(self._buf)
            self._buf.clear()
            try:
                out.append(decode_frame(block))
            except CrcError as exc:
                self.counters.crc_errors += 1
                self._note(str(exc))
            except FrameError as exc:
                self.counters.malformed += 1
                self._note(str(exc))
            else:
                self.counters.frames_ok += 1
        return out

    def _note(self, message: str) -> None:
        errors = self.counters.errors
        errors.append(message)
        if len(errors) > self._KEEP_ERRORS:
            del errors[0]
