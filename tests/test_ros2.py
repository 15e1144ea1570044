"""The ROS 2 link (edge.ros2) over DDS with cyclonedds: a second process subscribes as a ROS 2 node would.

The subscriber script declares the ROS 2 types itself (from the .msg files, not from edge.ros2.types), so a
type name or field layout that differs from ROS 2's shows up as no messages. Each test run uses its own DDS
domain id, so parallel runs do not see each other.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("cyclonedds", reason="ROS 2 interop needs cyclonedds: pip install 'voxedge[ros2]'")

from edge.actuator import MANUAL_DEADMAN_S, Actuator  # noqa: E402
from edge.policy import Policy  # noqa: E402
from edge.ros2 import types as T  # noqa: E402
from edge.ros2.link import Ros2Link, yaw  # noqa: E402
from edge.sources import SourceError, link_source, ros2_domain  # noqa: E402
from tests.bridge_fixtures import requires_gcc  # noqa: E402
from tests.service_fixtures import sim_bundle  # noqa: E402, F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]

# A second process, a stand-in for `ros2 topic echo`: its own copy of the ROS 2 types (as in the .msg files),
# subscribing with ROS 2's default QoS; one JSON line per message, until its stdin closes.
SUBSCRIBER = r'''
import json, sys, threading, time
from dataclasses import dataclass, field
from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

@dataclass
class Vector3(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0

@dataclass
class Twist(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)

@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str = ""

@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0

@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""

@dataclass
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header = field(default_factory=Header)
    format: str = ""
    data: sequence[uint8] = field(default_factory=list)

qos = Qos(Policy.Reliability.Reliable(max_blocking_time=100_000_000), Policy.Durability.Volatile,
          Policy.History.KeepLast(10))
p = DomainParticipant(int(sys.argv[1]))
cmd_vel = DataReader(p, Topic(p, "rt/cmd_vel", Twist), qos=qos)
command = DataReader(p, Topic(p, "rt/voxedge/command", String), qos=qos)
image = DataReader(p, Topic(p, "rt/camera/image_raw/compressed", CompressedImage), qos=qos)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print(json.dumps({"ready": True}), flush=True)
while not done.is_set():
    now = time.monotonic()
    for s in cmd_vel.take(N=64):
        if isinstance(s, Twist):
            print(json.dumps({"t": now, "twist": [s.linear.x, s.linear.y, s.linear.z, s.angular.x, s.angular.y,
                                                  s.angular.z]}), flush=True)
    for s in command.take(N=64):
        if isinstance(s, String):
            print(json.dumps({"t": now, "command": s.data}), flush=True)
    for s in image.take(N=64):
        if isinstance(s, CompressedImage):
            print(json.dumps({"t": now, "image": {"format": s.format, "frame_id": s.header.frame_id,
                                                  "sec": s.header.stamp.sec, "head": list(s.data[:2]),
                                                  "size": len(s.data)}}), flush=True)
    time.sleep(0.005)
'''


def _domain() -> int:
    return random.Random(os.getpid() ^ time.time_ns()).randint(100, 200)


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ros2():
    """(link, subscriber process, domain): the link connected, the subscriber matched to it."""
    domain = _domain()
    proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(domain)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    link = Ros2Link(domain)
    try:
        first = proc.stdout.readline()
        assert json.loads(first or "{}").get("ready"), proc.stderr.read()
        link.connect()
        _wait(lambda: link.is_connected, 10.0, "the subscriber to match /cmd_vel")
        yield link, proc, domain
    finally:
        link.disconnect()
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _messages(proc) -> list[dict]:
    out, err = proc.communicate(timeout=20)  # closes its stdin: the subscriber stops
    assert proc.returncode == 0, err[-2000:]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _drive(actuator, v: float, w: float, seconds: float) -> None:
    """Hold-to-move, as the panel does: refresh the manual setpoint well within its deadman."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        actuator.manual(v, w)
        time.sleep(0.1)


def test_the_type_names_are_ros2s():
    expected = {
        T.Twist: "geometry_msgs::msg::dds_::Twist_", T.Vector3: "geometry_msgs::msg::dds_::Vector3_",
        T.Point: "geometry_msgs::msg::dds_::Point_", T.Quaternion: "geometry_msgs::msg::dds_::Quaternion_",
        T.Pose: "geometry_msgs::msg::dds_::Pose_",
        T.PoseWithCovariance: "geometry_msgs::msg::dds_::PoseWithCovariance_",
        T.TwistWithCovariance: "geometry_msgs::msg::dds_::TwistWithCovariance_",
        T.String: "std_msgs::msg::dds_::String_", T.Header: "std_msgs::msg::dds_::Header_",
        T.Time: "builtin_interfaces::msg::dds_::Time_", T.Odometry: "nav_msgs::msg::dds_::Odometry_",
        T.CompressedImage: "sensor_msgs::msg::dds_::CompressedImage_",
    }
    for cls, name in expected.items():
        assert cls.__idl_typename__ == name
    fields = {  # as the .msg files, in order
        T.Odometry: ["header", "child_frame_id", "pose", "twist"], T.Header: ["stamp", "frame_id"],
        T.Time: ["sec", "nanosec"], T.CompressedImage: ["header", "format", "data"],
        T.PoseWithCovariance: ["pose", "covariance"], T.TwistWithCovariance: ["twist", "covariance"],
        T.Quaternion: ["x", "y", "z", "w"], T.Twist: ["linear", "angular"], T.Pose: ["position", "orientation"],
    }
    for cls, names in fields.items():
        assert list(cls.__annotations__) == names, cls
    assert len(T.PoseWithCovariance().covariance) == 36
    assert T.topic("/cmd_vel") == "rt/cmd_vel" and T.topic("/voxedge/command") == "rt/voxedge/command"
    # CDR little-endian, XCDR1 (0x0001), as rmw_cyclonedds_cpp and rmw_fastrtps_cpp publish: 4 + 6 doubles
    data = T.Twist(linear=T.Vector3(x=0.5), angular=T.Vector3(z=-1.0)).serialize()
    assert data[:2] == b"\x00\x01" and len(data) == 4 + 48
    img = T.CompressedImage.deserialize(T.CompressedImage(format="jpeg", data=list(b"\xff\xd8")).serialize())
    assert bytes(img.data) == b"\xff\xd8"


def test_link_names():
    assert link_source("ros2").scheme == "ros2" and link_source("ros2://").scheme == "ros2"
    assert ros2_domain(link_source("ros2://")) is None and ros2_domain(link_source("ros2://?domain=5")) == 5
    for bad in ("ros2://?domain=300", "ros2://robot", "ros2://?domain=x"):
        with pytest.raises(SourceError, match="domain"):
            link_source(bad)


def test_setpoints_stream_as_twists_at_20_hz_zeros_unless_armed_and_estop_latches(ros2):
    link, proc, _ = ros2
    actuator = Actuator(link, Policy())
    actuator.start()
    try:
        time.sleep(0.5)  # idle: zeros
        _drive(actuator, 0.11, 0.0, 0.5)  # not armed yet: zeros
        time.sleep(0.7)  # let go (the dead-man) before arming, or the held 0.11 would drive once armed
        actuator.request("arm")
        _wait(lambda: any(r["control"] == "arm" for r in actuator.state().control_results), 2.0, "the arm result")
        assert actuator.state().control_results[-1]["outcome"] == "delivered"
        t_drive = time.monotonic()
        _drive(actuator, 0.2, 0.5, 1.0)
        t_let_go = time.monotonic()
        time.sleep(0.8)  # the dead-man lets go: zeros again
        _drive(actuator, 0.25, 0.0, 0.3)
        t_estop = time.monotonic()
        actuator.estop()
        _drive(actuator, 0.33, 0.0, 0.3)
        actuator.release_estop()  # the actuator's latch only: the link stays latched until clear_failsafe
        _drive(actuator, 0.44, 0.0, 0.4)
        actuator.request("arm")
        _wait(lambda: len([r for r in actuator.state().control_results if r["control"] == "arm"]) == 2, 2.0,
              "the second arm result")
        assert actuator.state().control_results[-1]["outcome"] == "refused"
        _drive(actuator, 0.44, 0.0, 0.3)
    finally:
        actuator.stop()
    t_end = time.monotonic()
    twists = [m for m in _messages(proc) if "twist" in m]
    xs = {round(m["twist"][0], 3) for m in twists}
    assert not xs & {0.11, 0.33, 0.44}, "a setpoint went out while disarmed or e-stopped"
    assert all(m["twist"][1:5] == [0.0, 0.0, 0.0, 0.0] for m in twists)
    driving = [m for m in twists if m["twist"][0] == 0.2]
    assert driving and all(m["twist"][5] == 0.5 for m in driving)
    held_s = t_let_go - t_drive + MANUAL_DEADMAN_S  # driving, then held until the dead-man lets go
    assert 0.6 * 20 * held_s <= len(driving) <= 1.2 * 20 * held_s + 1, len(driving)  # at 20 Hz
    assert t_drive - 0.05 <= driving[0]["t"] and driving[-1]["t"] <= t_let_go + MANUAL_DEADMAN_S + 0.15
    # the heartbeat: about 20 Hz all along, zeros included
    times = [m["t"] for m in twists]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert 0.03 <= gaps[len(gaps) // 2] <= 0.07, gaps[len(gaps) // 2]
    assert gaps[-1] < 0.5, gaps[-1]
    assert len(twists) >= 0.6 * 20 * (t_end - times[0])
    after_let_go = [m for m in twists if t_let_go + 0.6 < m["t"] < t_let_go + 0.75]
    assert after_let_go and all(m["twist"][0] == 0.0 for m in after_let_go)
    after_estop = [m for m in twists if m["t"] > t_estop + 0.05]
    assert len(after_estop) >= 10 and all(m["twist"] == [0.0] * 6 for m in after_estop)
    assert link.stats.estops_sent == 1 and link.stats.zeros_held > 0


def test_odometry_becomes_telemetry_and_commands_are_published(ros2):
    from cyclonedds.core import Policy as QosPolicy
    from cyclonedds.core import Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.topic import Topic

    from edge.health import link_problem
    from edge.service.state import telemetry_json

    link, proc, domain = ros2
    assert link.telemetry is None
    p = DomainParticipant(domain)
    qos = Qos(QosPolicy.Reliability.Reliable(max_blocking_time=100_000_000), QosPolicy.Durability.Volatile,
              QosPolicy.History.KeepLast(10))
    odom = DataWriter(p, Topic(p, "rt/odom", T.Odometry), qos=qos)
    _wait(lambda: odom.get_publication_matched_status().current_count > 0, 10.0, "the link to match /odom")
    heading = 1.0
    msg = T.Odometry(header=T.Header(stamp=T.stamp(1700000000.25), frame_id="odom"), child_frame_id="base_link",
                     pose=T.PoseWithCovariance(pose=T.Pose(
                         position=T.Point(x=1.5, y=-0.5),
                         orientation=T.Quaternion(z=math.sin(heading / 2), w=math.cos(heading / 2)))),
                     twist=T.TwistWithCovariance(twist=T.Twist(linear=T.Vector3(x=0.3), angular=T.Vector3(z=1.0))))
    odom.write(msg)
    tel = _wait(lambda: link.telemetry, 5.0, "odometry to arrive")
    assert (tel.x_m, tel.y_m) == (1.5, -0.5) and tel.theta_rad == pytest.approx(heading)
    half = 1.0 * link.wheel_base_m / 2
    assert (tel.wheel_left_m_s, tel.wheel_right_m_s) == pytest.approx((0.3 - half, 0.3 + half))
    assert tel.state.name == "DISARMED" and tel.mcu_time_ms == 1700000000250
    j = telemetry_json(tel)
    assert j["battery_v"] is None and j["state"] == "DISARMED" and j["age_s"] < 1.0
    assert link_problem(link) is None
    link.arm().result()
    link.estop()
    assert link.telemetry.state.name == "ESTOP" and "ESTOP" in link_problem(link)
    assert link.stats.as_dict()["odometry_received"] == 1

    class Heard:  # what the runtime's decision listeners get (edge.fusion.Decision)
        kind = "utterance"

        def summary(self):
            return {"intent": "go_to", "confidence": 0.9, "accepted": True, "target_xy": (0.1, 0.2),
                    "presence": float("nan")}

    link.publish_command(Heard())
    _wait(lambda: link.stats.commands_sent == 1, 2.0, "the command")
    time.sleep(0.3)
    commands = [json.loads(m["command"]) for m in _messages(proc) if "command" in m]
    assert commands == [{"intent": "go_to", "confidence": 0.9, "accepted": True, "target_xy": [0.1, 0.2],
                         "presence": None}]
    assert yaw(0.0, 0.0, 0.0, 1.0) == 0.0


def test_serve_with_link_ros2_drives_through_the_ros2_link(monkeypatch, tmp_path):
    """``voxedge serve --link ros2://?domain=N``: the runtime gets a connected Ros2Link, which also publishes the
    heard commands, and leaves the domain when serve stops (the runtime, app and server are stand-ins)."""
    import edge.runtime
    import edge.service
    import edge.service.server
    from edge.cli import build_parser
    from edge.service import cli

    seen = {}

    class Runtime:
        def __init__(self, config, link=None, camera=None, microphone=None):
            seen["link"], seen["listeners"] = link, []

        def start(self):
            seen["connected_at_start"] = seen["link"]._dds is not None
            return self

        def stop(self):
            pass

        def add_decision_listener(self, listener):
            seen["listeners"].append(listener)

        camera = type("Camera", (), {"buffer": _Frames()})()

    class Server:
        url = estop_url = "http://127.0.0.1:1"
        grpc_address = None

        def __init__(self, app, service):
            pass

        def serve_forever(self):
            raise KeyboardInterrupt

        def stop(self):
            pass

    monkeypatch.setenv("VOXEDGE_TOKEN", "3f9c2a7be14d8065c1b9e7a2d40f6c83")
    monkeypatch.setattr(edge.runtime, "Runtime", Runtime)
    monkeypatch.setattr(edge.service, "create_app", lambda runtime, service: None)
    monkeypatch.setattr(edge.service.server, "Server", Server)
    monkeypatch.setattr(edge.service.server, "banner", lambda *a: "banner")
    monkeypatch.setattr(cli, "runtime_summary", lambda runtime: "summary")
    domain = _domain()
    args = build_parser().parse_args(["serve", str(tmp_path), "--link", f"ros2://?domain={domain}", "--camera", "0"])
    assert cli._cmd_serve(args) == 0
    link = seen["link"]
    assert isinstance(link, Ros2Link) and link.domain_id == domain and seen["connected_at_start"]
    assert link.publish_command in seen["listeners"]
    assert link._dds is None  # left the domain at the end


class _Frames:
    """A camera's frame buffer (edge.sensors.frame_buffer), with one new frame per ``latest()``."""

    def __init__(self):
        self.seq = 0

    def latest(self, max_age_s=None):
        import numpy as np

        self.seq += 1
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :32] = (255, 0, 0)
        return type("Frame", (), {"image": image, "seq": self.seq, "t": time.monotonic()})()


def test_camera_frames_go_out_as_compressed_images(ros2):
    from edge.ros2.camera import CameraPublisher

    link, proc, _ = ros2

    class Still(_Frames):  # the same frame again: not sent twice
        def latest(self, max_age_s=None):
            frame = super().latest()
            frame.seq = 7
            return frame

    publisher = CameraPublisher(link, Still())
    assert publisher.publish_once() == 7 and publisher.publish_once(7) == 7
    assert publisher.sent == 1 and link.stats.images_sent == 1
    publisher = CameraPublisher(link, _Frames(), fps=20).start()
    time.sleep(0.5)
    publisher.stop()
    assert publisher.errors == 0 and 3 <= publisher.sent <= 11
    time.sleep(0.3)
    images = [m["image"] for m in _messages(proc) if "image" in m]
    assert len(images) == 1 + publisher.sent
    first = images[0]
    assert first["format"] == "jpeg" and first["frame_id"] == "camera" and first["head"] == [0xFF, 0xD8]
    assert abs(first["sec"] - time.time()) < 60 and first["size"] > 100


def test_doctor_checks_a_ros2_base_on_its_domain():
    """doctor --link ros2://?domain=N looks for a reader of /cmd_vel on that DDS domain (none here)."""
    domain = random.randint(100, 200)
    r = subprocess.run([sys.executable, "-m", "edge.cli", "doctor", "--link", f"ros2://?domain={domain}", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    link = checks["robot link"]
    assert link["status"] == "FAIL" and "nothing on the DDS domain reads /cmd_vel" in link["detail"], link


class _Robot:
    """The robot's own link as the mirror sees it: a telemetry state, and what it was told."""

    def __init__(self):
        from firmware_bridge.spec import State

        self.state, self.sent, self.estops, self.connected = State.DISARMED, [], 0, False

    @property
    def telemetry(self):
        return type("Telemetry", (), {"state": self.state})()

    def send_setpoint(self, v, w, ttl_s=0.25):
        self.sent.append((v, w))
        return True

    def estop(self):
        self.estops += 1
        return "estop-future"

    def clear_failsafe(self):
        return "clear-future"

    def gripper(self, open):
        return f"gripper-{open}"

    def connect(self):
        self.connected = True

    def disconnect(self):
        self.connected = False


def test_a_mirror_publishes_the_robots_setpoints_only_while_it_is_armed(ros2):
    """serve --ros2 beside a serial link (edge.ros2.mirror): the robot's link gets every setpoint as given; /cmd_vel
    gets it only while the robot's telemetry says ARMED, zeros otherwise, and an e-stop latches zeros there."""
    from edge.ros2.mirror import MirroredLink
    from firmware_bridge.spec import State

    link, proc, _ = ros2
    robot = _Robot()
    mirror = MirroredLink(robot, link)
    assert mirror.gripper(True) == "gripper-True" and mirror.telemetry.state is State.DISARMED  # the robot's own
    script = [(State.DISARMED, 0.11), (State.ARMED, 0.2), (State.ESTOP, 0.33)]
    for state, v in script:
        robot.state = state
        for _ in range(5):
            assert mirror.send_setpoint(v, 0.5) is True
            time.sleep(0.02)
    robot.state = State.ARMED  # the robot re-armed before the mirror's latch is cleared: still zeros
    assert mirror.estop() == "estop-future" and robot.estops == 1
    mirror.send_setpoint(0.44, 0.0)
    assert mirror.clear_failsafe() == "clear-future"
    mirror.send_setpoint(0.25, -0.1)
    # the runtime connects and disconnects the robot's link; the ROS 2 link is serve's to close
    assert mirror.connect() is mirror and robot.connected and mirror.disconnect() is None and not robot.connected
    assert link._dds is not None
    time.sleep(0.3)
    assert robot.sent == [(0.11, 0.5)] * 5 + [(0.2, 0.5)] * 5 + [(0.33, 0.5)] * 5 + [(0.44, 0.0), (0.25, -0.1)]
    twists = [m["twist"] for m in _messages(proc) if "twist" in m]
    sent = [(t[0], t[5]) for t in twists]
    expected = [(0.0, 0.0)] * 5 + [(0.2, 0.5)] * 5 + [(0.0, 0.0)] * 5 + [(0.0, 0.0)] * 2 + [(0.25, -0.1)]
    # the link's own zero on connect may go out before the subscriber matched
    assert sent[-len(expected):] == expected and len(sent) - len(expected) in (0, 1), sent
    assert mirror.mirror_errors == 0


def test_a_failing_ros2_side_never_reaches_the_robot(caplog):
    from edge.ros2.mirror import MirroredLink
    from firmware_bridge.spec import State

    class Broken:
        def __getattr__(self, name):
            def fail(*args):
                raise RuntimeError("DDS is gone")
            return fail

    robot = _Robot()
    robot.state = State.ARMED
    mirror = MirroredLink(robot, Broken())
    for _ in range(3):
        assert mirror.send_setpoint(0.1, 0.0) is True
    assert mirror.estop() == "estop-future" and mirror.clear_failsafe() == "clear-future"
    assert robot.sent == [(0.1, 0.0)] * 3 and robot.estops == 1
    assert mirror.mirror_errors == 1 + 3 + 1 + 2  # the arm at start, 3 setpoints, the e-stop, clear + arm
    assert "ROS 2 mirror" in caplog.text and "DDS is gone" in caplog.text


def test_the_ros2_setting_names_a_domain():
    from edge.settings import SettingsError, load

    assert load({"ros2": "ros2://?domain=7", "link": "sim"}).ros2.location == "?domain=7"
    assert load({"link": "sim"}, environ={"VOXEDGE_ROS2": "ros2://"}).ros2.scheme == "ros2"
    assert load({"link": "sim"}).ros2 is None
    for bad, why in (("serial:///dev/robot", "not a ROS 2 domain"), ("ros2://?domain=999", "0..232")):
        with pytest.raises(SettingsError, match=f"ros2.*{re.escape(why)}.*flag --ros2"):
            load({"ros2": bad, "link": "sim"})


@requires_gcc
def test_serve_sim_with_ros2_publishes_what_the_sim_robot_does(sim_bundle, tmp_path):  # noqa: F811
    """A real ``voxedge serve BUNDLE --sim --ros2 ros2://?domain=N`` and a second process subscribing as ROS 2
    would: zero Twists at 20 Hz until armed, the robot's own setpoints while it drives to a spoken object,
    zeros again after the e-stop; the heard command as JSON; the camera as JPEG."""
    from tests.serve_process import Serve, moving, request, until

    domain = _domain()
    proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(domain)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    serve = None
    try:
        assert json.loads(proc.stdout.readline() or "{}").get("ready"), proc.stderr.read()
        serve = Serve(str(sim_bundle.path), tmp_path / "state", "--precision", "fp32", "--ros2",
                      f"ros2://?domain={domain}").ready()
        assert any("the robot's setpoints also on /cmd_vel" in line and f"domain {domain}" in line
                   for line in serve.output), serve.output
        time.sleep(1.0)  # disarmed: zeros
        t_arm = time.monotonic()
        serve.arm()
        driving = serve.go_to()
        time.sleep(0.5)
        t_estop = time.monotonic()
        request(serve.url + "/api/estop", {})
        until(lambda: not moving(serve.state()), 2.0, "stopped")
        time.sleep(1.0)
    finally:
        if serve is not None:
            serve.stop()
    messages = _messages(proc)
    twists = [(m["t"], m["twist"]) for m in messages if "twist" in m]
    before = [tw for t, tw in twists if t < t_arm]
    assert len(before) >= 10 and all(tw == [0.0] * 6 for tw in before)
    moves = [tw for t, tw in twists if t_arm <= t < t_estop and tw[0] > 0]
    assert len(moves) >= 10, twists[-40:]  # the go_to, at 20 Hz
    assert max(tw[0] for tw in moves) <= 0.5 and driving["setpoint"]["linear_m_s"] > 0
    after = [tw for t, tw in twists if t > t_estop + 0.2]
    assert len(after) >= 10 and all(tw == [0.0] * 6 for tw in after)
    times = [t for t, _ in twists]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert 0.03 <= gaps[len(gaps) // 2] <= 0.07, gaps[len(gaps) // 2]
    commands = [json.loads(m["command"]) for m in messages if "command" in m]
    assert any(c["intent"] == "go_to" and c["accepted"] for c in commands), commands
    images = [m["image"] for m in messages if "image" in m]
    assert images and images[0]["format"] == "jpeg" and images[0]["head"] == [0xFF, 0xD8]
