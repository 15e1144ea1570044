"""Kill the host process while it drives: the simulated motors stop within 300 ms, 20 times out of 20.

The host is a separate Python process running ``Link`` (as the actuator loop
would); the simulator logs its motor commands and physical wheel speeds with
CLOCK_MONOTONIC timestamps, the clock of ``time.monotonic()`` here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from firmware_bridge.link import Link
from firmware_bridge.simulator import McuSimulator, motors_stopped_at, read_motor_log
from firmware_bridge.spec import Reason, State
from tests.bridge_fixtures import SetpointStream, requires_gcc

pytestmark = requires_gcc
REPO = Path(__file__).resolve().parents[1]
TRIALS = 20
STOP_LIMIT_S = 0.300

HOST = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {str(REPO)!r})
    from firmware_bridge.link import Link
    link = Link(sys.argv[1]).connect()
    link.clear_failsafe().result(2).raise_for_status()
    link.arm().result(2).raise_for_status()
    told = False
    while True:  # the actuator loop: 20 Hz setpoints
        link.send_setpoint(0.3, 0.4)
        t = link.telemetry
        if not told and t is not None and t.armed and t.wheel_right_m_s > 0.25:
            print("DRIVING", flush=True)
            told = True
        time.sleep(0.05)
""")


def test_killing_the_host_stops_the_motors_within_300_ms_every_time(tmp_path):
    motor_log = tmp_path / "motor.log"
    delays = []
    with McuSimulator(motor_log=motor_log) as sim:
        for trial in range(TRIALS):
            host = subprocess.Popen([sys.executable, "-c", HOST, sim.port], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                line = host.stdout.readline()
                assert line.strip() == "DRIVING", f"trial {trial}: host said {line!r}: {host.stderr.read()[-2000:]}"
                time.sleep(0.1 + 0.01 * trial)  # kill at varying phases of the 50 ms setpoint period
                t_kill = time.monotonic()
                host.send_signal(signal.SIGKILL)
                host.wait(5)
            finally:
                host.kill()
                host.wait()
            time.sleep(0.6)
            samples = read_motor_log(motor_log)
            moving_before = [s for s in samples if t_kill - 0.2 <= s.t < t_kill]
            assert moving_before and not moving_before[-1].stopped, f"trial {trial}: not driving when killed"
            stop = motors_stopped_at(samples, t_kill, t_kill + 0.55)
            assert stop is not None, f"trial {trial}: motors still running 550 ms after the kill"
            delays.append(stop - t_kill)
            # Latched: the watchdog put the firmware in FAILSAFE and it stays there.
            assert samples[-1].state == State.FAILSAFE and samples[-1].stopped
    assert len(delays) == TRIALS
    print(f"stop after kill: min {min(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms over {TRIALS} trials")
    assert max(delays) <= STOP_LIMIT_S, f"stop delays (s): {sorted(round(d, 3) for d in delays)}"


def test_failsafe_stays_latched_until_an_explicit_arm(tmp_path):
    motor_log = tmp_path / "motor.log"
    with McuSimulator(motor_log=motor_log) as sim, Link(sim.port) as link, \
            SetpointStream(link, 0.3, 0.0) as stream:
        assert link.arm().result(2).ok
        link.wait_for_telemetry(lambda t: t.wheel_left_m_s > 0.2, timeout_s=2.0)
        stream.set(0.3, 0.0, ttl_s=1.0)
        sim.toggle_plug()  # cable pulled while driving
        time.sleep(0.5)
        sim.toggle_plug()
        deadline = time.monotonic() + 2
        while not link.is_connected and time.monotonic() < deadline:
            time.sleep(0.01)
        t_back = time.monotonic()
        # Setpoints keep streaming for a second: the robot does not move.
        time.sleep(1.0)
        t = link.wait_for_telemetry()
        assert t.state is State.FAILSAFE and t.reason is Reason.WATCHDOG and t.motors_stopped
        assert all(s.stopped for s in read_motor_log(motor_log) if s.t > t_back - 0.2)
        assert link.arm().result(2).ok
        assert link.wait_for_telemetry(lambda s: s.wheel_left_m_s > 0.2, timeout_s=2.0).armed
        assert link.stats.watchdog_trips == 1


def test_stop_is_quicker_than_the_watchdog_when_the_ttl_runs_out(tmp_path):
    """With setpoints of TTL 0.2 s the ramp starts at TTL expiry, before the 250 ms watchdog trips."""
    ttl_s = 0.2
    motor_log = tmp_path / "motor.log"
    with McuSimulator(motor_log=motor_log) as sim, Link(sim.port) as link:
        with SetpointStream(link, 0.3, 0.0, ttl_s=ttl_s):
            assert link.arm().result(2).ok
            link.wait_for_telemetry(lambda t: t.wheel_left_m_s > 0.25, timeout_s=2.0)
        t_last = time.monotonic()
        time.sleep(0.6)
    samples = read_motor_log(motor_log)
    stop = motors_stopped_at(samples, t_last, t_last + 0.55)
    # Before the watchdog (250 ms) would even start the ramp; the TTL counts from the last setpoint's issue.
    assert stop is not None and stop - t_last <= ttl_s + 0.1
