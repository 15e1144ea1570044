"""edge.sensors as a package: lazy imports, one clock, the factories and `voxedge devices`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest

from edge import sensors
from edge.sensors import clock
from edge.sensors.cli import add_parsers, run_devices


def test_importing_sensors_loads_no_backend_dependency():
    code = (
        "import sys, edge.sensors as s\n"
        "heavy = [m for m in ('cv2', 'pyaudio', 'sim', 'soxr', 'scipy', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "s.make_microphone  # factories are light too\n"
        "import edge.sensors.cli\n"
        "heavy = [m for m in ('cv2', 'pyaudio', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_backends_load_on_attribute_access_and_never_import_torch():
    code = (
        "import sys, edge.sensors as s\n"
        "for name in s.__all__: getattr(s, name)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with pytest.raises(AttributeError, match="no attribute 'Kinect'"):
        sensors.Kinect  # noqa: B018


def test_one_monotonic_clock():
    assert clock.now is time.monotonic


def test_error_tree():
    for name in ("CameraError", "MicrophoneError", "DeviceNotConnectedError", "DeviceAlreadyConnectedError"):
        assert issubclass(getattr(sensors, name), sensors.SensorError)
    assert issubclass(sensors.StaleFrameError, sensors.CameraError)
    assert issubclass(sensors.AudioRangeError, sensors.MicrophoneError)
    assert issubclass(sensors.CameraConfigError, ValueError)


def test_devices_command(capsys):
    parser = argparse.ArgumentParser(prog="voxedge")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devices", "--json"])
    assert args.func is run_devices
    assert args.func(args) == 0
    found = json.loads(capsys.readouterr().out)
    assert set(found) == {"cameras", "audio_inputs", "audio_error"}
    for cam in found["cameras"]:
        assert cam["path"].startswith("/dev/video")
    for dev in found["audio_inputs"]:
        assert dev["channels"] >= 1 and dev["default_rate_hz"] > 0
    assert args.func(parser.parse_args(["devices"])) == 0
    text = capsys.readouterr().out
    assert "Cameras (V4L2):" in text and "Audio inputs (PortAudio):" in text
