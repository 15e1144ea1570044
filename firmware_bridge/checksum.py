"""CRC-32 of the serial protocol (CRC-32/ISO-HDLC, the zlib/Ethernet CRC).

The ``crc`` package is used rather than a hand-rolled table: it is a small,
maintained library whose catalogue of named CRC configurations makes the choice
explicit (``Crc32.CRC32``), and the tests cross-check it against ``zlib.crc32``
and against the firmware's C implementation. CRC-32 rather than CRC-16 because
corrupted frames must never be accepted: a random corruption slips through a
16-bit CRC once in 65 536 frames, a 32-bit CRC once in about 4.3e9.
"""

from __future__ import annotations

from crc import Calculator, Crc32

# Table-driven calculator; built once, read-only afterwards (safe to share between threads).
_CALCULATOR = Calculator(Crc32.CRC32, optimized=True)


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data`` (check value of b"123456789": 0xCBF43926)."""
    return _CALCULATOR.checksum(bytes(data))
