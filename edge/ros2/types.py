"""The ROS 2 message types voxedge speaks, as DDS structs (``cyclonedds.idl.IdlStruct``).

A ROS 2 message ``pkg/msg/Name`` is the DDS type ``pkg::msg::dds_::Name_`` (what rosidl_typesupport and the
rmw layers register), with the ``.msg`` file's fields, in its order, under their own names. A ROS topic
``/name`` is the DDS topic ``rt/name``. These are written from the ``.msg`` files of ROS 2 Humble
(builtin_interfaces, std_msgs, geometry_msgs, nav_msgs, sensor_msgs); a field added, dropped or moved would
make a real ROS 2 node see nothing, so ``tests/test_ros2.py`` checks names and order.
"""

# No ``from __future__ import annotations``: cyclonedds resolves the field annotations as objects.
from dataclasses import dataclass, field

try:
    from cyclonedds.idl import IdlStruct
    from cyclonedds.idl.types import array, float64, int32, sequence, uint8, uint32
except ImportError as exc:  # an optional extra: the rest of voxedge works without it
    raise ImportError(f"ROS 2 interop needs cyclonedds: pip install 'voxedge[ros2]' (or pip install cyclonedds): "
                      f"{exc}") from exc


def topic(ros_name: str) -> str:
    """The DDS topic of a ROS 2 topic: ``/cmd_vel`` -> ``rt/cmd_vel``."""
    return "rt/" + ros_name.lstrip("/")


def _covariance() -> list[float]:
    return [0.0] * 36


# -- builtin_interfaces, std_msgs ------------------------------------------------------------
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str = ""


# -- geometry_msgs ---------------------------------------------------------------------------
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
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0  # as the .msg file's default: the identity rotation


@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
class PoseWithCovariance(IdlStruct, typename="geometry_msgs::msg::dds_::PoseWithCovariance_"):
    pose: Pose = field(default_factory=Pose)
    covariance: array[float64, 36] = field(default_factory=_covariance)


@dataclass
class TwistWithCovariance(IdlStruct, typename="geometry_msgs::msg::dds_::TwistWithCovariance_"):
    twist: Twist = field(default_factory=Twist)
    covariance: array[float64, 36] = field(default_factory=_covariance)


# -- nav_msgs, sensor_msgs -------------------------------------------------------------------
@dataclass
class Odometry(IdlStruct, typename="nav_msgs::msg::dds_::Odometry_"):
    header: Header = field(default_factory=Header)
    child_frame_id: str = ""
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)
    twist: TwistWithCovariance = field(default_factory=TwistWithCovariance)


@dataclass
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header = field(default_factory=Header)
    format: str = ""  # "jpeg" or "png"
    data: sequence[uint8] = field(default_factory=list)


def stamp(wall_s: float) -> Time:
    """A ``builtin_interfaces/Time`` from seconds since the epoch (``time.time()``)."""
    sec = int(wall_s)
    return Time(sec=sec, nanosec=min(999_999_999, int(round((wall_s - sec) * 1e9))))
