"""Never drive blind: a camera that freezes, goes dark, stops or lags during a go_to holds the robot still.

The whole runtime on the simulated robot (C firmware on a pty, model, policy), driving to the red ball;
mid-drive the camera is made to fail in one way. Measured by polling the actuator every 10 ms: the
camera's health alert comes within 1 s of the fault (frozen at 15 fps included), the robot's setpoint is
zero within 0.5 s of the alert, the go_to is suspended with the reason visible, and it drives again
only after the fault clears and the target has been seen anew.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.runtime import RuntimeConfig
from edge.sensors import clock
from edge.service.state import snapshot
from simrobot.camera import SimCamera, SimCameraConfig
from simrobot.robot import SimRobot
from tests.bridge_fixtures import requires_gcc
from tests.runtime_fixtures import armed_runtime

pytestmark = requires_gcc

FPS = 15.0
STOP_WITHIN_S = 0.5
POLL_MARGIN_S = 0.3  # the health check's 0.2 s period and this test's polling
# The camera's own detection: frozen (12 frames: 0.73 s at 15 fps) and dark from the pictures; missing and
# late from the 1 s stall timeout plus the 0.2 s health period.
DETECT_WITHIN_S = {"frozen": 1.0, "dark": 1.0, "missing": 1.2, "late": 1.2}


class FaultyCamera(SimCamera):
    """The simulated camera with a fault switch: frozen (the last picture again), dark (black), missing (no
    frames) or late (frames whose capture time lags 2 s)."""

    fault: str | None = None

    def _read_impl(self):
        got = super()._read_impl()
        if got is None:
            return None
        image, t = got
        if self.fault == "frozen":
            self._held = getattr(self, "_held", None)
            if self._held is None:
                self._held = image
            return self._held, t
        self._held = None
        if self.fault == "dark":
            return np.zeros_like(image), t
        if self.fault == "missing":
            while self.fault == "missing" and not self._stop.wait(0.02):
                pass
            return (image, clock.now()) if not self._stop.is_set() else None
        if self.fault == "late":
            return image, t - 2.0
        return image, t


@pytest.fixture
def driving(bundle_for_hold):
    from edge.sensors import make_microphone
    from sim.camera import Appearance
    from sim.world import Arena, Pose, SceneObject

    arena = Arena((SceneObject("red", "ball", 1.8, 0.2, 0.12), SceneObject("blue", "cube", 1.4, -0.9, 0.12)))
    robot = SimRobot(arena, Pose(0.0, 0.0, 0.0))
    link = robot.start()
    camera = FaultyCamera(SimCameraConfig(pose_fn=robot.pose, arena=arena, fps=FPS,
                                          appearance=Appearance(noise_sigma=2.0), seed=0))
    mic = make_microphone("sim", noise="pink", noise_dbfs=-45.0, voice="en-us+m3")
    with armed_runtime(RuntimeConfig(bundle=str(bundle_for_hold.path), precision="fp32"), robot, link, camera,
                       mic) as rt:
        yield rt, camera, mic


@pytest.fixture(scope="module")
def bundle_for_hold(tmp_path_factory):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("hold") / "bundle", log=lambda *_: None)


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.01) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll_s)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.mark.parametrize("fault", ["frozen", "dark", "missing", "late"])
def test_a_failing_camera_during_go_to_holds_the_robot_still_until_it_sees_again(driving, fault):
    rt, camera, mic = driving
    mic.say("go to the red ball")
    _wait(lambda: not rt.actuator.state().setpoint.is_zero, 15.0, "the robot starts driving to the red ball")
    time.sleep(0.5)
    assert rt.actuator.state().activity.mode == "go_to"

    camera.fault = fault
    t_fault = time.monotonic()
    t_alert = _wait(lambda: rt.health.get("camera"), 5.0, f"a camera alert for the {fault} camera")
    assert t_alert - t_fault <= DETECT_WITHIN_S[fault] + POLL_MARGIN_S, f"{fault}: alert after {t_alert - t_fault:.2f} s"
    t_still = _wait(lambda: rt.actuator.state().setpoint.is_zero, STOP_WITHIN_S, "a zero setpoint")
    assert t_still - t_alert <= STOP_WITHIN_S
    print(f"{fault}: alert {t_alert - t_fault:.2f} s after the fault; zero setpoint {t_still - t_alert:+.2f} s from "
          "the alert")  # shown with pytest -s
    time.sleep(0.6)  # and it stays still, suspended, with the reason on show
    state = rt.actuator.state()
    assert state.setpoint.is_zero and state.source == "held", state.source
    assert state.activity.mode == "go_to" and state.activity.held and "camera" in state.activity.held

    camera.fault = None
    t_clear = _wait(lambda: not rt.health.get("camera"), 5.0, "the camera alert clears")
    _wait(lambda: not rt.actuator.state().setpoint.is_zero, 5.0, "the robot drives again")
    activity = rt.actuator.state().activity
    assert activity.held is None and activity.resumed is not None and activity.last_update > activity.resumed
    assert activity.resumed >= t_clear - 0.3


def test_a_missing_camera_raises_one_alert_for_people_not_a_flood(driving):
    """Issue 16 point 5: tracking steps failing 8 times a second while the camera is gone must give one
    alert per condition (with a duration in the state API), plain words, and one note when it recovers."""
    import re

    rt, camera, mic = driving
    mic.say("go to the red ball")
    _wait(lambda: not rt.actuator.state().setpoint.is_zero, 15.0, "the robot starts driving to the red ball")
    mark = rt.events_after()[-1].id
    camera.fault = "missing"
    _wait(lambda: rt.health.get("camera"), 5.0, "a camera alert")
    time.sleep(3.0)
    active = {a["key"]: a for a in snapshot(rt)["alerts"]}
    assert active["camera"]["for_s"] >= 2.5 and active["camera"]["text"].startswith("camera: no frames for ")
    camera.fault = None
    _wait(lambda: not rt.health.get("camera"), 5.0, "the camera alert clears")
    time.sleep(0.3)
    events = rt.events_after(mark)
    alerts = [e for e in events if e.kind == "alert"]
    assert [e.data["key"] for e in alerts if e.data.get("key") == "camera"] == ["camera"], [e.text for e in alerts]
    assert len(alerts) <= 3, [e.text for e in alerts]  # the camera, at most one inference-error and one other
    assert not [e.text for e in alerts if re.search(r"\b[A-Z]\w*(Error|Exception)\b", e.text)]
    assert any(e.kind == "info" and e.text.startswith("camera: recovered after ") for e in events)
