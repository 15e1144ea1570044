"""The values the link hands to its callers, and the counters its statistics are taken from.

Everything a caller gets back from ``Link`` is immutable: a telemetry report
(``Telemetry``, with the MCU's ``McuCounters``), what the firmware announced at
the handshake (``HandshakeInfo``), the outcome of a control (``ControlResult``,
the value of the future ``arm()`` etc. return) and the link statistics
(``LinkStats``). ``LinkCounters`` is the mutable tally behind ``LinkStats``,
updated by the link under its lock; ``Link.stats`` takes a snapshot of it.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from firmware_bridge.errors import ControlFailedError, ControlRefusedError
from firmware_bridge.spec import COUNTER_NAMES, Capability, Gripper, LinkFlag, Op, Reason, Result, State

if TYPE_CHECKING:
    from firmware_bridge.codec import ReaderCounters
    from firmware_bridge.messages import TelemetryMsg

RTT_SAMPLES = 256  # round-trip times kept for the percentiles
# upper bounds of the round-trip-time histogram (seconds): a healthy USB serial link answers in 1-5 ms
RTT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Outcome(str, Enum):
    """What became of a control."""

    DELIVERED = "delivered"  # the MCU acknowledged it with Result.OK
    REFUSED = "refused"  # the MCU acknowledged it with a refusal (see ControlResult.result)
    FAILED = "failed"  # no acknowledgement: not delivered, or delivered and the ack lost


@dataclass(frozen=True)
class ControlResult:
    """Outcome of one control message (the value of the future returned by ``arm()`` etc.)."""

    op: Op
    control_id: int
    outcome: Outcome
    result: Result | None  # the MCU's result code, None when it never answered
    attempts: int  # frames sent with this id
    detail: str  # human explanation, says what to do when it did not work
    rtt_s: float | None = None  # send of the acknowledged attempt -> ack

    @property
    def delivered(self) -> bool:
        """True when the MCU answered (whether it executed or refused the control)."""
        return self.outcome is not Outcome.FAILED

    @property
    def ok(self) -> bool:
        """True when the MCU executed the control."""
        return self.outcome is Outcome.DELIVERED

    def raise_for_status(self) -> ControlResult:
        """Return self when the control was executed; otherwise raise.

        Raises:
            ControlRefusedError: the MCU refused it (e.g. arming on a schema mismatch).
            ControlFailedError: no acknowledgement after all retries, or the link dropped.
        """
        if self.outcome is Outcome.REFUSED:
            raise ControlRefusedError(self.detail)
        if self.outcome is Outcome.FAILED:
            raise ControlFailedError(self.detail)
        return self


@dataclass(frozen=True)
class McuCounters:
    """Link counters kept by the MCU (cumulative since it booted)."""

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
    controls_executed: int


@dataclass(frozen=True)
class Telemetry:
    """One telemetry report from the MCU, as received (immutable)."""

    x_m: float
    y_m: float
    theta_rad: float
    wheel_left_m_s: float  # measured (encoders)
    wheel_right_m_s: float
    motor_left_m_s: float  # commanded by the firmware after clamps and ramps
    motor_right_m_s: float
    battery_v: float
    state: State
    reason: Reason
    gripper: Gripper
    session: bool  # the MCU has a handshake on this connection
    schema_ok: bool
    last_setpoint_seq: int  # header seq of the last setpoint the MCU applied
    counters: McuCounters
    mcu_time_ms: int
    seq: int
    received_at: float  # host time.monotonic() when it arrived

    @classmethod
    def from_message(cls, msg: TelemetryMsg, *, mcu_time_ms: int, seq: int, received_at: float) -> Telemetry:
        """The snapshot of a decoded TELEMETRY message (``mcu_time_ms`` and ``seq`` from its frame header).

        Raises:
            ValueError: an enum value this host does not know (a newer firmware's).
        """
        state, reason, gripper = State(msg.state), Reason(msg.reason), Gripper(msg.gripper)
        counters = McuCounters(**{name: getattr(msg, name) for name in (*COUNTER_NAMES, "controls_executed")})
        return cls(x_m=msg.x_m, y_m=msg.y_m, theta_rad=msg.theta_rad, wheel_left_m_s=msg.wheel_left_m_s,
                   wheel_right_m_s=msg.wheel_right_m_s, motor_left_m_s=msg.motor_left_m_s,
                   motor_right_m_s=msg.motor_right_m_s, battery_v=msg.battery_mv / 1000.0, state=state,
                   reason=reason, gripper=gripper, session=bool(msg.link_flags & LinkFlag.SESSION),
                   schema_ok=bool(msg.link_flags & LinkFlag.SCHEMA_OK), last_setpoint_seq=msg.last_setpoint_seq,
                   counters=counters, mcu_time_ms=mcu_time_ms, seq=seq, received_at=received_at)

    @property
    def age_s(self) -> float:
        """Seconds since this report arrived."""
        return time.monotonic() - self.received_at

    @property
    def armed(self) -> bool:
        """True when the firmware is armed."""
        return self.state is State.ARMED

    @property
    def motors_stopped(self) -> bool:
        """True when the firmware commands zero speed on both wheels."""
        return self.motor_left_m_s == 0.0 and self.motor_right_m_s == 0.0


@dataclass(frozen=True)
class HandshakeInfo:
    """What the firmware announced when the current connection was set up."""

    build_id: str
    schema_hash: int  # the firmware's
    host_schema_hash: int  # ours
    capabilities: frozenset[Capability]
    state: State  # at the handshake (never ARMED: a handshake disarms)
    max_linear_m_s: float
    max_angular_rad_s: float
    port: str  # the device the port path resolved to
    rtt_s: float  # first HELLO sent -> HELLO_ACK
    completed_at: float  # time.monotonic()

    @property
    def schema_match(self) -> bool:
        """True when host and firmware were built from the same protocol table (arming is allowed)."""
        return self.schema_hash == self.host_schema_hash


@dataclass(frozen=True)
class LinkStats:
    """Host-side link statistics (cumulative over the Link's life), plus the MCU's latest counters.

    ``as_dict()`` gives flat name -> number pairs, ready to be exported as metrics.
    """

    connected: bool
    connects: int  # successful handshakes (the first one included)
    reconnects: int  # successful handshakes after a lost connection or an MCU reset
    connect_failures: int
    link_losses: int
    lockouts: int  # handshakes redone because the MCU kept rejecting fresh setpoints or controls as stale
    frames_sent: int
    frames_received: int  # valid frames
    crc_errors: int  # received frames with a bad CRC
    malformed: int
    oversize: int
    seq_gaps: int  # MCU frames missing by sequence number
    stale_rx: int  # MCU frames duplicated or out of order (ignored)
    setpoints_sent: int
    setpoints_superseded: int  # replaced by a newer one before the I/O thread sent them
    setpoints_dropped: int  # offered while the link was down
    setpoints_clamped: int
    controls_sent: int  # first sends
    retries: int  # further sends of the same control id
    controls_delivered: int
    controls_refused: int
    controls_failed: int
    estops_sent: int
    rtt_last_s: float | None
    rtt_p50_s: float | None
    rtt_p99_s: float | None
    rtt_samples: int  # in the window the percentiles use (the last RTT_SAMPLES)
    rtt_count: int  # round trips measured since the Link was made
    rtt_sum_s: float  # of all rtt_count round trips: with the buckets, a Prometheus histogram
    rtt_buckets: tuple[int, ...]  # round trips at or under each RTT_BUCKETS_S bound (cumulative)
    mcu: McuCounters | None  # from the latest telemetry

    @property
    def watchdog_trips(self) -> int:
        """Failsafe trips reported by the MCU (0 before the first telemetry)."""
        return self.mcu.watchdog_trips if self.mcu else 0

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """Flat dict (MCU counters prefixed ``mcu_``), e.g. for Prometheus gauges/counters."""
        out = {k: v for k, v in asdict(self).items() if k != "mcu"}
        for name, value in (asdict(self.mcu).items() if self.mcu else ()):
            out[f"mcu_{name}"] = value
        out["watchdog_trips"] = self.watchdog_trips
        return out


@dataclass
class LinkCounters:
    """The link's running tally (mutable; the link updates it under its lock): what ``LinkStats`` reports."""

    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    link_losses: int = 0
    lockouts: int = 0
    frames_sent: int = 0
    seq_gaps: int = 0
    stale_rx: int = 0
    setpoints_sent: int = 0
    setpoints_superseded: int = 0
    setpoints_dropped: int = 0
    setpoints_clamped: int = 0
    controls_sent: int = 0
    retries: int = 0
    controls_delivered: int = 0
    controls_refused: int = 0
    controls_failed: int = 0
    estops_sent: int = 0
    rtt_count: int = 0
    rtts: deque = field(default_factory=lambda: deque(maxlen=RTT_SAMPLES))
    rtt_sum_s: float = 0.0
    rtt_in_bucket: list = field(default_factory=lambda: [0] * len(RTT_BUCKETS_S))  # per bucket, not cumulative

    def add_rtt(self, seconds: float) -> None:
        self.rtts.append(seconds)
        self.rtt_count += 1
        self.rtt_sum_s += seconds
        i = bisect.bisect_left(RTT_BUCKETS_S, seconds)
        if i < len(RTT_BUCKETS_S):
            self.rtt_in_bucket[i] += 1

    def snapshot(self, *, connected: bool, rx: ReaderCounters, mcu: McuCounters | None) -> LinkStats:
        """``LinkStats`` from these counters, the frame reader's (``rx``) and the MCU's latest ones."""
        rtts = sorted(self.rtts)
        return LinkStats(
            connected=connected, connects=self.connects, reconnects=self.reconnects,
            connect_failures=self.connect_failures, link_losses=self.link_losses, lockouts=self.lockouts,
            frames_sent=self.frames_sent,
            frames_received=rx.frames_ok, crc_errors=rx.crc_errors, malformed=rx.malformed,
            oversize=rx.oversize, seq_gaps=self.seq_gaps, stale_rx=self.stale_rx, setpoints_sent=self.setpoints_sent,
            setpoints_superseded=self.setpoints_superseded, setpoints_dropped=self.setpoints_dropped,
            setpoints_clamped=self.setpoints_clamped, controls_sent=self.controls_sent, retries=self.retries,
            controls_delivered=self.controls_delivered, controls_refused=self.controls_refused,
            controls_failed=self.controls_failed, estops_sent=self.estops_sent,
            rtt_last_s=self.rtts[-1] if self.rtts else None,
            rtt_p50_s=statistics.median(rtts) if rtts else None,
            rtt_p99_s=rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))] if rtts else None,
            rtt_samples=len(rtts), rtt_count=self.rtt_count, rtt_sum_s=self.rtt_sum_s,
            rtt_buckets=tuple(itertools.accumulate(self.rtt_in_bucket)), mcu=mcu)
