"""The host ``Link`` against the real firmware core running in the simulator on a pseudo-terminal."""

from __future__ import annotations

import itertools
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from firmware_bridge.errors import (
    ControlFailedError,
    ControlRefusedError,
    HandshakeError,
    InvalidValueError,
    LinkStateError,
    NotConnectedError,
    PortBusyError,
    PortNotFoundError,
)
from firmware_bridge.link import Link
from firmware_bridge.simulator import FaultConfig, McuSimulator
from firmware_bridge.spec import SCHEMA_HASH, Capability, Gripper, Op, Reason, Result, State
from firmware_bridge.values import Outcome
from tests.bridge_fixtures import SetpointStream, read_events, requires_gcc

pytestmark = requires_gcc


@pytest.fixture(scope="module")
def sim():
    with McuSimulator() as s:
        yield s


@pytest.fixture
def link(sim):
    with Link(sim.port) as lk:
        yield lk


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bridge-io"]


def _drive(link: Link, v: float, w: float, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        link.send_setpoint(v, w)
        time.sleep(0.05)


def test_missing_port_is_reported_with_advice():
    t0 = time.monotonic()
    with pytest.raises(PortNotFoundError, match=r"'/dev/does-not-exist'.*--sim"):
        Link("/dev/does-not-exist").connect()
    assert time.monotonic() - t0 < 1.0
    assert _io_threads() == []


def test_calls_before_connect_raise_not_connected():
    link = Link("/dev/robot")
    with pytest.raises(NotConnectedError, match="call connect"):
        link.send_setpoint(0.1, 0.0)
    with pytest.raises(NotConnectedError):
        link.arm()
    with pytest.raises(NotConnectedError):
        link.estop()
    assert link.telemetry is None and link.handshake is None and not link.is_connected


@pytest.mark.parametrize("kwargs, match", [
    ({"linear_m_s": float("nan"), "angular_rad_s": 0.0}, "linear_m_s=nan"),
    ({"linear_m_s": 0.1, "angular_rad_s": float("inf")}, "angular_rad_s=inf"),
    ({"linear_m_s": "fast", "angular_rad_s": 0.0}, "linear_m_s='fast'"),
    ({"linear_m_s": 0.1, "angular_rad_s": 0.0, "ttl_s": 0.0}, r"ttl_s=0.0.*\[0.001, 1.0\]"),
    ({"linear_m_s": 0.1, "angular_rad_s": 0.0, "ttl_s": 2.0}, "ttl_s=2.0"),
])
def test_bad_setpoints_are_refused_with_the_value(link, kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        link.send_setpoint(**kwargs)


def test_bad_constructor_and_config_values():
    with pytest.raises(InvalidValueError, match="control_attempts"):
        Link("/dev/robot", control_attempts=0)
    with pytest.raises(InvalidValueError, match="TTL limit"):
        Link("/dev/robot", control_attempts=20, ack_timeout_s=0.1)
    with pytest.raises(InvalidValueError, match="echo_every"):
        Link("/dev/robot", echo_every=-1)


def test_configure_checks_its_limits(link):
    with pytest.raises(InvalidValueError, match=r"max_linear_m_s=0.9.*\(0, 0.5\]"):
        link.configure(max_linear_m_s=0.9)
    with pytest.raises(InvalidValueError, match="telemetry_period_s=0.001"):
        link.configure(telemetry_period_s=0.001)


def test_handshake_info(link, sim):
    info = link.handshake
    assert info.schema_match and info.schema_hash == SCHEMA_HASH
    assert info.build_id.startswith("voxedge-mcu-sim+")
    assert {Capability.GRIPPER, Capability.ODOMETRY, Capability.SIMULATOR} <= info.capabilities
    assert info.port == sim.slave_path and info.state is not State.ARMED
    assert link.is_connected and len(_io_threads()) == 1


def test_port_is_opened_exclusively(link, sim):
    with pytest.raises(PortBusyError, match="in use by another process"):
        Link(sim.port, connect_timeout_s=2.0).connect()
    assert link.is_connected


def test_drive_gripper_configure_and_telemetry(link):
    assert link.clear_failsafe().result(2).ok
    with SetpointStream(link) as stream:
        arm = link.arm().result(2)
        assert arm.ok and arm.op is Op.ARM and arm.attempts == 1 and arm.rtt_s < 0.1
        start = link.wait_for_telemetry()
        stream.set(0.3, 0.0)
        time.sleep(1.0)
        t = link.wait_for_telemetry()
        assert t.armed and t.wheel_left_m_s == pytest.approx(0.3, abs=0.03)
        travelled = math.hypot(t.x_m - start.x_m, t.y_m - start.y_m)
        assert 0.2 < travelled < 0.32  # 1 s at 0.3 m/s, less the 0.2 s ramp
        assert t.age_s < 0.1 and t.last_setpoint_seq > 0
        assert link.gripper(True).result(2).ok
        assert link.wait_for_telemetry(lambda s: s.gripper is Gripper.OPEN, timeout_s=1.0)
        assert link.configure(max_linear_m_s=0.1).result(2).ok
        time.sleep(0.4)
        assert link.wait_for_telemetry().motor_left_m_s == pytest.approx(0.1)
        assert link.configure().result(2).ok
        stream.set(0.0, 0.0)
        assert link.disarm().result(2).ok
        assert link.wait_for_telemetry(lambda s: s.state is State.DISARMED and s.motors_stopped, timeout_s=1.0)
    stats = link.stats
    assert stats.controls_delivered >= 6 and stats.controls_failed == 0 and stats.crc_errors == 0
    assert stats.rtt_samples > 0 and 0 < stats.rtt_p50_s < 0.05
    assert stats.mcu.setpoints_applied >= 30 and stats.as_dict()["mcu_setpoints_applied"] >= 30
    assert stats.watchdog_trips == 0


def test_setpoints_are_latest_only(link):
    assert link.arm().result(2).ok
    before = link.stats
    for i in range(2000):
        link.send_setpoint(0.001 * (i % 100), 0.0)
    time.sleep(0.2)
    after = link.stats
    offered = 2000
    sent = after.setpoints_sent - before.setpoints_sent
    superseded = after.setpoints_superseded - before.setpoints_superseded
    assert sent + superseded == offered and superseded > 0
    t = link.wait_for_telemetry()
    assert t.counters.out_of_order == 0 and t.counters.duplicates == 0
    link.disarm().result(2)


def test_estop_jumps_the_queue_and_latches(tmp_path):
    events = tmp_path / "events.log"
    with McuSimulator(event_log=events) as sim, Link(sim.port) as link:
        assert link.arm().result(2).ok
        queued = [link.gripper(i % 2 == 0) for i in range(6)]
        done_before = sum(f.done() for f in queued)  # on a loaded host some may already be answered
        stop = link.estop()
        assert stop.result(2).ok
        results = [f.result(3) for f in queued]
        assert link.wait_for_telemetry(lambda t: t.state is State.ESTOP, timeout_s=1.0).reason is Reason.ESTOP
        executed = [(e.int("id"), e.int("op"), e.int("result")) for e in read_events(events) if e.kind == "CTRL"]
    ops = [op for _, op, _ in executed]
    # The e-stop overtook every control still waiting: after the arm, only those already answered and
    # at most one in flight went first.
    assert ops.index(Op.ESTOP) <= 2 + done_before
    after = [r for _, op, r in executed[ops.index(Op.ESTOP) + 1:]]
    assert after and all(r == Result.REFUSED_ESTOP for r in after)
    assert sum(r.outcome is Outcome.REFUSED for r in results) == len(after)


def test_estop_is_repeated_until_acknowledged():
    # Half the host-to-MCU frames are lost: the e-stop gets through by repetition.
    with McuSimulator(faults=FaultConfig(seed=3, drop=0.5, direction="rx")) as sim, Link(sim.port) as link:
        for _ in range(20):
            result = link.estop().result(5)
            assert result.ok
            if result.attempts > 1:
                break
            link.clear_failsafe().result(2)
        assert result.attempts > 1
        assert link.wait_for_telemetry(lambda t: t.state is State.ESTOP, timeout_s=2.0)
        assert link.stats.estops_sent >= result.attempts


def test_a_control_without_ack_is_reported_failed_after_the_retries(sim):
    with Link(sim.port) as link:
        link.wait_for_telemetry()
        os.kill(sim.pid, signal.SIGSTOP)  # the MCU hangs: nothing is read or answered
        try:
            t0 = time.monotonic()
            result = link.gripper(True).result(3)
            elapsed = time.monotonic() - t0
        finally:
            os.kill(sim.pid, signal.SIGCONT)
        assert result.outcome is Outcome.FAILED and result.attempts == 5 and result.result is None
        assert 0.45 < elapsed < 0.9
        assert "not acknowledged after 5 attempts" in result.detail
        with pytest.raises(ControlFailedError, match="5 attempts"):
            result.raise_for_status()
        stats = link.stats
        assert stats.retries >= 4 and stats.controls_failed >= 1


def test_schema_mismatch_refuses_arming_on_both_sides(tmp_path):
    events = tmp_path / "events.log"
    with McuSimulator(schema_hash=SCHEMA_HASH ^ 0x5A5A, event_log=events) as sim, Link(sim.port) as link:
        info = link.handshake
        assert not info.schema_match and info.schema_hash == SCHEMA_HASH ^ 0x5A5A
        local = link.arm().result(1)
        assert local.outcome is Outcome.REFUSED and local.result is Result.REFUSED_SCHEMA
        with pytest.raises(ControlRefusedError, match="protocol schema"):
            local.raise_for_status()
        assert not link.wait_for_telemetry().schema_ok
        # The firmware refuses as well (the host check is only a shortcut): ask it directly.
        assert link.gripper(True).result(2).result is Result.REFUSED_SCHEMA
        assert link.estop().result(2).ok  # stopping always works
    assert not any(e.kind == "CTRL" and e.int("op") == Op.ARM for e in read_events(events))


def test_mcu_reset_is_detected_and_the_link_handshakes_again(sim):
    with Link(sim.port) as link:
        assert link.arm().result(2).ok
        _drive(link, 0.1, 0.0, 0.3)
        sim.reset_mcu()
        deadline = time.monotonic() + 3
        while link.stats.reconnects < 1 and time.monotonic() < deadline:
            link.send_setpoint(0.1, 0.0)
            time.sleep(0.05)
        assert link.stats.reconnects == 1 and link.is_connected
        t = link.wait_for_telemetry(lambda s: s.session, timeout_s=2.0)
        assert t.state is State.DISARMED  # a rebooted MCU is never armed


def test_handshake_timeout_on_a_silent_port():
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        t0 = time.monotonic()
        with pytest.raises(HandshakeError, match="HELLO_ACK"):
            Link(path).connect()
        assert 1.9 < time.monotonic() - t0 < 3.5
        assert _io_threads() == []
    finally:
        os.close(master)
        os.close(slave)


def test_disconnect_is_bounded_idempotent_and_disarms(sim):
    link = Link(sim.port)
    link.connect()
    with pytest.raises(LinkStateError, match="already connected"):
        link.connect()
    assert link.arm().result(2).ok
    link.send_setpoint(0.0, 0.0)
    link.wait_for_telemetry(lambda t: t.armed)
    t0 = time.monotonic()
    link.disconnect()
    assert time.monotonic() - t0 < 1.0
    link.disconnect()
    assert _io_threads() == [] and not link.is_connected
    with Link(sim.port) as observer:
        assert observer.wait_for_telemetry().state is State.DISARMED
    link.connect()  # a Link can be connected again
    assert link.is_connected
    link.disconnect()


def test_setpoints_while_reconnecting_are_dropped_not_queued(tmp_path):
    with McuSimulator() as sim, Link(sim.port) as link:
        sim.toggle_plug()
        deadline = time.monotonic() + 2
        while link.is_connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not link.is_connected
        assert link.send_setpoint(0.2, 0.0) is False
        failed = link.arm().result(1)
        assert failed.outcome is Outcome.FAILED and "retry once link.is_connected" in failed.detail
        assert link.stats.setpoints_dropped == 1
        sim.toggle_plug()
        sim.wait_plugged(2, 2)
        deadline = time.monotonic() + 2
        while not link.is_connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.is_connected and link.send_setpoint(0.0, 0.0) is True


def test_failed_reconnects_back_off_and_a_new_device_is_tried_at_once(tmp_path):
    with McuSimulator() as sim, Link(sim.port) as link:
        sim.toggle_plug()
        deadline = time.monotonic() + 2
        while link.is_connected and time.monotonic() < deadline:
            time.sleep(0.005)
        # Something that is not a serial port appears at the path: every attempt fails at once.
        Path(sim.port).write_text("not a tty")
        failures, last = [], link.stats.connect_failures
        end = time.monotonic() + 4.2
        while time.monotonic() < end:
            n = link.stats.connect_failures
            if n != last:
                failures.append(time.monotonic())
                last = n
            time.sleep(0.005)
        gaps = [b - a for a, b in itertools.pairwise(failures)]
        assert gaps == [pytest.approx(0.5, abs=0.1), pytest.approx(1.0, abs=0.1), pytest.approx(2.0, abs=0.1)]
        # The next try would be 4 s later: the real device coming back (a new node) is tried at once.
        sim.toggle_plug()
        sim.wait_plugged(2, 2)
        t_plug = time.monotonic()
        while not link.is_connected and time.monotonic() < t_plug + 2:
            time.sleep(0.005)
        assert link.is_connected and time.monotonic() - t_plug < 0.5
        assert link.stats.reconnects == 1


# Firmware built before the CLOCK_STEP_MAX_MS / SEQ_AHEAD_MAX bounds (robots in the field may still run it):
# one frame far ahead moves its clock estimate without limit.
UNBOUNDED_FIRMWARE = ("-DVX_CORE_CLOCK_STEP_MAX_MS=0x7FFFFFFFu", "-DVX_CORE_SEQ_AHEAD_MAX=0xFFFFFFFFu")


@pytest.fixture(scope="module")
def unbounded_firmware(tmp_path_factory):
    from firmware_bridge.simulator import build_simulator

    return build_simulator(build_dir=tmp_path_factory.mktemp("unbounded-fw"), defines=UNBOUNDED_FIRMWARE)


def _send_from_the_future(link: Link, ahead_ms: int) -> None:
    """One setpoint whose host timestamp is ``ahead_ms`` ahead (a corrupted frame whose CRC still matched)."""
    import firmware_bridge.link as link_module

    real = link_module.host_ms
    link_module.host_ms = lambda: (real() + ahead_ms) & 0xFFFFFFFF
    try:
        link.send_setpoint(0.0, 0.0)
    finally:
        link_module.host_ms = real
    time.sleep(0.15)  # the I/O thread sends it on its next tick


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.mark.parametrize("firmware", ["bounded", "unbounded"])
def test_a_frame_far_ahead_never_locks_motion_out(unbounded_firmware, firmware):
    """Issue 16 point 4. The firmware rejects the frame and keeps applying setpoints; firmware without the
    bound rejects every later setpoint as stale, and the host notices from the echoes and handshakes again."""
    binary = unbounded_firmware if firmware == "unbounded" else None
    with McuSimulator(binary=binary) as sim, Link(sim.port) as link, SetpointStream(link):
        link.arm().result(timeout=1.0).raise_for_status()
        _wait(lambda: link.telemetry and link.telemetry.armed, 2.0, "armed")
        _send_from_the_future(link, 600_000)
        if firmware == "bounded":
            before = link.telemetry.counters.setpoints_applied
            time.sleep(2.5)
            t = link.telemetry
            assert t.armed and link.stats.lockouts == 0
            assert t.counters.setpoints_applied - before >= 35 and t.counters.rejected == 1
        else:
            t0 = time.monotonic()
            _wait(lambda: link.stats.lockouts == 1, 4.0, "the host handshakes again")
            _wait(lambda: link.is_connected, 3.0, "the link is back")
            print(f"lock-out healed {time.monotonic() - t0:.2f} s after the bad frame")
            # disarmed by the handshake; the watchdog latched a failsafe while every setpoint was rejected
            _wait(lambda: link.telemetry and link.telemetry.state in (State.DISARMED, State.FAILSAFE), 2.0,
                  "disarmed by the handshake")
            if link.telemetry.state is State.FAILSAFE:
                assert link.telemetry.reason is Reason.WATCHDOG
                link.clear_failsafe().result(timeout=1.0).raise_for_status()
            link.arm().result(timeout=1.0).raise_for_status()
            before = link.telemetry.counters.setpoints_applied
            time.sleep(0.5)
            assert link.telemetry.counters.setpoints_applied - before >= 5


def test_arm_refused_as_expired_on_a_fresh_link_makes_the_host_handshake_again(unbounded_firmware):
    with McuSimulator(binary=unbounded_firmware) as sim, Link(sim.port, echo_every=0) as link:
        link.send_setpoint(0.0, 0.0)
        time.sleep(0.1)
        _send_from_the_future(link, 600_000)  # no echoes: only the refusal can show the lock-out
        outcome = link.arm().result(timeout=2.0)
        assert outcome.result is Result.EXPIRED, outcome
        _wait(lambda: link.stats.lockouts == 1 and link.is_connected, 3.0, "handshake again")
        link.arm().result(timeout=1.0).raise_for_status()
