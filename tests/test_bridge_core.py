"""The real C firmware core on a virtual clock (the test harness): safety rules, staleness, de-duplication.

Time is exact here: the harness steps the core in 1 ms increments, so the
watchdog and ramp deadlines are asserted to the millisecond.
"""

from __future__ import annotations

import math
import random

import pytest

from firmware_bridge import messages as M
from firmware_bridge.spec import CONST, SCHEMA_HASH, EchoResult, Gripper, Op, Reason, Result, State
from tests.bridge_fixtures import Harness, control, hello, load_vectors, requires_gcc, setpoint

pytestmark = requires_gcc

T0 = 4_294_966_000  # host clock 1.3 s before its 32-bit wrap: every test crosses it
WATCHDOG = CONST["WATCHDOG_TIMEOUT_MS"]
MAX_WHEEL = CONST["MAX_WHEEL_M_S"]
HALF_BASE = CONST["WHEEL_BASE_M"] / 2


class Core:
    """A harness core plus a host clock kept in step with the virtual MCU clock (zero latency by default)."""

    def __init__(self, h: Harness, *, schema_hash: int = SCHEMA_HASH, clock_start_ms: int = 1000) -> None:
        self.h = h
        h.core_init(clock_start_ms=clock_start_ms)
        if schema_hash != SCHEMA_HASH:
            h.core_init(schema_hash=schema_hash, clock_start_ms=clock_start_ms)
        self.t = 0  # ms since start, both clocks
        self.seq = 100
        self.cid = 0
        self.telemetry_seen: list[M.TelemetryMsg] = []

    def drain(self) -> list:
        """Messages the core sent since the last call (telemetry is also kept for ``telemetry()``)."""
        msgs = [m for _, m in self.h.tx()]
        self.telemetry_seen += [m for m in msgs if isinstance(m, M.TelemetryMsg)]
        return msgs

    def ts(self, delay_ms: int = 0) -> int:
        return (T0 + self.t - delay_ms) & 0xFFFFFFFF

    def advance(self, ms: int) -> None:
        self.h.advance(ms)
        self.t += ms

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def hello(self, nonce: int = 7, schema_hash: int = SCHEMA_HASH) -> M.HelloAck:
        self.h.rx(hello(self.next_seq(), self.ts(), nonce, schema_hash))
        acks = [m for m in self.drain() if isinstance(m, M.HelloAck)]
        assert len(acks) == 1
        return acks[0]

    def control(self, op: int, *, cid: int | None = None, delay_ms: int = 0, ttl_ms: int = 500, args=(0.0, 0.0, 0)):
        """Send a control; return the list of ACKs it produced."""
        if cid is None:
            self.cid += 1
            cid = self.cid
        self.h.rx(control(self.next_seq(), self.ts(delay_ms), cid, op, ttl_ms, *args))
        return [m for m in self.drain() if isinstance(m, M.Ack)]

    def ok(self, op: int, **kw) -> M.Ack:
        acks = self.control(op, **kw)
        assert len(acks) == 1 and acks[0].result == Result.OK, acks
        return acks[0]

    def sp(self, v: float, w: float = 0.0, *, ttl_ms: int = 200, delay_ms: int = 0, seq: int | None = None,
           ts: int | None = None) -> M.SetpointEcho:
        """Send a setpoint with an echo request; return the echo."""
        s = self.next_seq() if seq is None else seq
        self.h.rx(setpoint(s, self.ts(delay_ms) if ts is None else ts, v, w, ttl_ms, echo=True))
        echoes = [m for m in self.drain() if isinstance(m, M.SetpointEcho)]
        assert len(echoes) == 1 and echoes[0].echo_seq == s
        return echoes[0]

    def drive(self, v: float, w: float, ms: int, *, ttl_ms: int = 200) -> None:
        """Stream setpoints every 50 ms for ``ms``."""
        for _ in range(ms // 50):
            assert self.sp(v, w, ttl_ms=ttl_ms).result == EchoResult.APPLIED
            self.advance(50)

    def status(self) -> dict[str, float]:
        return self.h.status()

    def telemetry(self) -> list[M.TelemetryMsg]:
        """Telemetry sent since the last call."""
        self.drain()
        out, self.telemetry_seen = self.telemetry_seen, []
        return out


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    rc, err = h.close()
    assert rc == 0, err


@pytest.fixture
def core(harness):
    c = Core(harness)
    c.hello()
    return c


def test_handshake_reports_identity_and_enables_telemetry_flags(harness):
    c = Core(harness)
    c.advance(60)
    before = c.telemetry()
    assert before and before[-1].link_flags == 0
    ack = c.hello(nonce=99)
    assert ack.schema_hash == SCHEMA_HASH and ack.schema_ok == 1 and ack.state == State.DISARMED
    assert ack.build_id == "harness" and ack.max_linear_m_s == CONST["MAX_LINEAR_M_S"]
    c.advance(60)
    assert c.telemetry()[-1].link_flags == 3


def test_arming_needs_a_handshake_with_a_matching_schema(harness):
    c = Core(harness)
    assert c.control(Op.ARM)[0].result == Result.REFUSED_NO_SESSION
    ack = c.hello(schema_hash=SCHEMA_HASH ^ 1)
    assert ack.schema_ok == 0
    assert c.control(Op.ARM)[0].result == Result.REFUSED_SCHEMA
    assert c.control(Op.GRIPPER_OPEN)[0].result == Result.REFUSED_SCHEMA
    assert c.sp(0.3).result == EchoResult.IGNORED_DISARMED
    c.advance(100)
    assert c.status()["cmd_l"] == 0.0
    # Stopping never needs a session or a matching schema.
    assert c.control(Op.ESTOP)[0].result == Result.OK
    assert c.status()["state"] == State.ESTOP
    c.hello()  # the right schema now; the e-stop stays latched across the handshake
    assert c.status()["state"] == State.ESTOP


def test_watchdog_ramps_full_speed_to_zero_within_100_ms_and_latches(core):
    core.ok(Op.ARM)
    # Full wheel speed on the right wheel: v + w * b/2 = 0.6 m/s. A long TTL, so only the watchdog stops it.
    w = (MAX_WHEEL - 0.5) / HALF_BASE
    core.drive(0.5, w, 600, ttl_ms=1000)
    core.sp(0.5, w, ttl_ms=1000)
    last_valid = core.t
    assert core.status()["cmd_r"] == pytest.approx(MAX_WHEEL, abs=1e-6)
    rows = core.h.trace(400)
    trip = next(t for t, _, _, state in rows if state == State.FAILSAFE)
    assert trip - last_valid == WATCHDOG + 1  # "no valid setpoint for 250 ms": first step after 250 ms
    zero = next(t for t, cl, cr, _ in rows if t >= trip and cl == cr == 0.0)
    assert zero - trip <= 100
    # Ramped, not cut: intermediate values on the way down, and the curvature (ratio) held.
    down = [(cl, cr) for t, cl, cr, _ in rows if trip <= t < zero]
    assert len(down) >= 50
    assert all(cl / cr == pytest.approx((0.5 - w * HALF_BASE) / MAX_WHEEL, rel=1e-4) for cl, cr in down if cr)
    s = core.status()
    assert s["state"] == State.FAILSAFE and s["reason"] == Reason.WATCHDOG and s["watchdog_trips"] == 1
    core.t += 400
    # Latched: fresh setpoints do not move the robot, whatever arrives.
    for _ in range(10):
        assert core.sp(0.3).result == EchoResult.IGNORED_DISARMED
        core.advance(50)
    assert core.status()["cmd_l"] == 0.0 and core.status()["state"] == State.FAILSAFE
    # Only an explicit ARM re-arms; then motion resumes with the next setpoint.
    core.ok(Op.ARM)
    core.drive(0.3, 0.0, 300)
    assert core.status()["cmd_l"] == pytest.approx(0.3)


def test_expired_ttl_stops_following_the_setpoint(core):
    core.ok(Op.ARM)
    core.drive(0.4, 0.0, 500, ttl_ms=100)
    core.sp(0.4, ttl_ms=100)
    rows = core.h.trace(240)
    core.t += 240
    start = next(t for t, cl, _, _ in rows if cl < 0.4) - (core.t - 240)
    assert 100 <= start <= 102  # the ramp starts when the TTL runs out
    zero = next(t for t, cl, _, _ in rows if cl == 0.0) - (core.t - 240)
    assert zero <= 100 + 100
    assert all(state == State.ARMED for *_, state in rows)  # within the watchdog time: no failsafe yet


def test_stale_setpoints_are_dropped(core):
    core.ok(Op.ARM)
    core.drive(0.2, 0.0, 500)
    core.sp(0.2)  # issued and received at t0
    core.advance(150)
    # Issued at t0 + 10 ms, held up 140 ms in a buffer: older than its 100 ms TTL.
    echo = core.sp(0.5, ttl_ms=100, delay_ms=140)
    assert echo.result == EchoResult.STALE and echo.age_ms == 140
    assert core.status()["stale_dropped"] == 1
    core.advance(30)
    assert core.status()["cmd_l"] == pytest.approx(0.2)  # still the t0 setpoint: the stale 0.5 m/s never applied
    # The same delay is fine for a longer TTL.
    assert core.sp(0.25, ttl_ms=400, delay_ms=140).result == EchoResult.APPLIED


def test_out_of_order_and_duplicated_setpoints_are_dropped(core):
    core.ok(Op.ARM)
    core.drive(0.1, 0.0, 200)
    seq = core.next_seq()
    assert core.sp(0.2, seq=seq).result == EchoResult.APPLIED
    assert core.sp(0.4, seq=seq).result == EchoResult.DUPLICATE
    assert core.sp(0.4, seq=seq - 1).result == EchoResult.OUT_OF_ORDER
    core.advance(20)
    # A newer sequence number with an older host timestamp is out of order too.
    assert core.sp(0.4, ts=core.ts(30)).result == EchoResult.OUT_OF_ORDER
    s = core.status()
    assert s["duplicates"] == 1 and s["out_of_order"] == 2
    core.advance(100)
    assert core.status()["cmd_l"] == pytest.approx(0.2)


def test_speed_and_turn_are_clamped_in_the_firmware(core):
    core.ok(Op.ARM)
    core.drive(5.0, 0.0, 600)
    s = core.status()
    assert s["cmd_l"] == s["cmd_r"] == pytest.approx(CONST["MAX_LINEAR_M_S"])
    core.drive(0.0, 50.0, 600)
    s = core.status()
    assert s["cmd_r"] == pytest.approx(CONST["MAX_ANGULAR_RAD_S"] * HALF_BASE)
    assert s["cmd_l"] == pytest.approx(-s["cmd_r"])
    # Both clamps at once exceed the wheel limit: both wheels scale down, the curvature stays.
    core.drive(0.5, 3.0, 600)
    s = core.status()
    assert s["cmd_r"] == pytest.approx(MAX_WHEEL)
    assert s["cmd_l"] / s["cmd_r"] == pytest.approx((0.5 - 3.0 * HALF_BASE) / (0.5 + 3.0 * HALF_BASE))
    # CONFIG lowers the clamp; out-of-range configs are refused.
    assert core.control(Op.CONFIG, args=(0.6, 1.0, 50))[0].result == Result.BAD_ARGS
    assert core.control(Op.CONFIG, args=(0.2, 1.0, 5))[0].result == Result.BAD_ARGS
    assert core.control(Op.CONFIG, args=(float("nan"), 1.0, 50))[0].result == Result.BAD_ARGS
    core.ok(Op.CONFIG, args=(0.2, 1.0, 50))
    core.drive(0.5, 0.0, 600)
    assert core.status()["cmd_l"] == pytest.approx(0.2)


@pytest.mark.parametrize("v, ttl", [(float("nan"), 200), (float("inf"), 200), (0.1, 0), (0.1, 1001)])
def test_invalid_setpoints_are_rejected(core, v, ttl):
    core.ok(Op.ARM)
    assert core.sp(v, ttl_ms=ttl).result == EchoResult.INVALID
    assert core.status()["rejected"] == 1


def test_estop_latches_and_zeroes_the_motors_at_once(core):
    core.ok(Op.ARM)
    core.drive(0.4, 0.0, 500)
    ack = core.ok(Op.ESTOP, ttl_ms=0)
    assert ack.state == State.ESTOP
    assert core.status()["cmd_l"] == 0.0 and core.status()["duty_l"] == 0.0  # no ramp
    core.advance(1)
    assert core.sp(0.4).result == EchoResult.IGNORED_DISARMED
    assert core.control(Op.ARM)[0].result == Result.REFUSED_ESTOP
    assert core.control(Op.GRIPPER_OPEN)[0].result == Result.REFUSED_ESTOP
    core.advance(500)
    s = core.status()
    assert s["state"] == State.ESTOP and s["reason"] == Reason.ESTOP and s["cmd_l"] == 0.0
    core.ok(Op.CLEAR_FAILSAFE)
    assert core.status()["state"] == State.DISARMED
    core.ok(Op.ARM)
    core.drive(0.2, 0.0, 300)
    assert core.status()["cmd_l"] == pytest.approx(0.2)


def test_a_retried_control_executes_once_and_is_reacked(core):
    first = core.control(Op.GRIPPER_OPEN, cid=50)
    assert first[0].duplicate == 0 and first[0].result == Result.OK
    core.advance(100)
    again = core.control(Op.GRIPPER_OPEN, cid=50)  # same id, same first timestamp
    assert again[0].duplicate == 1 and again[0].result == Result.OK and again[0].control_id == 50
    s = core.status()
    assert s["controls_executed"] == 1 and s["duplicates"] == 1 and s["gripper"] == Gripper.OPEN
    # A duplicate returns the original result even if the state changed since.
    assert core.control(Op.ARM, cid=51)[0].result == Result.OK
    core.ok(Op.ESTOP, cid=52)
    assert core.control(Op.ARM, cid=51)[0].result == Result.OK
    assert core.status()["state"] == State.ESTOP


def test_the_same_session_keeps_its_ids_across_a_reconnect_and_a_new_session_starts_over(core):
    core.ok(Op.GRIPPER_CLOSE, cid=5)
    core.hello(nonce=7)  # the same host session reconnects
    assert core.control(Op.GRIPPER_CLOSE, cid=5)[0].duplicate == 1
    core.hello(nonce=8)  # a new host process: its ids start again at 1
    assert core.control(Op.GRIPPER_CLOSE, cid=5)[0].duplicate == 0
    assert core.status()["controls_executed"] == 2


def test_control_ids_older_than_the_window_are_never_executed(core):
    for cid in range(1, 21):
        core.ok(Op.GRIPPER_OPEN if cid % 2 else Op.GRIPPER_CLOSE, cid=cid)
    executed = core.status()["controls_executed"]
    assert core.control(Op.ARM, cid=2) == []  # not in the window of 16 any more: dropped silently
    s = core.status()
    assert s["controls_executed"] == executed and s["state"] == State.DISARMED and s["duplicates"] == 1


def test_a_control_older_than_its_ttl_is_not_executed_but_stopping_always_is(core):
    ack = core.control(Op.ARM, delay_ms=600, ttl_ms=500)[0]
    assert ack.result == Result.EXPIRED and core.status()["state"] == State.DISARMED
    core.ok(Op.ARM)
    core.ok(Op.DISARM, delay_ms=5000, ttl_ms=0)
    core.ok(Op.ESTOP, delay_ms=5000, ttl_ms=0)
    assert core.status()["state"] == State.ESTOP


def test_a_handshake_disarms_and_keeps_a_latched_failsafe(core):
    core.ok(Op.ARM)
    core.drive(0.2, 0.0, 200)
    ack = core.hello()
    assert ack.state == State.DISARMED
    core.ok(Op.ARM)
    core.advance(300)  # no setpoints -> watchdog
    assert core.status()["state"] == State.FAILSAFE
    assert core.hello().state == State.FAILSAFE
    core.advance(300)
    assert core.status()["state"] == State.FAILSAFE


def test_a_late_hello_of_the_current_session_is_ignored(core):
    core.ok(Op.ARM)
    core.drive(0.2, 0.0, 200)
    old_seq = core.seq - 50
    core.h.rx(hello(old_seq, core.ts(300), 7))
    assert [m for m in core.drain() if isinstance(m, M.HelloAck)] == []
    assert core.status()["state"] == State.ARMED


def test_watchdog_only_runs_while_armed_and_starts_at_arm(core):
    core.advance(1000)
    assert core.status()["state"] == State.DISARMED
    core.ok(Op.ARM)
    core.advance(WATCHDOG)
    assert core.status()["state"] == State.ARMED
    core.advance(1)
    assert core.status()["state"] == State.FAILSAFE


def test_setpoint_ages_are_delays_beyond_the_fastest_frame(core):
    rng = random.Random(3)
    core.ok(Op.ARM)
    base = core.t
    last_exact = base  # the last frame without delay pins the envelope to the true offset
    for k in range(1, 200):
        d = 0 if k % 25 == 0 else rng.randint(0, 40)
        target = base + 50 * k + d
        core.h.advance(target - core.t)
        core.t = target
        echo = core.sp(0.1, ts=(T0 + base + 50 * k) & 0xFFFFFFFF, ttl_ms=1000)
        assert echo.result == EchoResult.APPLIED
        # Never over-estimated; under-estimated by at most the drift allowance (5000 ppm) banked since the
        # last undelayed frame.
        allowance = (core.t - last_exact) * CONST["CLOCK_DRIFT_MAX_PPM"] * 1e-6
        assert d - allowance - 1 <= echo.age_ms <= d, (k, d, echo.age_ms)
        if d == 0:
            last_exact = core.t


@pytest.mark.parametrize("ppm", [-3000, 3000, 4900])
def test_clock_drift_within_the_bound_is_tracked(harness, ppm):
    c = Core(harness, clock_start_ms=0xFFFFFFFF - 5000)  # the MCU clock wraps too
    c.hello()
    c.ok(Op.ARM)
    ages = []
    host = float(T0 + c.t)
    for _ in range(400):  # 20 s
        c.advance(50)
        host += 50 * (1 - ppm * 1e-6)  # the host clock runs slower (ppm > 0) or faster than the MCU's
        echo = c.sp(0.1, ts=int(host) & 0xFFFFFFFF)
        assert echo.result == EchoResult.APPLIED
        ages.append(echo.age_ms)
    assert max(ages) <= 2


def test_drift_beyond_the_bound_shows_as_age(harness):
    c = Core(harness)
    c.hello()
    host = float(T0)
    ages = []
    for _ in range(400):
        c.advance(50)
        host += 50 * (1 - 8000e-6)
        ages.append(c.sp(0.1, ts=int(host) & 0xFFFFFFFF, ttl_ms=1000).age_ms)
    # The envelope rises at most 5000 ppm: the 3000 ppm excess accumulates (3 ms/s over 20 s ~ 60 ms).
    assert ages[-1] == pytest.approx(60, abs=3)


def test_sequence_numbers_and_timestamps_wrap(harness):
    c = Core(harness, clock_start_ms=0xFFFFFFFF - 300)
    c.seq = 0xFFFFFFF0
    c.hello()
    c.ok(Op.ARM)
    c.drive(0.2, 0.0, 2000)  # seq and the host ms clock cross 2^32 along the way
    s = c.status()
    assert c.seq < 100 and s["out_of_order"] == 0 and s["stale_dropped"] == 0 and s["setpoints_applied"] == 40


def test_odometry_integrates_exact_arcs(core):
    core.ok(Op.ARM)
    v, w = 0.2, 1.0
    radius = v / w
    core.telemetry()
    core.drive(v, w, 3000)
    poses = [(t.x_m, t.y_m, t.theta_rad) for t in core.telemetry()]
    assert len(poses) >= 55
    # The ramp keeps the wheel-speed ratio, so the whole path is on one circle through the origin.
    for x, y, theta in poses:
        assert math.hypot(x, y - radius) == pytest.approx(radius, abs=0.002)
        # On that circle the heading is the angle swept from the start.
        swept = math.atan2(x, radius - y)
        assert math.remainder(theta - swept, 2 * math.pi) == pytest.approx(0.0, abs=0.01)
    assert poses[-1][2] != pytest.approx(poses[0][2], abs=0.5)


def test_telemetry_period_is_configurable(core):
    core.telemetry()
    core.advance(1000)
    assert len(core.telemetry()) == 20
    assert core.control(Op.CONFIG, args=(0.5, 3.0, 10))[0].result == Result.BAD_ARGS
    core.ok(Op.CONFIG, args=(0.5, 3.0, 20))
    core.telemetry()
    core.advance(1000)
    assert len(core.telemetry()) == 50


def test_bad_frames_are_counted_and_change_nothing(core):
    core.ok(Op.ARM)
    core.drive(0.2, 0.0, 200)
    good = setpoint(core.next_seq(), core.ts(), 0.5, 0.0)
    from firmware_bridge import codec
    from firmware_bridge.checksum import crc32

    raw = codec.cobs_decode(good[:-1])
    flipped = bytearray(raw)
    flipped[15] ^= 0x10

    def reframe(body: bytes) -> bytes:
        return codec.cobs_encode(body + crc32(body).to_bytes(4, "little")) + b"\x00"

    core.h.rx(codec.cobs_encode(bytes(flipped)) + b"\x00")  # CRC error
    core.h.rx(good[: len(good) // 2] + b"\x00")  # truncated
    core.h.rx(b"\x42" * 500 + b"\x00")  # oversize
    core.h.rx(reframe(bytes([2]) + raw[1:-4]))  # protocol version 2
    core.h.rx(reframe(raw[:1] + bytes([0x84]) + raw[2:-4]))  # an MCU-to-host type sent to the MCU
    core.h.rx(reframe(raw[:-5]))  # payload one byte short
    core.h.rx(b"\x00\x00\x00")  # idle fill: not an error
    s = core.status()
    assert (s["crc_errors"], s["malformed"], s["oversize"]) == (1, 4, 1)
    core.advance(100)
    s = core.status()
    assert s["cmd_l"] == pytest.approx(0.2) and s["state"] == State.ARMED
    applied = s["setpoints_applied"]
    core.h.rx(good)  # the intact frame (100 ms old, TTL 200 ms) still works afterwards
    assert core.status()["setpoints_applied"] == applied + 1


@pytest.mark.parametrize("case", load_vectors()["clock"], ids=lambda c: c["name"])
def test_clock_and_sequence_vectors(harness, case):
    """The shared vectors pin how far one setpoint may move the clock estimate or the sequence number."""
    c = Core(harness)
    c.h.rx(hello(c.next_seq(), c.ts(case.get("hello_delay_ms", 0)), 7, SCHEMA_HASH))
    c.drain()
    c.ok(Op.ARM)
    accepted = c.seq
    for advance_ms, seq_step, ahead_ms, expect in case["steps"]:
        c.advance(advance_ms)
        seq = (accepted + seq_step) & 0xFFFFFFFF
        echo = c.sp(0.1, seq=seq, ts=(c.ts() + ahead_ms) & 0xFFFFFFFF)
        assert echo.result == EchoResult[expect], (advance_ms, seq_step, ahead_ms, EchoResult(echo.result).name)
        if echo.result in (EchoResult.APPLIED, EchoResult.STALE, EchoResult.IGNORED_DISARMED):
            accepted = seq
        c.seq = accepted


def test_one_frame_far_ahead_cannot_lock_motion_out(core):
    """Issue 16 point 4: before the bound, one such frame made every later setpoint STALE or out of order and
    ARM EXPIRED until the next handshake."""
    core.ok(Op.ARM)
    core.drive(0.1, 0.0, 200)
    assert core.sp(0.1, ts=core.ts(-600_000)).result == EchoResult.AHEAD  # 600 s ahead
    assert core.sp(0.1, seq=(core.seq + 10**6) & 0xFFFFFFFF).result == EchoResult.AHEAD
    core.advance(50)
    echo = core.sp(0.1)
    assert echo.result == EchoResult.APPLIED and echo.age_ms <= CONST["CLOCK_STEP_MAX_MS"]
    core.ok(Op.DISARM)
    core.ok(Op.ARM)  # not EXPIRED
    core.drive(0.1, 0.0, 500)
    assert core.status()["rejected"] == 2
