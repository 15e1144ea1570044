"""``Ros2Link``: the robot link over ROS 2's DDS topics, for a base driven by ``/cmd_vel`` (no ROS install here).

It does for a ROS 2 base what ``firmware_bridge.link.Link`` does for the microcontroller, with the methods the
actuator, the runtime, the health rules and the service use: ``connect``/``disconnect``, ``is_connected``,
``send_setpoint``, ``estop``, ``arm``/``disarm``/``clear_failsafe``/``gripper`` (futures of ``ControlResult``),
``telemetry`` and ``stats``.

- Every setpoint the actuator sends (20 Hz, zeros when idle) is published at once as a ``geometry_msgs/Twist``
  on ``/cmd_vel`` (DDS ``rt/cmd_vel``): the stream is the heartbeat. A Twist has no time-to-live, so the base's
  own cmd_vel timeout (its driver's watchdog) is what stops it when voxedge dies: it must be set (README, ROS 2).
- A ROS base has no arming. This link keeps the firmware's states for it: it starts DISARMED and publishes zeros
  until an operator arms; ``estop()`` publishes a zero Twist at once and latches ESTOP (zeros, arming refused)
  until ``clear_failsafe()``, after which it is DISARMED again and needs a new, explicit arm. ``disconnect()``
  publishes zeros before it leaves.
- ``/odom`` (``nav_msgs/Odometry``) becomes ``telemetry`` (``firmware_bridge.values.Telemetry``): pose x, y and
  the heading from the quaternion, wheel speeds from the twist and the wheel base; no battery (None). Telemetry
  is None until the first odometry arrives, and ages like the MCU's (the health rules report it stale).
- ``is_connected`` is True while something on the domain subscribes to ``/cmd_vel`` (the base is listening).
- ``publish_command(decision)`` publishes each heard command as JSON (``std_msgs/String``) on
  ``/voxedge/command``; ``publish_image`` a JPEG camera frame as ``sensor_msgs/CompressedImage``
  (``edge.ros2.camera``).

QoS as ROS 2's defaults (``rmw_qos_profile_default``): reliable, volatile, keep last 10, for ``/cmd_vel`` and
``/voxedge/command`` and the camera. ``/odom`` is read best-effort, which matches both reliable and best-effort publishers.
The domain is ``domain_id``, else ``ROS_DOMAIN_ID``, else 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from firmware_bridge.errors import InvalidValueError, NotConnectedError
from firmware_bridge.spec import CONST, Gripper, Op, Reason, Result, State
from firmware_bridge.values import ControlResult, McuCounters, Outcome, Telemetry

CMD_VEL = "/cmd_vel"
ODOM = "/odom"
COMMAND = "/voxedge/command"
HISTORY_DEPTH = 10  # ROS 2's default QoS: keep last 10
DOMAIN_ID_MAX = 232  # the largest domain id DDS's default port mapping allows
INSTALL_HINT = "pip install 'voxedge[ros2]' (or pip install cyclonedds)"


def default_domain() -> int:
    """``ROS_DOMAIN_ID`` when set (as ROS 2 reads it), else 0."""
    text = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not text:
        return 0
    try:
        return check_domain(int(text))
    except ValueError as exc:
        raise InvalidValueError(f"ROS_DOMAIN_ID={text!r}: {exc}") from None


def check_domain(domain_id: int) -> int:
    if not 0 <= int(domain_id) <= DOMAIN_ID_MAX:
        raise ValueError(f"a ROS 2 domain id is in 0..{DOMAIN_ID_MAX}, not {domain_id}")
    return int(domain_id)


def yaw(qx: float, qy: float, qz: float, qw: float) -> float:
    """The heading (rotation about z) of a unit quaternion, in (-pi, pi]."""
    return math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))


@dataclass(frozen=True)
class Ros2LinkStats:
    """The link's counters (the service's state API and metrics read ``as_dict()``)."""

    connected: bool
    domain_id: int
    subscribers: int  # readers of /cmd_vel matched now
    twists_sent: int
    zeros_held: int  # non-zero setpoints published as zeros (disarmed or e-stopped)
    setpoints_clamped: int
    estops_sent: int
    odometry_received: int
    commands_sent: int
    images_sent: int

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return dataclasses.asdict(self)


def _default_qos():
    """ROS 2's default QoS (rmw_qos_profile_default): reliable, volatile, keep last 10."""
    from cyclonedds.core import Policy, Qos

    return Qos(Policy.Reliability.Reliable(max_blocking_time=100_000_000), Policy.Durability.Volatile,
               Policy.History.KeepLast(HISTORY_DEPTH))


def _resolved(op: Op, outcome: Outcome, result: Result | None, detail: str, control_id: int) -> Future:
    f: Future = Future()
    f.set_result(ControlResult(op, control_id, outcome, result, 1, detail))
    return f


class Ros2Link:
    """The robot link over ROS 2 topics; see the module docstring."""

    def __init__(self, domain_id: int | None = None, *, cmd_vel: str = CMD_VEL, odom: str = ODOM,
                 command: str = COMMAND, max_linear_m_s: float = CONST["MAX_LINEAR_M_S"],
                 max_angular_rad_s: float = CONST["MAX_ANGULAR_RAD_S"],
                 wheel_base_m: float = CONST["WHEEL_BASE_M"], frame_id: str = "base_link") -> None:
        self.domain_id = default_domain() if domain_id is None else check_domain(domain_id)
        self.topics = {"cmd_vel": cmd_vel, "odom": odom, "command": command}
        self.max_linear_m_s, self.max_angular_rad_s = float(max_linear_m_s), float(max_angular_rad_s)
        self.wheel_base_m = float(wheel_base_m)
        self.frame_id = frame_id
        self._lock = threading.Lock()
        self._types = None  # edge.ros2.types, once connected
        self._dds = None  # (participant, cmd_vel writer, command writer, odom reader, waitset) while connected
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state, self._reason = State.DISARMED, Reason.NONE
        self._odom: Telemetry | None = None
        self._last_cmd = (0.0, 0.0)
        self._ids = 0
        self._n = dict(twists_sent=0, zeros_held=0, setpoints_clamped=0, estops_sent=0, odometry_received=0,
                       commands_sent=0, images_sent=0)
        self._image_writers: dict = {}  # ROS topic -> DataWriter, made on first use

    # -- lifecycle ------------------------------------------------------------------
    def connect(self) -> Ros2Link:
        """Join the DDS domain: the /cmd_vel and /voxedge/command writers and the /odom reader."""
        if self._dds is not None:
            return self
        try:
            from cyclonedds.core import (
                InstanceState,
                Policy,
                Qos,
                ReadCondition,
                SampleState,
                ViewState,
                WaitSet,
            )
            from cyclonedds.domain import DomainParticipant
            from cyclonedds.pub import DataWriter
            from cyclonedds.sub import DataReader
            from cyclonedds.topic import Topic

            from edge.ros2 import types as T
        except ImportError as exc:
            raise NotConnectedError(f"the ROS 2 link needs cyclonedds: {INSTALL_HINT} ({exc})") from exc
        default = _default_qos()
        sensor = Qos(Policy.Reliability.BestEffort, Policy.Durability.Volatile, Policy.History.KeepLast(HISTORY_DEPTH))
        participant = DomainParticipant(self.domain_id)
        cmd_vel = DataWriter(participant, Topic(participant, T.topic(self.topics["cmd_vel"]), T.Twist), qos=default)
        command = DataWriter(participant, Topic(participant, T.topic(self.topics["command"]), T.String), qos=default)
        odom = DataReader(participant, Topic(participant, T.topic(self.topics["odom"]), T.Odometry), qos=sensor)
        waitset = WaitSet(participant)
        waitset.attach(ReadCondition(odom, SampleState.NotRead | ViewState.Any | InstanceState.Any))
        with self._lock:
            self._dds = (participant, cmd_vel, command, odom, waitset)
            self._types = T
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_odom, args=(odom, waitset), name="ros2-odom", daemon=True)
        self._thread.start()
        self._publish(0.0, 0.0)
        return self

    def disconnect(self) -> None:
        """Publish zeros, disarm, leave the domain. Idempotent."""
        if self._dds is None:
            return
        try:
            self._publish(0.0, 0.0)
        except Exception:  # leaving anyway: the base's own cmd_vel timeout stops it
            pass
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        with self._lock:
            participant = self._dds[0]
            self._dds = None
            self._image_writers = {}
            if self._state is State.ARMED:
                self._state = State.DISARMED
        participant.__del__()  # deletes the participant and everything in it now, not at garbage collection

    def __enter__(self) -> Ros2Link:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"Ros2Link(domain={self.domain_id}, connected={self.is_connected})"

    @property
    def is_connected(self) -> bool:
        """True while a reader of /cmd_vel (the base) is matched."""
        dds = self._dds
        if dds is None:
            return False
        try:
            return dds[1].get_publication_matched_status().current_count > 0
        except Exception:
            return False

    # -- motion ---------------------------------------------------------------------
    def send_setpoint(self, linear_m_s: float, angular_rad_s: float, ttl_s: float = 0.25) -> bool:
        """Publish the setpoint as a Twist now (zeros unless armed); the ttl has no place in a Twist.

        Raises:
            InvalidValueError: a value is not finite.
            NotConnectedError: ``connect()`` was never called (or ``disconnect()`` was).
        """
        v, w = float(linear_m_s), float(angular_rad_s)
        if not (math.isfinite(v) and math.isfinite(w)):
            raise InvalidValueError(f"setpoint ({linear_m_s!r} m/s, {angular_rad_s!r} rad/s) is not finite")
        cv = min(max(v, -self.max_linear_m_s), self.max_linear_m_s)
        cw = min(max(w, -self.max_angular_rad_s), self.max_angular_rad_s)
        with self._lock:
            if (cv, cw) != (v, w):
                self._n["setpoints_clamped"] += 1
            if self._state is not State.ARMED:
                if cv or cw:
                    self._n["zeros_held"] += 1
                cv = cw = 0.0
        self._publish(cv, cw)
        return True

    def _publish(self, v: float, w: float) -> None:
        dds = self._dds
        if dds is None:
            raise NotConnectedError("the ROS 2 link is not connected: call connect() first")
        T = self._types
        dds[1].write(T.Twist(linear=T.Vector3(x=v), angular=T.Vector3(z=w)))
        with self._lock:
            self._n["twists_sent"] += 1
            self._last_cmd = (v, w)

    # -- controls (resolved at once: there is no one to acknowledge them) -------------------
    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def estop(self) -> Future:
        """Publish zeros now and latch ESTOP: zeros only, arming refused, until ``clear_failsafe()``."""
        with self._lock:
            self._state, self._reason = State.ESTOP, Reason.ESTOP
            self._n["estops_sent"] += 1
        self._publish(0.0, 0.0)
        return _resolved(Op.ESTOP, Outcome.DELIVERED, Result.OK, "e-stop latched: zero Twists on "
                         f"{self.topics['cmd_vel']} until the failsafe is cleared", self._next_id())

    def arm(self) -> Future:
        with self._lock:
            if self._dds is None:
                return _resolved(Op.ARM, Outcome.FAILED, None, "the ROS 2 link is not connected", self._ids)
            if self._state is State.ESTOP:
                return _resolved(Op.ARM, Outcome.REFUSED, Result.REFUSED_ESTOP,
                                 "e-stop latched: clear the failsafe first, then arm", self._ids)
            self._state, self._reason = State.ARMED, Reason.NONE
        return _resolved(Op.ARM, Outcome.DELIVERED, Result.OK, f"armed: setpoints go to {self.topics['cmd_vel']}",
                         self._next_id())

    def disarm(self) -> Future:
        with self._lock:
            if self._state is State.ARMED:
                self._state = State.DISARMED
        return _resolved(Op.DISARM, Outcome.DELIVERED, Result.OK, "disarmed: zero Twists only", self._next_id())

    def clear_failsafe(self) -> Future:
        """Leave ESTOP for DISARMED (arming is a separate, explicit step)."""
        with self._lock:
            if self._state is State.ESTOP:
                self._state, self._reason = State.DISARMED, Reason.NONE
        return _resolved(Op.CLEAR_FAILSAFE, Outcome.DELIVERED, Result.OK, "failsafe cleared: arm to drive",
                         self._next_id())

    def gripper(self, open: bool) -> Future:
        op = Op.GRIPPER_OPEN if open else Op.GRIPPER_CLOSE
        return _resolved(op, Outcome.REFUSED, Result.UNKNOWN_OP, "the ROS 2 link has no gripper", self._next_id())

    # -- the recognised command -------------------------------------------------------
    def publish_command(self, decision) -> None:
        """A decision listener (``Runtime.add_decision_listener``): each heard utterance as JSON on /voxedge/command."""
        if getattr(decision, "kind", "utterance") != "utterance":
            return
        dds = self._dds
        if dds is None:
            return
        summary = decision.summary() if callable(getattr(decision, "summary", None)) else dict(decision)
        dds[2].write(self._types.String(data=json.dumps(_jsonable(summary), default=str, allow_nan=False)))
        with self._lock:
            self._n["commands_sent"] += 1

    def publish_image(self, jpeg: bytes, wall_s: float, topic: str = "/camera/image_raw/compressed",
                      frame_id: str = "camera") -> None:
        """One camera frame, JPEG-encoded, as a ``sensor_msgs/CompressedImage`` (``edge.ros2.camera``)."""
        dds = self._dds
        if dds is None:
            raise NotConnectedError("the ROS 2 link is not connected: call connect() first")
        T = self._types
        with self._lock:
            writer = self._image_writers.get(topic)
        if writer is None:
            from cyclonedds.pub import DataWriter
            from cyclonedds.topic import Topic

            writer = DataWriter(dds[0], Topic(dds[0], T.topic(topic), T.CompressedImage), qos=_default_qos())
            with self._lock:
                writer = self._image_writers.setdefault(topic, writer)
        writer.write(T.CompressedImage(header=T.Header(stamp=T.stamp(wall_s), frame_id=frame_id), format="jpeg",
                                       data=jpeg))
        with self._lock:
            self._n["images_sent"] += 1

    # -- state ------------------------------------------------------------------------
    @property
    def telemetry(self) -> Telemetry | None:
        """The latest odometry as telemetry, with this link's arming state; None before the first."""
        with self._lock:
            t = self._odom
            if t is None:
                return None
            v, w = self._last_cmd
            half = w * self.wheel_base_m / 2.0
            return dataclasses.replace(t, state=self._state, reason=self._reason, motor_left_m_s=v - half,
                                       motor_right_m_s=v + half)

    @property
    def stats(self) -> Ros2LinkStats:
        dds = self._dds
        subscribers = 0
        if dds is not None:
            try:
                subscribers = dds[1].get_publication_matched_status().current_count
            except Exception:
                pass
        with self._lock:
            return Ros2LinkStats(connected=subscribers > 0, domain_id=self.domain_id, subscribers=subscribers,
                                 **self._n)

    def _read_odom(self, reader, waitset) -> None:
        from cyclonedds.util import duration

        while not self._stop.is_set():
            waitset.wait(duration(milliseconds=100))
            for sample in reader.take(N=32):
                if isinstance(sample, self._types.Odometry):  # not an InvalidSample (a writer went away)
                    self._on_odom(sample)

    def _on_odom(self, msg) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        v, w = msg.twist.twist.linear.x, msg.twist.twist.angular.z
        half = w * self.wheel_base_m / 2.0
        stamp_ms = msg.header.stamp.sec * 1000 + msg.header.stamp.nanosec // 1_000_000
        with self._lock:
            self._n["odometry_received"] += 1
            n = self._n["odometry_received"]
            counters = McuCounters(frames_ok=n, crc_errors=0, malformed=0, oversize=0, stale_dropped=0,
                                   out_of_order=0, duplicates=0, seq_gaps=0, watchdog_trips=0,
                                   setpoints_applied=self._n["twists_sent"], rejected=0, controls_executed=0)
            self._odom = Telemetry(
                x_m=p.x, y_m=p.y, theta_rad=yaw(q.x, q.y, q.z, q.w), wheel_left_m_s=v - half,
                wheel_right_m_s=v + half, motor_left_m_s=0.0, motor_right_m_s=0.0, battery_v=None,
                state=self._state, reason=self._reason, gripper=Gripper.UNKNOWN, session=True, schema_ok=True,
                last_setpoint_seq=self._n["twists_sent"], counters=counters, mcu_time_ms=stamp_ms, seq=n,
                received_at=time.monotonic())


def _jsonable(value):
    """``value`` with NaN and infinities as None (they are not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
