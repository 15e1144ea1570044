"""The whole runtime on the simulated robot: spoken commands (espeak-ng) -> VAD -> model -> policy -> C firmware."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from edge import gc_pause
from edge.runtime import RuntimeConfig
from edge.service.state import snapshot
from simrobot.robot import SimRobot
from tests.bridge_fixtures import requires_gcc
from tests.runtime_fixtures import armed_runtime

pytestmark = requires_gcc


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("rt") / "bundle", log=lambda *_: None)


@pytest.fixture()
def running(bundle, tmp_path):
    from sim.world import Arena, Pose, SceneObject

    arena = Arena((SceneObject("red", "ball", 1.2, 0.25, 0.12), SceneObject("blue", "cube", 1.4, -0.5, 0.12),
                   SceneObject("green", "cone", -1.5, 1.0, 0.12)))
    robot = SimRobot(arena, Pose(0.0, 0.0, 0.0))
    link = robot.start()
    from edge.sensors import make_camera, make_microphone

    # with sensor noise, as a real camera has: a bit-identical picture means a frozen camera (held still)
    from sim.camera import Appearance

    camera = make_camera("sim", pose_fn=robot.pose, arena=arena, fps=15.0, appearance=Appearance(noise_sigma=2.0),
                         seed=0)
    microphone = make_microphone("sim", noise="pink", noise_dbfs=-45.0, voice="en-us+m3")
    config = RuntimeConfig(bundle=str(bundle.path), precision="fp32", audit_log=str(tmp_path / "audit"))
    before, held = threading.active_count(), gc_pause.holders()
    with armed_runtime(config, robot, link, camera, microphone) as rt:
        assert gc_pause.holders() == held + 1  # a full collection must not stop the heartbeat (edge.gc_pause)
        yield rt, robot, microphone
    assert threading.active_count() <= before
    assert gc_pause.holders() == held


def _wait_event(rt, kind, after_id, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in rt.events_after(after_id, timeout_s=0.2):
            if e.kind == kind:
                return e
    raise AssertionError(f"no {kind} event within {timeout_s} s; events: "
                         f"{[(e.kind, e.text) for e in rt.events_after(after_id)]}")


def test_spoken_turn_left_turns_the_simulated_robot(running):
    rt, robot, mic = running
    start = robot.pose()
    mark = rt.events_after()[-1].id
    motions = []
    rt.add_motion_listener(motions.append)  # what /metrics' voxedge_first_motion_latency_seconds observes
    mic.say("turn left")
    e = _wait_event(rt, "decision", mark, 10.0)
    assert e.data["intent"] == "turn_left" and e.data["accepted"], e.text
    assert e.data["latency_ms"]["speech_end_to_decision"] < 1000
    _wait_event(rt, "outcome", e.id, 5.0)
    assert robot.pose().heading - start.heading == pytest.approx(math.radians(45), abs=0.1)
    assert snapshot(rt)["first_motion_latency_s"] < 1.0
    assert motions == [snapshot(rt)["first_motion_latency_s"]]


def test_speech_that_is_no_command_does_not_move_it(running):
    rt, robot, mic = running
    start = robot.pose()
    mark = rt.events_after()[-1].id
    # What this checks is the runtime: a decision below the command threshold moves nothing. The model's
    # own false accepts are `voxedge evaluate`'s figure; in this voice and noise "what time is it" reads
    # as "drop" at 71-75 % in some placements of the 2 s window, so this uses a phrase it rejects steadily.
    mic.say("thank you very much")
    e = _wait_event(rt, "decision", mark, 10.0)
    assert not e.data["accepted"], e.text
    time.sleep(1.0)
    p = robot.pose()
    assert (p.x, p.y, p.heading) == pytest.approx((start.x, start.y, start.heading), abs=1e-4)


def test_go_to_the_named_object_drives_there(running):
    rt, robot, mic = running
    mark = rt.events_after()[-1].id
    mic.say("go to the red ball")
    e = _wait_event(rt, "decision", mark, 10.0)
    assert e.data["intent"] == "go_to", e.text
    outcome = _wait_event(rt, "outcome", e.id, 25.0)
    p = robot.pose()
    assert outcome.data["reason"] == "reached", outcome.text
    assert math.hypot(p.x - 1.2, p.y - 0.25) <= 0.3
    snap = snapshot(rt)
    assert snap["audit"]["samples"] >= 1 and snap["link"]["telemetry"]["state"] == "ARMED"


def test_estop_while_driving(running):
    rt, robot, mic = running
    mark = rt.events_after()[-1].id
    mic.say("go forward")
    _wait_event(rt, "decision", mark, 10.0)
    rt.link.wait_for_telemetry(lambda t: not t.motors_stopped, timeout_s=2.0)
    rt.actuator.estop()
    rt.link.wait_for_telemetry(lambda t: t.state.name == "ESTOP" and t.motors_stopped, timeout_s=1.0)
    assert snapshot(rt)["estopped"]
    audio_level = np.isfinite(snapshot(rt)["microphone"]["level_dbfs"])
    assert audio_level


def test_stop_preempts_a_go_to(running):
    rt, robot, mic = running
    mark = rt.events_after()[-1].id
    mic.say("go to the blue cube")
    e = _wait_event(rt, "decision", mark, 10.0)
    assert e.data["intent"] == "go_to", e.text
    rt.link.wait_for_telemetry(lambda t: not t.motors_stopped, timeout_s=3.0)
    mic.say("stop now")
    outcome = _wait_event(rt, "outcome", e.id, 10.0)
    assert outcome.data["reason"] == "stopped", [(x.kind, x.text) for x in rt.events_after(mark)]
    rt.link.wait_for_telemetry(lambda t: t.motors_stopped, timeout_s=1.0)
    p = robot.pose()
    assert math.hypot(p.x - 1.4, p.y + 0.5) > 0.3  # stopped on the way, not at the cube


def test_a_command_naming_an_absent_object_does_not_move_and_is_reported(running):
    rt, robot, mic = running
    start = robot.pose()
    mark = rt.events_after()[-1].id
    mic.say("go to the yellow cone")  # no yellow cone in this arena
    e = _wait_event(rt, "decision", mark, 10.0)
    assert e.data["intent"] in ("go_to", "none"), e.text
    if e.data["intent"] == "go_to":
        outcome = _wait_event(rt, "outcome", e.id, 5.0)
        assert outcome.data["reason"] == "not_in_view", outcome.text
    time.sleep(0.5)
    p = robot.pose()
    assert (p.x, p.y, p.heading) == pytest.approx((start.x, start.y, start.heading), abs=1e-4)


def test_health_alerts_name_the_component_and_the_reason(running):
    rt, robot, mic = running
    mark = rt.events_after()[-1].id
    rt.actuator.estop()
    alert = None
    deadline = time.monotonic() + 3
    while alert is None and time.monotonic() < deadline:
        alert = next((e for e in rt.events_after(mark, timeout_s=0.2)
                      if e.kind == "alert" and e.data.get("component") == "link"), None)
    assert alert is not None and "ESTOP" in alert.text
    assert "ESTOP" in snapshot(rt)["health"]["link"]
    rt.actuator.release_estop()
    rt.actuator.request("clear_failsafe")
    rt.link.wait_for_telemetry(lambda t: t.state.name == "DISARMED", timeout_s=2.0)
    time.sleep(0.8)
    assert snapshot(rt)["health"]["link"] is None
    assert any(e.text.startswith("link: recovered after ") for e in rt.events_after(alert.id))


def test_an_unusable_or_damaged_audit_log_does_not_stop_the_robot_and_says_why(bundle, tmp_path):
    """Issue 16 point 3: serve starts without the audit log (health 'audit', the state API) when its directory
    cannot be written, and repairs a damaged index with an alert."""
    from edge.runtime import Runtime
    from edge.sensors import make_camera, make_microphone
    from sim.world import Arena, Pose

    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "index.jsonl").write_text("{cut off in a crash\n")
    for audit_dir, expect in ((tmp_path / "a-file" / "audit", "audit log off: cannot write the audit log at"),
                              (tmp_path / "damaged", None)):
        robot = SimRobot(Arena(()), Pose(0.0, 0.0, 0.0))
        link = robot.start()
        camera = make_camera("sim", pose_fn=robot.pose, arena=robot.arena, fps=15.0, seed=0)
        mic = make_microphone("sim", noise="pink", noise_dbfs=-45.0)
        config = RuntimeConfig(bundle=str(bundle.path), precision="fp32", audit_log=str(audit_dir))
        rt = Runtime(config, link=link, camera=camera, microphone=mic).start()
        try:
            time.sleep(0.5)
            snap = snapshot(rt)
            alerts = [e.text for e in rt.events_after() if e.kind == "alert"]
            if expect:
                assert snap["health"]["audit"].startswith(expect) and "Not a directory" in snap["health"]["audit"]
                assert snap["audit"] == {"off": snap["health"]["audit"]}
                assert any(a.startswith(expect) for a in alerts), alerts
            else:
                assert snap["health"]["audit"] is None and snap["audit"]["samples"] == 0
                assert any(a.startswith("audit log: the audit index was damaged (1 unreadable line(s)")
                           for a in alerts), alerts
        finally:
            rt.stop()
            robot.stop()
