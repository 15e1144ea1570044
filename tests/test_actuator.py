"""The 20 Hz actuator loop against the real C firmware core on a pseudo-terminal."""

from __future__ import annotations

import math
import threading
import time

import pytest

from edge.actuator import Actuator, ActuatorError
from edge.fusion import Decision
from edge.policy import Policy
from firmware_bridge.link import Link
from firmware_bridge.simulator import McuSimulator
from firmware_bridge.spec import Gripper, State
from tests.bridge_fixtures import requires_gcc

pytestmark = requires_gcc


def _decision(intent, accepted=True, uid=1, t_end=None):
    return Decision(id=uid, kind="utterance", utterance_id=uid, intent=intent, confidence=0.9, accepted=accepted,
                    probabilities={}, target_xy=(0.5, 0.6), presence=0.9, attention=None,
                    t_speech_end=t_end if t_end is not None else time.monotonic())


@pytest.fixture()
def robot():
    with McuSimulator() as sim, Link(sim.port) as link:
        stalled = {"s": 0.0}
        actuator = Actuator(link, Policy(), stalled_for=lambda now: stalled["s"])
        actuator.start()
        try:
            actuator.request("arm")
            link.wait_for_telemetry(lambda t: t.state is State.ARMED, timeout_s=2.0)
            yield actuator, link, stalled
        finally:
            actuator.stop()


def _pose(link):
    t = link.telemetry
    return t.x_m, t.y_m, t.theta_rad


def test_idle_zeros_are_a_heartbeat_and_forward_drives_the_step(robot):
    actuator, link, _ = robot
    time.sleep(0.6)  # longer than the MCU's 250 ms watchdog: only the zero stream keeps it armed
    assert link.telemetry.state is State.ARMED and actuator.state().source == "idle"
    x0 = _pose(link)[0]
    actuator.submit(_decision("forward"))
    time.sleep(3.0)
    st = actuator.state()
    assert st.outcomes[-1].reason == "done" and st.first_motion_latency_s is not None
    assert st.first_motion_latency_s < 0.2  # the decision reached the wire within a few ticks
    assert _pose(link)[0] - x0 == pytest.approx(0.30, abs=0.05)
    assert link.telemetry.motors_stopped and st.overruns <= 2


def test_none_never_moves_and_turns_turn(robot):
    actuator, link, _ = robot
    pose = _pose(link)
    actuator.submit(_decision("none", accepted=False))
    time.sleep(0.5)
    assert _pose(link) == pytest.approx(pose, abs=1e-6)
    actuator.submit(_decision("turn_left", uid=2))
    time.sleep(2.5)
    assert _pose(link)[2] - pose[2] == pytest.approx(math.radians(45), abs=0.08)


def test_estop_reaches_the_mcu_at_once_and_latches(robot):
    actuator, link, _ = robot
    actuator.submit(_decision("forward"))
    link.wait_for_telemetry(lambda t: not t.motors_stopped, timeout_s=1.0)
    t0 = time.monotonic()
    actuator.estop()
    link.wait_for_telemetry(lambda t: t.state is State.ESTOP, timeout_s=1.0)
    assert time.monotonic() - t0 < 0.15
    link.wait_for_telemetry(lambda t: t.motors_stopped, timeout_s=0.5)
    assert actuator.state().source == "estop" and actuator.policy.outcomes[-1].reason == "estop"
    actuator.submit(_decision("forward", uid=3))  # commands do nothing while e-stopped
    time.sleep(0.3)
    assert link.telemetry.motors_stopped and link.telemetry.state is State.ESTOP
    actuator.release_estop()
    actuator.request("clear_failsafe")
    link.wait_for_telemetry(lambda t: t.state is State.DISARMED, timeout_s=1.0)


def test_a_stalled_inference_stops_the_robot(robot):
    actuator, link, stalled = robot
    actuator.submit(_decision("forward"))
    link.wait_for_telemetry(lambda t: not t.motors_stopped, timeout_s=1.0)
    stalled["s"] = 0.8
    time.sleep(0.3)
    assert actuator.state().source == "stalled" and link.telemetry.motors_stopped
    assert actuator.state().stalls >= 1
    stalled["s"] = 0.0


def test_manual_driving_needs_its_dead_man(robot):
    actuator, link, _ = robot
    x0 = _pose(link)[0]
    for _ in range(10):  # held for 1 s
        actuator.manual(0.2, 0.0)
        time.sleep(0.1)
    assert actuator.state().source == "manual"
    time.sleep(0.8)  # let go: stops within the 0.5 s dead-man
    assert actuator.state().source == "idle" and link.telemetry.motors_stopped
    assert 0.12 < _pose(link)[0] - x0 < 0.3


def test_gripper_and_controls_go_through_the_loop(robot):
    actuator, link, _ = robot
    actuator.submit(_decision("drop"))
    link.wait_for_telemetry(lambda t: t.gripper is Gripper.OPEN, timeout_s=1.0)
    with pytest.raises(ActuatorError, match="unknown control"):
        actuator.request("self_destruct")
    actuator.request("disarm")
    link.wait_for_telemetry(lambda t: t.state is State.DISARMED, timeout_s=1.0)
    time.sleep(0.2)
    assert {"control": "disarm", "outcome": "delivered"}.items() <= actuator.state().control_results[-1].items()


def test_stopping_the_loop_leaves_no_thread():
    before = threading.active_count()
    with McuSimulator() as sim, Link(sim.port) as link:
        a = Actuator(link, Policy())
        a.start()
        time.sleep(0.2)
        a.stop()
    assert threading.active_count() == before
