"""The simulator process: pseudo-terminal lifecycle, no orphans, replug, raw protocol abuse, sanitizer build."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from firmware_bridge import messages as M
from firmware_bridge.errors import InvalidValueError, SimulatorError
from firmware_bridge.link import Link
from firmware_bridge.simulator import FaultConfig, McuSimulator, read_motor_log
from firmware_bridge.spec import SCHEMA_HASH, EchoResult, Op, Result, State
from tests.bridge_fixtures import (
    RawClient,
    SetpointStream,
    control,
    hello,
    now_ms,
    read_events,
    requires_gcc,
    setpoint,
)

pytestmark = requires_gcc
REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_start_stop_and_the_port_symlink(tmp_path):
    link_path = tmp_path / "robot"
    sim = McuSimulator(port_link=link_path)
    sim.start()
    try:
        assert sim.is_running and sim.plug_count == 1
        assert os.readlink(link_path) == sim.slave_path and sim.slave_path.startswith("/dev/pts/")
        with pytest.raises(SimulatorError, match="already started"):
            sim.start()
    finally:
        rc = sim.stop()
    assert rc == 0 and not link_path.exists() and not link_path.is_symlink()
    assert not _alive(sim.pid)


def test_fault_config_is_validated():
    with pytest.raises(InvalidValueError, match=r"drop=1.5 is not a probability"):
        FaultConfig(drop=1.5)
    with pytest.raises(InvalidValueError, match="direction='up'"):
        FaultConfig(direction="up")


def test_the_simulator_exits_when_its_parent_is_killed(tmp_path):
    link_path = tmp_path / "robot"
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from firmware_bridge.simulator import McuSimulator
        sim = McuSimulator(port_link={str(link_path)!r}).start()
        print(sim.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        sim_pid = int(proc.stdout.readline())
        assert _alive(sim_pid) and link_path.is_symlink()
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        deadline = time.monotonic() + 2.0
        while _alive(sim_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(sim_pid), "the simulator outlived its parent"
        assert not link_path.exists() and not link_path.is_symlink()
    finally:
        proc.kill()
        proc.wait()


def test_replug_reconnects_within_a_second_and_stays_disarmed(tmp_path):
    events = tmp_path / "events.log"
    with McuSimulator(event_log=events) as sim, Link(sim.port) as link:
        with SetpointStream(link, 0.2, 0.0):
            assert link.arm().result(2).ok
            link.wait_for_telemetry(lambda t: t.wheel_left_m_s > 0.1, timeout_s=2.0)
            for cycle in range(3):
                sim.toggle_plug()  # unplug
                deadline = time.monotonic() + 2
                while link.is_connected and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert not link.is_connected
                time.sleep(0.3 + 0.4 * cycle)  # a while unplugged: the MCU watchdog trips
                sim.toggle_plug()
                sim.wait_plugged(2 + cycle, 2)
                deadline = time.monotonic() + 2
                while not link.is_connected and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert link.is_connected
                t = link.wait_for_telemetry(timeout_s=1.0)
                assert t.state is State.FAILSAFE and not t.armed  # never re-armed by the reconnect
                time.sleep(0.3)
                assert link.wait_for_telemetry().motors_stopped  # the stream continues, the motors don't
        assert link.stats.reconnects == 3
    log = read_events(events)
    replugs = [e.t for e in log if e.kind == "REPLUG"][1:]
    hellos = [e.t for e in log if e.kind == "HELLO"]
    assert len(replugs) == 3
    for r in replugs:
        first = min(h for h in hellos if h > r)
        assert first - r < 1.0, f"reconnected {first - r:.3f} s after the replug"
    assert sum(e.kind == "STATE" and e.fields["state"] == "2" for e in log) >= 1


def test_raw_client_wrong_schema_hash_is_refused_by_the_firmware(sim_events):
    sim, _events = sim_events
    c = RawClient(sim.port)
    try:
        c.send(hello(c.next_seq(), now_ms(), nonce=0xBEEF, schema_hash=SCHEMA_HASH ^ 1))
        ack = c.wait_for(M.HelloAck)
        assert ack.schema_ok == 0 and ack.schema_hash == SCHEMA_HASH
        c.send(control(c.next_seq(), now_ms(), 1, Op.ARM))
        assert c.wait_for(M.Ack).result == Result.REFUSED_SCHEMA
        c.send(setpoint(c.next_seq(), now_ms(), 0.3, 0.0, echo=True))
        assert c.wait_for(M.SetpointEcho).result == EchoResult.IGNORED_DISARMED
        t = c.wait_for(M.TelemetryMsg)
        assert t.link_flags == 1 and t.state == State.DISARMED  # session yes, schema no
    finally:
        c.close()


@pytest.fixture
def sim_events(tmp_path):
    events = tmp_path / "events.log"
    with McuSimulator(event_log=events) as sim:
        yield sim, events


def test_garbage_truncated_and_oversize_frames_over_the_pty(sim_events):
    sim, events = sim_events
    rng = random.Random(5)
    c = RawClient(sim.port)
    try:
        c.send(hello(c.next_seq(), now_ms()))
        c.wait_for(M.HelloAck)
        before = c.wait_for(M.TelemetryMsg)
        frame = setpoint(c.next_seq(), now_ms(), 0.1, 0.0)
        for _ in range(50):
            c.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
            c.send(frame[: rng.randint(1, len(frame) - 2)] + b"\x00")  # truncated
        c.send(b"\x07" * 5000 + b"\x00")  # oversize
        time.sleep(0.1)
        c.send(b"\x00")
        c.send(hello(c.next_seq(), now_ms()))  # still talking after all that
        assert c.wait_for(M.HelloAck).schema_ok == 1
        after = c.wait_for(M.TelemetryMsg)
        assert after.crc_errors + after.malformed > before.crc_errors + before.malformed + 50
        assert after.oversize >= before.oversize + 1
        assert sim.is_running
    finally:
        c.close()
    assert any(e.kind == "FRAME_ERROR" for e in read_events(events))


def test_the_simulated_pose_follows_exact_arcs(tmp_path):
    motor_log = tmp_path / "motor.log"
    with McuSimulator(motor_log=motor_log) as sim, Link(sim.port) as link:
        v, w = 0.2, 1.0
        start = link.wait_for_telemetry()
        with SetpointStream(link, v, w):
            assert link.arm().result(2).ok
            time.sleep(2.0)
            t = link.wait_for_telemetry()
        link.disarm().result(2)
    radius = v / w
    samples = read_motor_log(motor_log)
    assert len(samples) > 100
    x0, y0, th0 = samples[0].x, samples[0].y, samples[0].theta
    assert (x0, y0, th0) == (start.x_m, start.y_m, start.theta_rad) == (0.0, 0.0, 0.0)
    for s in samples:
        assert math.hypot(s.x, s.y - radius) == pytest.approx(radius, abs=0.002)
    # Telemetry odometry (from quantised encoders in the firmware) agrees with the simulated truth.
    near = min(samples, key=lambda s: abs(s.t - t.received_at))
    assert math.hypot(t.x_m - near.x, t.y_m - near.y) < 0.03
    assert abs(math.remainder(t.theta_rad - near.theta, 2 * math.pi)) < 0.1


def test_sanitizer_build_under_faults_and_abuse(tmp_path):
    faults = FaultConfig(seed=11, drop=0.05, corrupt=0.05, duplicate=0.05, delay_prob=0.05, delay_ms=30,
                         byte_drop=0.001, byte_corrupt=0.001)
    sim = McuSimulator(sanitize=True, faults=faults, event_log=tmp_path / "events.log")
    sim.start(timeout_s=20)
    try:
        with Link(sim.port) as link, SetpointStream(link, 0.2, 0.5):
            link.arm().result(3)
            for i in range(10):
                link.gripper(i % 2 == 0).result(3)
            time.sleep(0.5)
            stats = link.stats
        c = RawClient(sim.port)
        rng = random.Random(9)
        for _ in range(100):
            c.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))))
        c.send(b"\x01" * 3000 + b"\x00")
        c.close()
        time.sleep(0.2)
        assert sim.is_running
    finally:
        rc = sim.stop()
    err = sim.stderr_text()
    assert rc == 0, err
    assert "AddressSanitizer" not in err and "runtime error" not in err, err
    assert stats.frames_received > 20 and stats.mcu.frames_ok > 20
