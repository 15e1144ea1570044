"""ROS 2 message definitions (``ros2msg`` schema text) for ``voxedge record-mcap``.

Each schema is written as ``ros2 bag record`` writes it into an MCAP file: the
type's own ``.msg`` text, then each type it uses after a line of 80 ``=`` and
a ``MSG: pkg/Type`` line. Readers (Foxglove, ``ros2 bag``, ``mcap_ros2``)
decode the messages from this text alone, without the ROS packages installed.

The standard types are the ROS 2 (Humble and later) definitions, comments left
out. The audio types are those of ``audio_common_msgs`` (ros-drivers/audio_common,
ROS 2 branch), which ``audio_capture`` publishes and ``audio_play`` plays:
``AudioDataStamped`` carries the raw PCM bytes with a header, ``AudioInfo`` says
how to read them. Foxglove shows them in its Raw Messages panel (it has no audio
player); ``ros2 bag play`` needs ``audio_common_msgs`` installed to publish them.
"""

from __future__ import annotations

SEPARATOR = "=" * 80

TIME = "int32 sec\nuint32 nanosec\n"
HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"

_DEPENDENCIES = {
    "builtin_interfaces/Time": TIME,
    "std_msgs/Header": HEADER,
    "audio_common_msgs/AudioData": "uint8[] data\n",
}


def _with(text: str, *deps: str) -> str:
    """A message's text followed by the definitions of the types it uses (``deps``, short names)."""
    parts = [text.rstrip("\n")]
    for dep in deps:
        parts.append(f"{SEPARATOR}\nMSG: {dep}\n{_DEPENDENCIES[dep].rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
AUDIO_DATA_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"

MSGDEFS = {
    COMPRESSED_IMAGE: _with("std_msgs/Header header\nstring format\nuint8[] data\n",
                            "std_msgs/Header", "builtin_interfaces/Time"),
    STRING: "string data\n",
    AUDIO_DATA_STAMPED: _with("std_msgs/Header header\naudio_common_msgs/AudioData audio\n",
                              "std_msgs/Header", "builtin_interfaces/Time", "audio_common_msgs/AudioData"),
    AUDIO_INFO: "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\nstring coding_format\n",
}
