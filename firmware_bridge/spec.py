"""The protocol table: every constant (with its unit), enum and message layout of the serial link.

This module is the single source of truth shared by the Python host and the C
firmware. ``python -m firmware_bridge.spec --write`` generates
``firmware/core/protocol_gen.h`` from it (constants, enums, packed little-endian
message layouts with pack/unpack helpers, and the schema hash); a test checks
that the committed header equals the generator's output, and both sides are
checked against the same test vectors (``firmware_bridge/protocol_vectors.json``).

Frame on the wire::

    COBS( header | payload | CRC-32 ) 0x00

- header (11 bytes, little-endian): version u8, msg_type u8, flags u8, seq u32,
  timestamp_ms u32. ``seq`` counts the sender's frames; ``timestamp_ms`` is the
  sender's monotonic clock in ms modulo 2**32 (host frames: the time the command
  was issued, so a retried control keeps its first timestamp).
- CRC-32/ISO-HDLC (the zlib CRC) over header and payload, little-endian.
- COBS removes every 0x00, so 0x00 only ever delimits frames and a receiver
  resynchronises at the next delimiter after garbage.

The schema hash is the CRC-32 of a canonical JSON rendering of this table, so
any change to a constant, an enum or a layout changes it; the firmware refuses
to arm when the host's hash differs from its own.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from firmware_bridge.checksum import crc32

HEADER_PATH = Path(__file__).resolve().parent / "firmware" / "core" / "protocol_gen.h"


@dataclass(frozen=True)
class Constant:
    """One named protocol constant: ``value`` in ``unit`` ("" for pure numbers)."""

    name: str
    value: int | float
    unit: str
    doc: str


# Sizes first: the rest of the table refers to them.
HEADER_FORMAT = "<BBBII"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
CRC_SIZE = 4
MAX_PAYLOAD = 96
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
# COBS adds one byte per started block of 254 bytes.
MAX_ENCODED_FRAME = MAX_FRAME + 1 + MAX_FRAME // 254

CONSTANTS: tuple[Constant, ...] = (
    Constant("PROTOCOL_VERSION", 1, "", "wire format version carried in every header"),
    Constant("BAUD_RATE", 115200, "baud", "UART speed of the real board (a pseudo-terminal ignores it)"),
    Constant("HEADER_SIZE", HEADER_SIZE, "bytes", "frame header before the payload"),
    Constant("CRC_SIZE", CRC_SIZE, "bytes", "CRC-32 trailer after the payload"),
    Constant("MAX_PAYLOAD", MAX_PAYLOAD, "bytes", "largest payload of any message"),
    Constant("MAX_FRAME", MAX_FRAME, "bytes", "largest decoded frame (header + payload + CRC)"),
    Constant("MAX_ENCODED_FRAME", MAX_ENCODED_FRAME, "bytes",
             "largest COBS-encoded frame without its 0x00 delimiter; longer runs are dropped as oversize"),
    Constant("BUILD_ID_SIZE", 24, "bytes", "firmware build id field, NUL padded"),
    # Timing of the safety model.
    Constant("SETPOINT_PERIOD_MS", 50, "ms", "host setpoint stream period (20 Hz); setpoints are never retransmitted"),
    Constant("WATCHDOG_TIMEOUT_MS", 250, "ms", "armed with no valid setpoint for this long -> failsafe latched"),
    Constant("STOP_RAMP_MS", 80, "ms", "firmware ramps from full wheel speed to zero in this time (limit: 100 ms)"),
    Constant("TTL_DEFAULT_MS", 200, "ms", "default time-to-live of a setpoint"),
    Constant("TTL_MAX_MS", 1000, "ms", "longest time-to-live the firmware accepts"),
    Constant("CLOCK_DRIFT_MAX_PPM", 5000, "ppm",
             "largest MCU-vs-host clock drift the offset estimator allows for (0.5 %: ceramic resonators)"),
    Constant("CLOCK_STEP_MAX_MS", 50, "ms",
             "one setpoint may lower the clock-offset estimate by at most this; one further ahead is rejected AHEAD"),
    Constant("SEQ_AHEAD_MAX", 1000, "frames",
             "a setpoint more than this many sequence numbers past the last accepted one is rejected AHEAD"),
    Constant("CONTROL_ID_WINDOW", 16, "ids", "control ids the firmware remembers to re-ack duplicates"),
    Constant("CONTROL_ACK_TIMEOUT_MS", 100, "ms", "host waits this long for an ack before retrying a control"),
    Constant("CONTROL_ATTEMPTS", 5, "attempts", "sends of one control (same id) before it is reported failed"),
    Constant("TELEMETRY_PERIOD_MS", 50, "ms", "default telemetry period (20 Hz)"),
    Constant("TELEMETRY_PERIOD_MIN_MS", 20, "ms",
             "fastest configurable telemetry period (50 Hz: 45 % of a 115200-baud UART)"),
    Constant("TELEMETRY_PERIOD_MAX_MS", 1000, "ms", "slowest configurable telemetry period (1 Hz)"),
    Constant("HANDSHAKE_RETRY_MS", 200, "ms", "host resends HELLO this often until HELLO_ACK arrives"),
    Constant("HANDSHAKE_TIMEOUT_MS", 2000, "ms", "host gives up on one connection attempt after this"),
    Constant("LINK_SILENCE_TIMEOUT_MS", 1000, "ms", "host drops and reopens a port that sent no valid frame this long"),
    Constant("RECONNECT_BACKOFF_MIN_MS", 500, "ms", "first wait after a failed connection attempt"),
    Constant("RECONNECT_BACKOFF_MAX_MS", 5000, "ms", "longest wait between connection attempts"),
    Constant("PORT_POLL_MS", 50, "ms", "host checks this often whether an absent port path has come back"),
    # Motion limits and the robot (differential drive).
    Constant("MAX_LINEAR_M_S", 0.5, "m/s", "hard clamp on forward/backward speed (host and firmware)"),
    Constant("MAX_ANGULAR_RAD_S", 3.0, "rad/s", "hard clamp on turn rate (host and firmware)"),
    Constant("MAX_WHEEL_M_S", 0.6, "m/s", "wheel surface speed at full motor duty"),
    Constant("ACCEL_LIMIT_M_S2", 1.5, "m/s^2", "wheel acceleration limit while driving"),
    Constant("WHEEL_BASE_M", 0.16, "m", "distance between the wheel contact points"),
    Constant("ENCODER_TICKS_PER_M", 7000, "ticks/m", "quadrature counts per metre of wheel travel"),
)
CONST: dict[str, int | float] = {c.name: c.value for c in CONSTANTS}


class MsgType(IntEnum):
    """Message type byte in the header. Host to MCU below 0x80, MCU to host from 0x80."""

    HELLO = 0x01
    SETPOINT = 0x02
    CONTROL = 0x03
    HELLO_ACK = 0x81
    ACK = 0x82
    SETPOINT_ECHO = 0x83
    TELEMETRY = 0x84


class HeaderFlag(IntEnum):
    """Bits of the header's flags byte."""

    ECHO_REQUEST = 0x01  # setpoint: answer with SETPOINT_ECHO (round-trip measurement)


class Op(IntEnum):
    """Control operations (acknowledged, retried with the same id, executed at most once)."""

    ARM = 1
    DISARM = 2
    ESTOP = 3
    CLEAR_FAILSAFE = 4
    GRIPPER_OPEN = 5
    GRIPPER_CLOSE = 6
    CONFIG = 7


class Result(IntEnum):
    """Outcome of a control as reported in its ACK."""

    OK = 0
    REFUSED_NO_SESSION = 1  # no handshake yet on this connection
    REFUSED_SCHEMA = 2  # the host's schema hash differs from the firmware's
    REFUSED_ESTOP = 3  # e-stop latched: clear it first
    BAD_ARGS = 4
    UNKNOWN_OP = 5
    EXPIRED = 6  # older than its TTL when it arrived: not executed


class State(IntEnum):
    """Firmware arming state."""

    DISARMED = 0
    ARMED = 1
    FAILSAFE = 2  # latched; ARM (after a handshake) or CLEAR_FAILSAFE leaves it
    ESTOP = 3  # latched; only CLEAR_FAILSAFE leaves it


class Reason(IntEnum):
    """Why the firmware is in FAILSAFE or ESTOP."""

    NONE = 0
    WATCHDOG = 1
    ESTOP = 2


class Gripper(IntEnum):
    """Gripper position as the firmware knows it."""

    UNKNOWN = 0
    OPEN = 1
    CLOSED = 2
    MOVING = 3


class EchoResult(IntEnum):
    """What the firmware did with a setpoint that asked for an echo."""

    APPLIED = 0
    IGNORED_DISARMED = 1
    STALE = 2
    OUT_OF_ORDER = 3
    DUPLICATE = 4
    INVALID = 5
    NO_SESSION = 6
    AHEAD = 7  # its host time or sequence number is implausibly far ahead (CLOCK_STEP_MAX_MS, SEQ_AHEAD_MAX)


class Capability(IntEnum):
    """Capability bits announced in HELLO_ACK."""

    GRIPPER = 0x01
    ODOMETRY = 0x02
    BATTERY = 0x04
    SIMULATOR = 0x08


class LinkFlag(IntEnum):
    """Bits of the telemetry's link_flags byte."""

    SESSION = 0x01  # a handshake happened on this connection
    SCHEMA_OK = 0x02  # and the host's schema hash matched


ENUMS: tuple[type[IntEnum], ...] = (MsgType, HeaderFlag, Op, Result, State, Reason, Gripper, EchoResult,
                                    Capability, LinkFlag)


@dataclass(frozen=True)
class Field:
    """One message field: struct code (``B H I i f`` or ``<n>s``) and unit."""

    name: str
    code: str
    unit: str = ""


@dataclass(frozen=True)
class MessageSpec:
    """Layout of one message's payload."""

    name: str
    msg_type: MsgType
    fields: tuple[Field, ...]
    doc: str

    @property
    def struct_format(self) -> str:
        """``struct`` format of the payload (little-endian, packed)."""
        return "<" + "".join(f.code for f in self.fields)

    @property
    def size(self) -> int:
        """Payload size in bytes."""
        return struct.calcsize(self.struct_format)


HEADER_FIELDS = (
    Field("version", "B"),
    Field("msg_type", "B"),
    Field("flags", "B"),
    Field("seq", "I", "frames"),
    Field("timestamp_ms", "I", "ms"),
)

_COUNTERS = ("frames_ok", "crc_errors", "malformed", "oversize", "stale_dropped", "out_of_order",
             "duplicates", "seq_gaps", "watchdog_trips", "setpoints_applied", "rejected")

MESSAGES: tuple[MessageSpec, ...] = (
    MessageSpec("hello", MsgType.HELLO, (
        Field("schema_hash", "I"),
        Field("session_nonce", "I"),
    ), "host -> MCU on connect; a new nonce (new host session) clears the MCU's duplicate-id memory"),
    MessageSpec("setpoint", MsgType.SETPOINT, (
        Field("linear_m_s", "f", "m/s"),
        Field("angular_rad_s", "f", "rad/s"),
        Field("ttl_ms", "H", "ms"),
    ), "host -> MCU at 20 Hz, never retransmitted; dropped when stale, out of order or duplicated"),
    MessageSpec("control", MsgType.CONTROL, (
        Field("control_id", "I"),
        Field("op", "B"),
        Field("ttl_ms", "H", "ms"),
        Field("arg0", "f"),
        Field("arg1", "f"),
        Field("arg2", "H"),
    ), "host -> MCU, acknowledged; CONFIG: arg0 max linear m/s, arg1 max angular rad/s, arg2 telemetry ms"),
    MessageSpec("hello_ack", MsgType.HELLO_ACK, (
        Field("echo_seq", "I", "frames"),
        Field("schema_hash", "I"),
        Field("capabilities", "I"),
        Field("schema_ok", "B"),
        Field("state", "B"),
        Field("build_id", f"{CONST['BUILD_ID_SIZE']}s"),
        Field("max_linear_m_s", "f", "m/s"),
        Field("max_angular_rad_s", "f", "rad/s"),
    ), "MCU -> host answer to HELLO: firmware identity, schema hash and capabilities"),
    MessageSpec("ack", MsgType.ACK, (
        Field("control_id", "I"),
        Field("op", "B"),
        Field("result", "B"),
        Field("duplicate", "B"),
        Field("state", "B"),
    ), "MCU -> host: a control's outcome; duplicate=1 when re-acked without executing"),
    MessageSpec("setpoint_echo", MsgType.SETPOINT_ECHO, (
        Field("echo_seq", "I", "frames"),
        Field("result", "B"),
        Field("age_ms", "H", "ms"),
    ), "MCU -> host answer to a setpoint with the ECHO_REQUEST flag"),
    MessageSpec("telemetry", MsgType.TELEMETRY, (
        Field("x_m", "f", "m"),
        Field("y_m", "f", "m"),
        Field("theta_rad", "f", "rad"),
        Field("wheel_left_m_s", "f", "m/s"),
        Field("wheel_right_m_s", "f", "m/s"),
        Field("motor_left_m_s", "f", "m/s"),
        Field("motor_right_m_s", "f", "m/s"),
        Field("battery_mv", "H", "mV"),
        Field("state", "B"),
        Field("reason", "B"),
        Field("gripper", "B"),
        Field("link_flags", "B"),
        Field("last_setpoint_seq", "I", "frames"),
        Field("controls_executed", "I", "controls"),
        *(Field(name, "I", "count") for name in _COUNTERS),
    ), "MCU -> host every telemetry period: odometry pose, wheels, battery, state, link counters"),
)
MESSAGE_BY_TYPE: dict[int, MessageSpec] = {m.msg_type: m for m in MESSAGES}
MESSAGE_BY_NAME: dict[str, MessageSpec] = {m.name: m for m in MESSAGES}
COUNTER_NAMES = _COUNTERS


def canonical_table() -> dict:
    """The table as plain JSON-able data (what the schema hash covers)."""
    return {
        "header": [[f.name, f.code, f.unit] for f in HEADER_FIELDS],
        "crc": "CRC-32/ISO-HDLC",
        "framing": "COBS",
        "constants": [[c.name, c.value, c.unit] for c in CONSTANTS],
        "enums": {e.__name__: [[m.name, int(m.value)] for m in e] for e in ENUMS},
        "messages": [[m.name, int(m.msg_type), [[f.name, f.code, f.unit] for f in m.fields]] for m in MESSAGES],
    }


def schema_hash() -> int:
    """CRC-32 of the canonical JSON of the table: equal on host and firmware iff the tables agree."""
    text = json.dumps(canonical_table(), sort_keys=True, separators=(",", ":"))
    return crc32(text.encode("utf-8"))


SCHEMA_HASH = schema_hash()

# ---------------------------------------------------------------- C header generation

_C_TYPES = {"B": "uint8_t", "H": "uint16_t", "I": "uint32_t", "i": "int32_t", "f": "float"}
_C_PUT = {"B": "vx_put_u8", "H": "vx_put_u16", "I": "vx_put_u32", "i": "vx_put_i32", "f": "vx_put_f32"}
_C_GET = {"B": "vx_get_u8", "H": "vx_get_u16", "I": "vx_get_u32", "i": "vx_get_i32", "f": "vx_get_f32"}


def _c_value(value: float) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"constant {value!r} is not finite")
        return f"{value!r}f"
    return f"{value}u" if value >= 0 else str(value)


def _camel_to_upper(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


def _field_c(f: Field, offset: int, struct_name: str) -> tuple[str, str, str]:
    """Declaration, pack line and unpack line of one field at ``offset``."""
    if f.code.endswith("s"):
        n = int(f.code[:-1])
        return (f"    char {f.name}[{n}];",
                f"    memcpy(b + {offset}, m->{f.name}, {n});",
                f"    memcpy(m->{f.name}, b + {offset}, {n});")
    return (f"    {_C_TYPES[f.code]} {f.name};",
            f"    {_C_PUT[f.code]}(b + {offset}, m->{f.name});",
            f"    m->{f.name} = {_C_GET[f.code]}(b + {offset});")


def _offsets(fields: tuple[Field, ...]) -> list[int]:
    out, pos = [], 0
    for f in fields:
        out.append(pos)
        pos += struct.calcsize("<" + f.code)
    return out


def generate_c_header() -> str:
    """Render ``protocol_gen.h`` (C99) from the table."""
    lines = [
        "/* protocol_gen.h: GENERATED from firmware_bridge/spec.py by",
        " *     python -m firmware_bridge.spec --write",
        " * Do not edit by hand; a test checks this file against the generator. */",
        "#ifndef VX_PROTOCOL_GEN_H",
        "#define VX_PROTOCOL_GEN_H",
        "",
        "#include <stdint.h>",
        "#include <string.h>",
        "",
        "/* The pack/unpack helpers copy floats bit for bit: IEEE-754 binary32 is assumed. */",
        "typedef char vx_float_is_32_bits[(sizeof(float) == 4) ? 1 : -1];",
        "",
        f"#define VX_SCHEMA_HASH 0x{SCHEMA_HASH:08X}u",
        "",
        "/* ---- constants (unit: meaning) */",
    ]
    for c in CONSTANTS:
        unit = c.unit or "-"
        lines.append(f"#define VX_{c.name} {_c_value(c.value)} /* {unit}: {c.doc} */")
    lines += ["", "/* ---- enums */"]
    for e in ENUMS:
        prefix = "VX_" + _camel_to_upper(e.__name__)
        for m in e:
            lines.append(f"#define {prefix}_{m.name} {int(m.value)}u")
        lines.append("")
    lines += [
        "/* ---- little-endian field access (portable: no struct packing, no alignment needs) */",
        "static inline void vx_put_u8(uint8_t *b, uint8_t v) { b[0] = v; }",
        "static inline void vx_put_u16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); }",
        "static inline void vx_put_u32(uint8_t *b, uint32_t v) {",
        "    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);",
        "}",
        "static inline void vx_put_i32(uint8_t *b, int32_t v) { vx_put_u32(b, (uint32_t)v); }",
        "static inline void vx_put_f32(uint8_t *b, float v) { uint32_t u; memcpy(&u, &v, 4); vx_put_u32(b, u); }",
        "static inline uint8_t vx_get_u8(const uint8_t *b) { return b[0]; }",
        "static inline uint16_t vx_get_u16(const uint8_t *b) { return (uint16_t)(b[0] | ((uint16_t)b[1] << 8)); }",
        "static inline uint32_t vx_get_u32(const uint8_t *b) {",
        "    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);",
        "}",
        "static inline int32_t vx_get_i32(const uint8_t *b) { return (int32_t)vx_get_u32(b); }",
        "static inline float vx_get_f32(const uint8_t *b) {",
        "    uint32_t u = vx_get_u32(b); float v; memcpy(&v, &u, 4); return v;",
        "}",
        "",
        "/* ---- frame header */",
    ]
    lines += _struct_block("header", HEADER_FIELDS, HEADER_SIZE)
    lines += ["", "/* ---- messages (payload layouts) */"]
    for m in MESSAGES:
        lines.append(f"/* {m.name} (type 0x{int(m.msg_type):02X}): {m.doc} */")
        lines += _struct_block(m.name, m.fields, m.size)
        lines.append("")
    lines += ["/* Payload size of a message type, or -1 for an unknown type. */",
              "static inline int vx_payload_size(uint8_t msg_type) {",
              "    switch (msg_type) {"]
    for m in MESSAGES:
        lines.append(f"    case {int(m.msg_type)}u: return (int)VX_{m.name.upper()}_SIZE;")
    lines += ["    default: return -1;", "    }", "}", ""]
    lines += ["#endif /* VX_PROTOCOL_GEN_H */", ""]
    return "\n".join(lines)


def _struct_block(name: str, fields: tuple[Field, ...], size: int) -> list[str]:
    decls, packs, unpacks = [], [], []
    for f, off in zip(fields, _offsets(fields)):
        d, p, u = _field_c(f, off, name)
        unit = f" /* {f.unit} */" if f.unit else ""
        decls.append(d + unit)
        packs.append(p)
        unpacks.append(u)
    upper = name.upper()
    return [
        f"#define VX_{upper}_SIZE {size}u",
        "typedef struct {",
        *decls,
        f"}} vx_{name}_t;",
        f"static inline void vx_pack_{name}(const vx_{name}_t *m, uint8_t *b) {{",
        *packs,
        "}",
        f"static inline void vx_unpack_{name}(const uint8_t *b, vx_{name}_t *m) {{",
        *unpacks,
        "}",
    ]


def generate_c_printer() -> str:
    """Render a debug header with ``vx_print_payload(type, payload, FILE*)`` for the test harness.

    It prints every field as ``name=value`` (floats with 9 significant digits, which
    round-trip binary32; strings as hex), so the tests compare the C view of a
    payload field by field with the Python view. Not used by the firmware itself.
    """
    lines = [
        "/* vx_print_gen.h: GENERATED from firmware_bridge/spec.py at build time for the test harness. */",
        "#ifndef VX_PRINT_GEN_H",
        "#define VX_PRINT_GEN_H",
        "#include <stdio.h>",
        '#include "protocol_gen.h"',
        "static inline void vx_print_hex(FILE *out, const char *s, size_t n) {",
        "    size_t i;",
        '    for (i = 0; i < n; ++i) fprintf(out, "%02x", (unsigned)(unsigned char)s[i]);',
        "}",
        "static inline int vx_print_payload(uint8_t msg_type, const uint8_t *b, FILE *out) {",
        "    switch (msg_type) {",
    ]
    for m in MESSAGES:
        lines.append(f"    case {int(m.msg_type)}u: {{")
        lines.append(f"        vx_{m.name}_t m;")
        lines.append(f"        vx_unpack_{m.name}(b, &m);")
        lines.append(f'        fprintf(out, "{m.name}");')
        for f in m.fields:
            if f.code.endswith("s"):
                lines.append(f'        fprintf(out, " {f.name}="); vx_print_hex(out, m.{f.name}, sizeof m.{f.name});')
            elif f.code == "f":
                lines.append(f'        fprintf(out, " {f.name}=%.9g", (double)m.{f.name});')
            else:
                lines.append(f'        fprintf(out, " {f.name}=%lu", (unsigned long)m.{f.name});')
        lines.append("        return 0;")
        lines.append("    }")
    lines += ["    default: return -1;", "    }", "}", "#endif", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the generated header, or write it with ``--write``; ``--check`` exits 1 if stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {HEADER_PATH}")
    group.add_argument("--check", action="store_true", help="exit 1 if the committed header is stale")
    group.add_argument("--printer", metavar="PATH", help="write the test harness's field printer to PATH")
    args = parser.parse_args(argv)
    text = generate_c_header()
    if args.printer:
        Path(args.printer).write_text(generate_c_printer(), encoding="utf-8")
    elif args.write:
        HEADER_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {HEADER_PATH} (schema hash 0x{SCHEMA_HASH:08X})")
    elif args.check:
        current = HEADER_PATH.read_text(encoding="utf-8") if HEADER_PATH.exists() else ""
        if current != text:
            print(f"{HEADER_PATH} is stale: run python -m firmware_bridge.spec --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
