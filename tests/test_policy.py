"""The policy: timed moves, stop preemption, "none" never moves, and go_to servoing closed-loop on the sim."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.fusion import Decision
from edge.policy import CameraGeometry, Policy, PolicyConfig
from sim.camera import CameraModel, project_point
from sim.world import Pose, step_diff_drive

TICK_S = 0.05


def _decision(intent, accepted=True, kind="utterance", uid=1, target=(0.5, 0.6), presence=0.95, confidence=0.9):
    return Decision(id=1, kind=kind, utterance_id=uid, intent=intent, confidence=confidence, accepted=accepted,
                    probabilities={}, target_xy=target, presence=presence, attention=None)


class _Tracker:
    def __init__(self):
        self.tracking = None
        self.calls = []

    def track(self, uid):
        self.tracking = uid
        self.calls.append(("track", uid))

    def stop_tracking(self):
        self.tracking = None
        self.calls.append(("stop",))


def _run(policy, t0, seconds):
    out = []
    t = t0
    while t < t0 + seconds:
        out.append(policy.tick(t))
        t += TICK_S
    return out, t


def test_forward_drives_the_step_distance_then_stops():
    p = Policy()
    p.on_decision(_decision("forward"), 0.0)
    sps, _ = _run(p, 0.0, 4.0)
    travelled = sum(s.linear_m_s for s in sps) * TICK_S
    assert travelled == pytest.approx(PolicyConfig().step_distance_m, abs=0.02)
    assert all(s.angular_rad_s == 0 and s.ttl_s <= 0.25 for s in sps)
    assert sps[-1].is_zero and p.activity.mode == "idle" and p.outcomes[-1].reason == "done"


def test_turns_turn_the_configured_angle_in_the_named_direction():
    p = Policy()
    p.on_decision(_decision("turn_right"), 0.0)
    sps, _ = _run(p, 0.0, 3.0)
    assert sum(s.angular_rad_s for s in sps) * TICK_S == pytest.approx(-math.radians(45), abs=0.05)


def test_none_and_unsure_commands_never_move():
    p = Policy()
    p.on_decision(_decision("none", accepted=False), 0.0)
    p.on_decision(_decision("forward", accepted=False, confidence=0.4), 0.0)
    sps, _ = _run(p, 0.0, 2.0)
    assert all(s.is_zero for s in sps) and p.outcomes == []


def test_stop_preempts_at_the_next_tick_and_a_new_command_replaces_the_old():
    tracker = _Tracker()
    p = Policy(tracker=tracker)
    p.on_decision(_decision("go_to"), 0.0)
    assert tracker.tracking == 1 and not p.tick(0.05).is_zero
    p.on_decision(_decision("stop", uid=2), 0.1)
    assert p.tick(0.1).is_zero and tracker.tracking is None
    assert [o.reason for o in p.outcomes] == ["stopped"]
    p.on_decision(_decision("forward", uid=3), 0.2)
    p.on_decision(_decision("turn_left", uid=4), 0.3)
    assert p.outcomes[-1].reason == "preempted" and p.activity.intent == "turn_left"


def test_go_to_an_object_not_in_view_does_not_move():
    p = Policy()
    p.on_decision(_decision("go_to", presence=0.1), 0.0)
    assert p.tick(0.05).is_zero and p.outcomes[-1].reason == "not_in_view"


def test_drop_opens_the_gripper_and_pick_up_closes_it_on_arrival():
    p = Policy()
    p.on_decision(_decision("drop"), 0.0)
    assert p.gripper_requests == [True]
    p.gripper_requests.clear()
    p.on_decision(_decision("pick_up", target=(0.5, 0.95)), 1.0)  # far below the horizon: already there
    p.tick(1.05)
    assert p.gripper_requests == [False] and p.outcomes[-1].reason == "reached"


def test_servo_holds_still_without_fresh_views_and_stops_when_lost():
    p = Policy(tracker=_Tracker())
    p.on_decision(_decision("go_to", target=(0.7, 0.55)), 0.0)
    assert not p.tick(0.1).is_zero
    assert p.tick(0.7).is_zero and p.activity.mode == "go_to"  # no tracking update for 0.7 s: hold
    p.on_decision(_decision("go_to", kind="track", presence=0.05), 0.8)  # updates, but the object is gone
    p.tick(0.9)
    assert p.activity.mode == "go_to"  # not yet: 0.8 s of views without it
    p.on_decision(_decision("go_to", kind="track", presence=0.05), 1.1)
    p.tick(1.2)
    assert p.activity.mode == "idle" and p.outcomes[-1].reason == "lost"


def test_servo_gives_up_when_no_view_comes_at_all():
    p = Policy(tracker=_Tracker())
    p.on_decision(_decision("go_to", target=(0.5, 0.55)), 0.0)
    assert p.tick(2.9).is_zero and p.activity.mode == "go_to"  # slow views are waited for, not called "lost"
    p.tick(3.1)
    assert p.activity.mode == "idle" and p.outcomes[-1].reason == "no_view"


def test_speed_and_turn_rate_are_clamped():
    p = Policy(PolicyConfig(servo_gain=50.0, servo_speed_m_s=5.0))
    p.on_decision(_decision("go_to", target=(0.02, 0.52)), 0.0)
    s = p.tick(0.05)
    assert abs(s.angular_rad_s) <= 1.2 and abs(s.linear_m_s) <= 0.25


@pytest.mark.parametrize("target, start", [
    ((1.2, 0.3, 0.06), Pose(0.0, 0.0, 0.0)),
    ((1.5, -0.6, 0.04), Pose(0.0, 0.0, -0.2)),
    ((0.8, 0.5, 0.08), Pose(-0.5, -0.4, 0.9)),
])
def test_go_to_servo_reaches_within_0_3_m_on_the_true_camera_projection(target, start):
    """Closed loop: the sim camera's projection of the target stands in for the model's target point."""
    camera = CameraModel()
    geometry = CameraGeometry(hfov_deg=camera.hfov_deg, aspect=camera.width / camera.height,
                              mount_height_m=camera.mount_height_m, pitch_deg=camera.pitch_deg)
    tracker = _Tracker()
    p = Policy(geometry=geometry, tracker=tracker)
    pose, t = start, 0.0

    def view():
        uv = project_point(camera, pose, *target)
        if uv is None or not (0 <= uv[0] <= camera.width and 0 <= uv[1] <= camera.height):
            return None
        return (uv[0] / camera.width, uv[1] / camera.height)

    p.on_decision(_decision("go_to", target=view()), t)
    while p.activity.mode != "idle" and t < 30:
        if round(t / TICK_S) % 3 == 0:  # tracking updates at ~6.7 Hz
            xy = view()
            p.on_decision(_decision("go_to", kind="track", target=xy or (0.5, 0.5),
                                    presence=0.95 if xy else 0.0), t)
        s = p.tick(t)
        pose = step_diff_drive(pose, s.linear_m_s, s.angular_rad_s, TICK_S)
        t += TICK_S
    distance = float(np.hypot(pose.x - target[0], pose.y - target[1]))
    assert p.outcomes[-1].reason == "reached", (p.outcomes, distance)
    assert distance <= 0.3 and t < 15


def test_a_hold_suspends_a_go_to_and_it_drives_again_only_on_a_view_taken_after_the_release():
    p = Policy(tracker=_Tracker())
    p.on_decision(_decision("go_to", target=(0.5, 0.7)), 0.0)
    assert not p.tick(0.05).is_zero
    p.hold(0.1, "camera frozen (the picture does not change)")
    assert p.tick(0.15).is_zero and p.activity.mode == "go_to" and p.activity.held.startswith("camera frozen")
    p.on_decision(_decision("go_to", kind="track", target=(0.5, 0.7)), 0.3)  # views during the hold: still held
    assert p.tick(0.35).is_zero
    p.release(2.0)  # longer than lost_after_s: the release gives the target time to be seen again
    assert p.activity.held is None and p.activity.resumed == 2.0
    assert p.tick(2.05).is_zero and p.activity.mode == "go_to"  # no view taken since the release yet
    p.on_decision(_decision("go_to", kind="track", target=(0.5, 0.7)), 2.1)
    assert not p.tick(2.15).is_zero
    # no view at all after a release: it ends as no_view, like any go_to without views
    p.hold(2.2, "camera delivering no frames")
    p.release(2.3)
    _run(p, 2.35, PolicyConfig().no_view_after_s + 0.2)
    assert p.activity.mode == "idle" and p.outcomes[-1].reason == "no_view"


def test_a_hold_ends_a_timed_move_at_once():
    p = Policy()
    p.on_decision(_decision("forward"), 0.0)
    assert not p.tick(0.05).is_zero
    p.hold(0.1, "microphone silent")
    assert p.tick(0.15).is_zero and p.activity.mode == "idle" and p.outcomes[-1].reason == "held"
