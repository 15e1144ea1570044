"""Where the robot's camera, microphone and link come from, named as URIs.

The names follow jetson-inference's video sources (``csi://0``,
``v4l2:///dev/video0``, ``file://clip.mp4``, ``rtsp://...``), which Jetson users
already write, plus ``sim://`` for the simulated robot, ``alsa://hw:1`` for a
sound card, ``wav://cmd.wav`` for a recording played as a microphone and
``serial:///dev/robot`` for the firmware link (``ros2://`` for a ROS 2 base). The older bare forms still work
(``0``, ``/dev/video0``, a file path, a GStreamer pipeline, ``sim``, a device
name part, a ``.wav`` path, a serial path); each is read once here into a typed
``Source`` instead of being guessed at again where it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIM = "sim"
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")  # opened by OpenCV's FFmpeg as written
CAMERA_SCHEMES = ("csi", "v4l2", "file", "gst", "sim", *URL_SCHEMES)
MICROPHONE_SCHEMES = ("alsa", "pyaudio", "wav", "sim")
LINK_SCHEMES = ("serial", "sim", "ros2")
ROS2 = "ros2"  # a ROS 2 base over DDS (edge.ros2): ros2:// or ros2://?domain=N
_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$", re.IGNORECASE | re.DOTALL)


class SourceError(ValueError):
    """A source name that names nothing we can open; the message lists the forms that work."""


@dataclass(frozen=True)
class Source:
    """One parsed source: ``scheme`` (what kind of thing), ``location`` (which one) and the text as given."""

    scheme: str
    location: str
    text: str

    @property
    def sim(self) -> bool:
        return self.scheme == SIM


def _split(text: str) -> tuple[str, str] | None:
    m = _URI.match(text.strip())
    return (m.group(1).lower(), m.group(2)) if m else None


def _unknown(what: str, scheme: str, text: str, forms: str) -> SourceError:
    return SourceError(f"{what} source {text!r}: unknown scheme {scheme}://; use {forms}")


CAMERA_FORMS = ("csi://N (Jetson CSI port N), v4l2:///dev/videoN or v4l2://N, file://clip.mp4, rtsp://HOST/PATH "
                "(or http[s]://), gst://PIPELINE, sim://, or the old forms: an index, /dev/videoN, a file path or a "
                "GStreamer pipeline")


def camera_source(text: str | int) -> Source:
    """Read a camera name. Bare forms keep OpenCV's meaning: digits are a V4L2 index, a ``!`` chain is a pipeline."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not text.strip():
        raise SourceError(f"camera source {text!r} is empty; use {CAMERA_FORMS}")
    text = text.strip()
    parts = _split(text)
    if parts is None:
        if text == SIM:
            return Source(SIM, "", text)
        if text.isdigit() or re.fullmatch(r"/dev/video\d+", text) or text.startswith("/dev/v4l/"):
            return Source("v4l2", text, text)
        if " ! " in text or text.endswith("appsink"):
            return Source("gst", text, text)
        return Source("file", text, text)
    scheme, location = parts
    if scheme not in CAMERA_SCHEMES:
        raise _unknown("camera", scheme, text, CAMERA_FORMS)
    if scheme in URL_SCHEMES:
        return Source(scheme, text, text)
    if scheme == "csi" and not location.isdigit():
        raise SourceError(f"camera source {text!r}: csi:// takes the sensor's port number, e.g. csi://0")
    if scheme == "v4l2" and not (location.isdigit() or location.startswith("/dev/")):
        raise SourceError(f"camera source {text!r}: v4l2:// takes a device path or index, e.g. v4l2:///dev/video0")
    if scheme in ("file", "gst") and not location:
        raise SourceError(f"camera source {text!r} names no {'file' if scheme == 'file' else 'pipeline'}")
    return Source(scheme, location, text)


MICROPHONE_FORMS = ("alsa://NAME (a part of the device's name, e.g. alsa://hw:1 or alsa://USB), pyaudio://INDEX, "
                    "wav://command.wav, sim://, or the old forms: a device index, a part of its name, a .wav path")


def microphone_source(text: str | int | None) -> Source:
    """Read a microphone name; None or empty is the system's default input device."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return Source("pyaudio", "", "")
    text = str(text).strip()
    parts = _split(text)
    if parts is None:
        if text == SIM:
            return Source(SIM, "", text)
        if text.lower().endswith(".wav"):
            return Source("wav", text, text)
        return Source("pyaudio", text, text)  # an index or a part of the device's name
    scheme, location = parts
    if scheme not in MICROPHONE_SCHEMES:
        raise _unknown("microphone", scheme, text, MICROPHONE_FORMS)
    if scheme == "wav" and not location:
        raise SourceError(f"microphone source {text!r} names no WAV file, e.g. wav://command.wav")
    if scheme == "alsa":  # PyAudio lists ALSA cards by names that hold "hw:N,M": matched as a name part
        return Source("pyaudio", location, text)
    return Source(scheme, location, text)


LINK_FORMS = ("serial:///dev/robot (or the path alone), sim:// for the simulated robot, or ros2:// (ros2://?domain=N) "
              "for a ROS 2 base on /cmd_vel")


def link_source(text: str | None) -> Source | None:
    """Read the robot link's name; None when none is given."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    parts = _split(text)
    if parts is None:
        if text == ROS2:
            return Source(ROS2, "", text)
        return Source(SIM, "", text) if text == SIM else Source("serial", text, text)
    scheme, location = parts
    if scheme not in LINK_SCHEMES:
        raise _unknown("link", scheme, text, LINK_FORMS)
    if scheme == ROS2:
        ros2_domain(Source(scheme, location, text))  # checked here, at the settings, not when the robot starts
    if scheme == "serial" and not location:
        raise SourceError(f"link {text!r} names no serial port, e.g. serial:///dev/robot")
    return Source(scheme, location, text)


def ros2_domain(source: Source) -> int | None:
    """The DDS domain id a ``ros2://`` link names (``ros2://?domain=5``); None: ROS_DOMAIN_ID's, else 0."""
    location = source.location.strip().lstrip("/")
    if not location:
        return None
    m = re.fullmatch(r"\?domain=(\d{1,3})", location)
    if m is None or int(m.group(1)) > 232:
        raise SourceError(f"link {source.text!r}: use ros2:// or ros2://?domain=N with N in 0..232 (the DDS domain "
                          "id; without it, ROS_DOMAIN_ID's or 0)")
    return int(m.group(1))
