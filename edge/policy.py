"""Policy: decisions -> motion. Timed moves and turns, visual servoing to a named object, gripper actions.

The policy runs inside the actuator loop (one thread, 20 Hz): each tick it
reads the newest decisions, updates its state and returns the setpoint for
that tick. Its rules:

- Only accepted decisions act (the intent is not "none" and its probability is
  at or above the bundle's command threshold); "none" never moves the robot.
- "stop" preempts everything, at the next tick; any new command replaces the
  one running.
- forward / backward / turn_left / turn_right are timed motions of a fixed
  distance or angle.
- go_to is closed-loop visual servoing: the inference worker re-runs the model
  on fresh frames with the same utterance (``TRACK_HZ``); the policy steers
  toward the target point, slows as it nears, and stops when the object is
  reached (estimated from where the target sits below the horizon), lost (not
  in view for a while) or after a timeout. pick_up is go_to followed by
  closing the gripper; drop opens it.
- Speed and turn rate are clamped, and every setpoint carries a time-to-live:
  if the host stops sending, the microcontroller stops by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edge.contract.vocabulary import OBJECT_INTENTS
from edge.fusion import Decision

# The MCU drops a setpoint older than this and stops following one this long after it was issued (4 ticks
# at 20 Hz: three missed ticks are ridden out). It sets how soon the motors stop when the host dies:
# bench/bench_failsafe_serve.py measured 253-293 ms (median 272) after a SIGKILL of serve with 0.25 s,
# a 7 ms margin to the 300 ms goal; with 0.20 s see the README's safety section.
SETPOINT_TTL_S = 0.20


@dataclass(frozen=True)
class Setpoint:
    linear_m_s: float
    angular_rad_s: float
    ttl_s: float = SETPOINT_TTL_S

    @property
    def is_zero(self) -> bool:
        return self.linear_m_s == 0.0 and self.angular_rad_s == 0.0


ZERO = Setpoint(0.0, 0.0)


@dataclass(frozen=True)
class CameraGeometry:
    """Where the camera sits, for turning image points into bearings and floor distances."""

    hfov_deg: float = 66.0
    aspect: float = 4.0 / 3.0  # width / height
    mount_height_m: float = 0.10
    pitch_deg: float = 0.0  # positive: looking up
    target_height_m: float = 0.055  # typical height of an object's visual centre above the floor

    def bearing_rad(self, x: float) -> float:
        """Angle to the left (positive) of the optical axis of normalised image column ``x``."""
        half = math.tan(math.radians(self.hfov_deg) / 2)
        return -math.atan((2.0 * x - 1.0) * half)

    def floor_distance_m(self, y: float) -> float:
        """Distance along the floor to a target seen at normalised row ``y`` (inf at or above the horizon)."""
        half_v = math.tan(math.radians(self.hfov_deg) / 2) / self.aspect
        below = math.atan((2.0 * y - 1.0) * half_v) - math.radians(self.pitch_deg)  # angle below horizontal
        drop = self.mount_height_m - self.target_height_m
        if below <= 1e-3 or drop <= 0:
            return math.inf
        return drop / math.tan(below)


@dataclass(frozen=True)
class PolicyConfig:
    max_linear_m_s: float = 0.25
    max_angular_rad_s: float = 1.2
    step_distance_m: float = 0.30  # forward / backward
    step_speed_m_s: float = 0.15
    turn_angle_deg: float = 45.0  # turn_left / turn_right
    turn_rate_rad_s: float = 0.8
    servo_speed_m_s: float = 0.18  # go_to cruise speed
    servo_gain: float = 2.0  # rad/s of turn per rad of bearing
    servo_slow_m: float = 0.4  # slow down within this of the reach distance
    # go_to ends when the estimated floor distance is this or less. The estimate assumes an object centre
    # 5.5 cm above the floor; small objects (lower centres) really end ~1.5x farther, tall ones nearer.
    reach_distance_m: float = 0.15
    presence_threshold: float = 0.5
    lost_after_s: float = 1.0  # fresh views without the object for this long: stop ("lost")
    no_view_after_s: float = 3.0  # no fresh tracking update at all for this long: stop ("no_view")
    near_lost_m: float = 0.5  # lost from view while nearer than this counts as reached (it left the view below)
    track_stale_s: float = 0.6  # no fresh tracking update this long: hold still until one comes
    go_to_timeout_s: float = 25.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"policy {name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Activity:
    """What the robot is doing (a snapshot for the panel and the log)."""

    mode: str  # idle, move, turn, go_to, pick_up
    intent: str = "none"
    utterance_id: int = 0
    started: float = 0.0
    until: float | None = None
    target_xy: tuple[float, float] | None = None
    distance_m: float | None = None
    bearing_rad: float | None = None
    last_seen: float = 0.0
    last_update: float = 0.0
    held: str | None = None  # go_to / pick_up suspended: why (a camera, microphone or inference problem)
    resumed: float | None = None  # when the last hold ended: the target must be seen again after it


@dataclass(frozen=True)
class Outcome:
    """How an activity ended."""

    intent: str
    utterance_id: int
    reason: str  # done, reached, lost, timeout, preempted, stopped, not_in_view, held
    t: float


IDLE = Activity("idle")


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


class Policy:
    """Decisions in, setpoints and gripper requests out. Owned by the actuator thread."""

    def __init__(self, config: PolicyConfig = PolicyConfig(), geometry: CameraGeometry = CameraGeometry(),
                 tracker=None) -> None:
        self.config = config
        self.geometry = geometry
        self.tracker = tracker  # has track(utterance_id) / stop_tracking(); the inference worker
        self.activity: Activity = IDLE
        self.outcomes: list[Outcome] = []  # most recent last; bounded
        self.outcome_count = 0  # outcomes ever recorded (the list keeps the last 50)
        self.gripper_requests: list[bool] = []  # True = open; drained by the actuator

    # -- inputs ----------------------------------------------------------------------
    def on_decision(self, d: Decision, now: float) -> None:
        """A decision for a new utterance, or a tracking update for the current go_to."""
        if d.kind == "track":
            self._on_track(d, now)
            return
        if not d.accepted:
            return  # "none" and unsure commands never move the robot
        c = self.config
        intent = d.intent
        if intent == "stop":
            self.stop(now, "stopped")
            return
        if self.activity.mode != "idle":
            self._end(now, "preempted")
        if intent in ("forward", "backward"):
            self.activity = Activity("move", intent, d.utterance_id, now, now + c.step_distance_m / c.step_speed_m_s)
        elif intent in ("turn_left", "turn_right"):
            duration = math.radians(c.turn_angle_deg) / c.turn_rate_rad_s
            self.activity = Activity("turn", intent, d.utterance_id, now, now + duration)
        elif intent in OBJECT_INTENTS:
            if d.presence is not None and d.presence < c.presence_threshold or d.target_xy is None:
                self._record(Outcome(intent, d.utterance_id, "not_in_view", now))
                return
            self.activity = Activity(intent, intent, d.utterance_id, now, target_xy=d.target_xy, last_seen=now,
                                     last_update=now)
            self._update_target(d.target_xy, now)
            if self.tracker is not None:
                self.tracker.track(d.utterance_id)
        elif intent == "drop":
            self.gripper_requests.append(True)
            self._record(Outcome(intent, d.utterance_id, "done", now))

    def stop(self, now: float, reason: str = "stopped") -> None:
        """Stop whatever runs (a "stop" command, an e-stop, a fault)."""
        if self.activity.mode != "idle":
            self._end(now, reason)

    def hold(self, now: float, reason: str) -> None:
        """Perception cannot be trusted (``reason``): a timed move or turn ends; a go_to or pick_up is
        suspended, the robot still, until ``release`` and a fresh sighting of the target."""
        a = self.activity
        if a.mode in ("move", "turn"):
            self._end(now, "held")
        elif a.mode in OBJECT_INTENTS and a.held != reason:
            self.activity = replace(a, held=reason)

    def release(self, now: float) -> None:
        """The reason to hold is gone: a suspended go_to waits for the target to be seen again (with
        ``lost_after_s`` to find it) before it drives."""
        a = self.activity
        if a.held is not None:
            self.activity = replace(a, held=None, resumed=now, last_seen=now)

    # -- the 20 Hz tick ----------------------------------------------------------------
    def tick(self, now: float) -> Setpoint:
        a, c = self.activity, self.config
        if a.mode == "idle":
            return ZERO
        if a.mode in ("move", "turn"):
            if now >= a.until:
                self._end(now, "done")
                return ZERO
            if a.mode == "move":
                v = c.step_speed_m_s if a.intent == "forward" else -c.step_speed_m_s
                return Setpoint(_clamp(v, c.max_linear_m_s), 0.0)
            w = c.turn_rate_rad_s if a.intent == "turn_left" else -c.turn_rate_rad_s
            return Setpoint(0.0, _clamp(w, c.max_angular_rad_s))
        return self._servo(now)

    def _servo(self, now: float) -> Setpoint:
        a, c = self.activity, self.config
        if now - a.started > c.go_to_timeout_s:
            self._end(now, "timeout")
            return ZERO
        if a.held is not None:
            return ZERO  # suspended: no view to trust (see hold)
        if a.resumed is not None and a.last_update <= a.resumed:
            if now - a.resumed > c.no_view_after_s:
                self._end(now, "no_view")
            return ZERO  # after a hold: drive again only on a view taken since
        if a.last_update - a.last_seen > c.lost_after_s:  # views keep coming, the object is not in them
            near = a.distance_m is not None and a.distance_m < c.near_lost_m
            self._end(now, "reached" if near else "lost")
            return ZERO
        if now - a.last_update > c.no_view_after_s:
            self._end(now, "no_view")
            return ZERO
        if now - a.last_update > c.track_stale_s or a.bearing_rad is None:
            return ZERO  # no fresh view of the target (camera or inference slow): hold still until one comes
        if a.distance_m is not None and a.distance_m <= c.reach_distance_m:
            self._end(now, "reached")
            return ZERO
        w = _clamp(c.servo_gain * a.bearing_rad, c.max_angular_rad_s)
        # Drive only when roughly facing the target; slow down on the last stretch.
        facing = max(0.0, 1.0 - abs(a.bearing_rad) / math.radians(25.0))
        remaining = math.inf if a.distance_m is None else a.distance_m - c.reach_distance_m
        slow = min(1.0, max(0.25, remaining / c.servo_slow_m))
        return Setpoint(_clamp(c.servo_speed_m_s * facing * slow, c.max_linear_m_s), w)

    # -- helpers -----------------------------------------------------------------------
    def _on_track(self, d: Decision, now: float) -> None:
        a = self.activity
        if a.mode not in OBJECT_INTENTS or d.utterance_id != a.utterance_id:
            return
        seen = d.presence is None or d.presence >= self.config.presence_threshold
        self.activity = replace(a, last_update=now, last_seen=now if seen else a.last_seen)
        if seen and d.target_xy is not None:
            self._update_target(d.target_xy, now)

    def _update_target(self, xy: tuple[float, float], now: float) -> None:
        g = self.geometry
        self.activity = replace(self.activity, target_xy=xy, bearing_rad=g.bearing_rad(xy[0]),
                                distance_m=g.floor_distance_m(xy[1]))

    def _end(self, now: float, reason: str) -> None:
        a = self.activity
        if a.mode in OBJECT_INTENTS and self.tracker is not None:
            self.tracker.stop_tracking()
        if a.mode == "pick_up" and reason == "reached":
            self.gripper_requests.append(False)  # close on the object
        self._record(Outcome(a.intent, a.utterance_id, reason, now))
        self.activity = IDLE

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        del self.outcomes[:-50]
        self.outcome_count += 1
