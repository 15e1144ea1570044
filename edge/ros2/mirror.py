"""``MirroredLink``: the robot's own link (serial or simulated) with its motion also published on ROS 2.

``voxedge serve --ros2`` beside a serial (or sim) link: the firmware link still drives the robot and stays the
only authority on arming, e-stop and the gripper; each setpoint the actuator sends it is published as well as a
``geometry_msgs/Twist`` on ``/cmd_vel`` through a ``Ros2Link``, so ROS 2 tools (rviz, Foxglove, ``ros2 bag``, a
second base that follows) see what the robot is told. (``--link ros2`` instead drives a ROS 2 base alone.)

The mirror never sends more than the robot is allowed to do:

- a setpoint goes out as given only while the robot's own telemetry says ARMED; otherwise (disarmed, e-stopped,
  in failsafe, no telemetry yet) the Twist is zeros, at the same 20 Hz, so the stream stays the heartbeat;
- ``estop()`` reaches the robot first, then latches the ROS 2 side (zeros until ``clear_failsafe()``);
- a ROS 2 failure never reaches the robot's link: it is counted (``mirror_errors``) and logged, and the robot
  goes on.

Everything else (``telemetry``, ``stats``, ``is_connected``, ``gripper``, ...) is the robot link's own, so the
runtime, the health rules, the state API and the metrics see the firmware link as without the mirror.
"""

from __future__ import annotations

import logging
import threading

from firmware_bridge.spec import State

log = logging.getLogger("voxedge.ros2")


class MirroredLink:
    """``link`` (the robot's) with its setpoints and e-stops also published through ``ros2`` (a ``Ros2Link``)."""

    def __init__(self, link, ros2) -> None:
        self.link, self.ros2 = link, ros2
        self._lock = threading.Lock()
        self.mirror_errors = 0
        self._mirror("arm", ros2.arm)  # the ROS 2 side's own gate stays open: the robot's telemetry decides

    def __getattr__(self, name: str):  # telemetry, stats, is_connected, gripper, ...: the robot link's own
        if name in ("link", "ros2"):  # not set yet (during __init__): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.link, name)

    def __repr__(self) -> str:
        return f"MirroredLink({self.link!r}, {self.ros2!r})"

    def connect(self):
        """Connect the robot's link; the ROS 2 link is its owner's to connect and disconnect (``serve``)."""
        self.link.connect()
        return self

    def disconnect(self) -> None:
        self.link.disconnect()

    @property
    def armed(self) -> bool:
        """Whether the robot's latest telemetry says ARMED (the only state in which the mirror moves)."""
        telemetry = getattr(self.link, "telemetry", None)
        return telemetry is not None and telemetry.state is State.ARMED

    def send_setpoint(self, linear_m_s: float, angular_rad_s: float, ttl_s: float = 0.25):
        sent = self.link.send_setpoint(linear_m_s, angular_rad_s, ttl_s)  # the robot first; its errors are its own
        v, w = (linear_m_s, angular_rad_s) if self.armed else (0.0, 0.0)
        self._mirror("setpoint", self.ros2.send_setpoint, v, w, ttl_s)
        return sent

    def estop(self):
        try:
            return self.link.estop()
        finally:
            self._mirror("e-stop", self.ros2.estop)

    def clear_failsafe(self):
        future = self.link.clear_failsafe()
        self._mirror("clear_failsafe", self.ros2.clear_failsafe)
        self._mirror("arm", self.ros2.arm)
        return future

    def _mirror(self, what: str, call, *args) -> None:
        try:
            call(*args)
        except Exception as exc:  # the robot never waits on, or fails because of, its ROS 2 copy
            with self._lock:
                self.mirror_errors += 1
                n = self.mirror_errors
            if n == 1 or n % 100 == 0:
                log.warning("ROS 2 mirror: %s failed (%d so far): %s", what, n, exc)
