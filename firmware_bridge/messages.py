"""Typed protocol messages and their payload packing (layouts from ``firmware_bridge.spec``).

Each message is a frozen dataclass whose fields are, in order, the fields of
its ``MessageSpec``; a test checks the correspondence. Integer enums travel as
plain ints here (the firmware may be newer than the host); the link turns them
into ``spec`` enums for users.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import ClassVar

from firmware_bridge.errors import FrameError
from firmware_bridge.spec import MESSAGE_BY_NAME, MessageSpec


@dataclass(frozen=True)
class Hello:
    """Host -> MCU on connect."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["hello"]
    schema_hash: int
    session_nonce: int


@dataclass(frozen=True)
class Setpoint:
    """Host -> MCU motion setpoint (streamed, never retransmitted)."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["setpoint"]
    linear_m_s: float
    angular_rad_s: float
    ttl_ms: int


@dataclass(frozen=True)
class Control:
    """Host -> MCU acknowledged control (retried with the same ``control_id``)."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["control"]
    control_id: int
    op: int
    ttl_ms: int
    arg0: float = 0.0
    arg1: float = 0.0
    arg2: int = 0


@dataclass(frozen=True)
class HelloAck:
    """MCU -> host answer to HELLO."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["hello_ack"]
    echo_seq: int
    schema_hash: int
    capabilities: int
    schema_ok: int
    state: int
    build_id: str
    max_linear_m_s: float
    max_angular_rad_s: float


@dataclass(frozen=True)
class Ack:
    """MCU -> host outcome of a control."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["ack"]
    control_id: int
    op: int
    result: int
    duplicate: int
    state: int


@dataclass(frozen=True)
class SetpointEcho:
    """MCU -> host answer to a setpoint that carried ECHO_REQUEST."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["setpoint_echo"]
    echo_seq: int
    result: int
    age_ms: int


@dataclass(frozen=True)
class TelemetryMsg:
    """MCU -> host periodic telemetry (wire form; the link wraps it in ``link.Telemetry``)."""

    SPEC: ClassVar[MessageSpec] = MESSAGE_BY_NAME["telemetry"]
    x_m: float
    y_m: float
    theta_rad: float
    wheel_left_m_s: float
    wheel_right_m_s: float
    motor_left_m_s: float
    motor_right_m_s: float
    battery_mv: int
    state: int
    reason: int
    gripper: int
    link_flags: int
    last_setpoint_seq: int
    controls_executed: int
    frames_ok: int
    crc_errors: int
    malformed: int
    oversize: int
    stale_dropped: int
    out_of_order: int
    duplicates: int
    seq_gaps: int
    watchdog_trips: int
    setpoints_applied: int
    rejected: int


Message = Hello | Setpoint | Control | HelloAck | Ack | SetpointEcho | TelemetryMsg
MESSAGE_CLASSES: tuple[type, ...] = (Hello, Setpoint, Control, HelloAck, Ack, SetpointEcho, TelemetryMsg)
CLASS_BY_TYPE: dict[int, type] = {cls.SPEC.msg_type: cls for cls in MESSAGE_CLASSES}


def _wire_value(code: str, value):
    if code.endswith("s"):
        raw = value.encode("ascii", errors="replace") if isinstance(value, str) else bytes(value)
        size = int(code[:-1])
        if len(raw) > size:
            raise FrameError(f"string {value!r} is longer than its {size}-byte field")
        return raw
    if code == "f":
        return float(value)
    return int(value)


def pack(msg: Message) -> bytes:
    """Pack a message's payload (little-endian, layout from the spec).

    Raises:
        FrameError: a value does not fit its field (e.g. a negative unsigned int).
    """
    spec = msg.SPEC
    values = [_wire_value(f.code, getattr(msg, f.name)) for f in spec.fields]
    try:
        return struct.pack(spec.struct_format, *values)
    except struct.error as exc:
        raise FrameError(f"cannot pack {msg!r}: {exc}") from exc


def unpack(msg_type: int, payload: bytes) -> Message:
    """Unpack a payload of the given message type into its dataclass.

    Raises:
        FrameError: unknown type or wrong payload size.
    """
    cls = CLASS_BY_TYPE.get(msg_type)
    if cls is None:
        raise FrameError(f"unknown message type 0x{msg_type:02X}")
    spec: MessageSpec = cls.SPEC
    if len(payload) != spec.size:
        raise FrameError(f"{spec.name} payload of {len(payload)} bytes, expected {spec.size}")
    values = list(struct.unpack(spec.struct_format, payload))
    for i, f in enumerate(spec.fields):
        if f.code.endswith("s"):
            values[i] = values[i].rstrip(b"\x00").decode("ascii", errors="replace")
    return cls(*values)



def field_names(cls: type) -> tuple[str, ...]:
    """Dataclass field names of a message class, in order (for the spec correspondence test)."""
    return tuple(f.name for f in dataclasses.fields(cls))
