"""Source names (edge.sources): jetson-inference's URIs and the old bare forms read into one typed Source,
and the sensor specs serve builds from them (edge.settings)."""

from __future__ import annotations

import pytest

from edge.settings import CameraSettings, MicrophoneSettings
from edge.sources import SourceError, camera_source, link_source, microphone_source


@pytest.mark.parametrize("text, scheme, location", [
    ("csi://0", "csi", "0"),
    ("v4l2:///dev/video0", "v4l2", "/dev/video0"),
    ("v4l2://1", "v4l2", "1"),
    ("file://clip.mp4", "file", "clip.mp4"),
    ("file:///data/clip.mp4", "file", "/data/clip.mp4"),
    ("rtsp://cam.local:554/stream", "rtsp", "rtsp://cam.local:554/stream"),
    ("sim://", "sim", ""),
    # the old forms
    ("0", "v4l2", "0"),
    ("/dev/video2", "v4l2", "/dev/video2"),
    ("clip.mp4", "file", "clip.mp4"),
    ("videotestsrc ! videoconvert ! appsink", "gst", "videotestsrc ! videoconvert ! appsink"),
    ("sim", "sim", ""),
])
def test_camera_names(text, scheme, location):
    s = camera_source(text)
    assert (s.scheme, s.location, s.text) == (scheme, location, text)


@pytest.mark.parametrize("text, message", [
    ("ftp://x/clip.mp4", "unknown scheme ftp://; use csi://N"),
    ("csi://left", "csi:// takes the sensor's port number"),
    ("v4l2://video0", "v4l2:// takes a device path or index"),
    ("file://", "names no file"),
    ("", "is empty"),
])
def test_bad_camera_names_say_what_works(text, message):
    with pytest.raises(SourceError, match=message):
        camera_source(text)


@pytest.mark.parametrize("text, scheme, location", [
    ("alsa://hw:1", "pyaudio", "hw:1"),  # PyAudio names ALSA cards "... (hw:1,0)": a name part
    ("pyaudio://3", "pyaudio", "3"),
    ("wav://cmd.wav", "wav", "cmd.wav"),
    ("sim://", "sim", ""),
    (None, "pyaudio", ""),
    ("USB", "pyaudio", "USB"),
    ("2", "pyaudio", "2"),
    ("take1.WAV", "wav", "take1.WAV"),
    ("sim", "sim", ""),
])
def test_microphone_names(text, scheme, location):
    s = microphone_source(text)
    assert (s.scheme, s.location) == (scheme, location)


def test_bad_microphone_and_link_names():
    with pytest.raises(SourceError, match="unknown scheme pulse://.*alsa://NAME"):
        microphone_source("pulse://default")
    with pytest.raises(SourceError, match="names no WAV file"):
        microphone_source("wav://")
    with pytest.raises(SourceError, match="unknown scheme tcp://.*serial:///dev/robot"):
        link_source("tcp://robot:9000")


def test_link_names():
    assert link_source(None) is None and link_source("  ") is None
    assert (link_source("serial:///dev/robot").location, link_source("/dev/ttyACM0").location) == \
        ("/dev/robot", "/dev/ttyACM0")
    assert link_source("sim").sim and link_source("sim://").sim and not link_source("/dev/robot").sim


def test_camera_specs_for_opencv():
    spec = CameraSettings(camera_source("csi://1"), 1920, 1080, 30.0).spec()
    assert spec.type == "opencv" and spec.options["kind"] == "gstreamer"
    assert "nvarguscamerasrc sensor-id=1" in spec.options["source"] and "width=1920,height=1080" in \
        spec.options["source"]
    spec = CameraSettings(camera_source("v4l2:///dev/video0"), 640, 480, 15.0).spec()
    assert dict(spec.options) == {"source": "/dev/video0", "kind": "v4l2", "width": 640, "height": 480, "fps": 15.0}
    assert dict(CameraSettings(camera_source("0")).spec().options) == {"source": 0, "kind": "v4l2"}
    assert dict(CameraSettings(camera_source("file://a.mp4")).spec().options) == {"source": "a.mp4", "kind": "file"}
    url = "rtsp://cam/s"
    assert dict(CameraSettings(camera_source(url)).spec().options) == {"source": url, "kind": "url"}
    assert CameraSettings(camera_source("sim://")).spec().type == "sim"


def test_microphone_specs():
    assert dict(MicrophoneSettings(microphone_source("wav://c.wav")).spec().options) == {"path": "c.wav", "loop": True}
    assert dict(MicrophoneSettings(microphone_source("alsa://hw:1")).spec().options) == {"device": "hw:1"}
    assert dict(MicrophoneSettings(microphone_source("4")).spec().options) == {"device": 4}
    assert MicrophoneSettings(microphone_source(None)).spec().options == {}


def test_a_file_camera_spec_opens_a_real_video(tmp_path):
    """file:// reaches OpenCV as a file: the spec builds a camera that reads a real video's frames."""
    import cv2
    import numpy as np

    from edge.sensors import make_camera

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    spec = CameraSettings(camera_source(f"file://{path}")).spec()
    with make_camera(spec.type, **spec.options) as cam:
        frame = cam.read()
    assert frame.image.shape[:2] == (48, 64)
