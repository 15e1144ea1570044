"""Sensors of the robot: cameras and microphones, stamped on one monotonic clock.

Cameras fill a ``FrameBuffer`` (latest frame + ~3 s history) from a reader
thread; microphones fill an ``AudioRing`` (16 kHz mono, ~30 s, sample-indexed
and mapped to time). Build them by type through ``make_camera`` /
``make_microphone``; backend classes are importable from here too, but their
modules (and OpenCV, PyAudio, ``sim``) load only on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from edge.sensors import clock
from edge.sensors.audio_ring import SAMPLE_RATE_HZ, AudioRing
from edge.sensors.camera import CAMERA_TYPES, Camera, CameraConfig, CameraMode, CameraStats, make_camera
from edge.sensors.errors import (
    AudioDeviceNotFoundError,
    AudioRangeError,
    AudioTimeError,
    CameraConfigError,
    CameraError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    FrameNotInHistoryError,
    MicrophoneConfigError,
    MicrophoneError,
    NoFrameError,
    SensorError,
    StaleFrameError,
)
from edge.sensors.frame_buffer import Frame, FrameBuffer
from edge.sensors.microphone import (
    MICROPHONE_TYPES,
    Microphone,
    MicrophoneConfig,
    MicrophoneStats,
    make_microphone,
)

# Backend names resolved on first attribute access (PEP 562), so importing the
# package never imports a backend's dependencies.
_LAZY = {
    "OpenCVCamera": "edge.sensors.camera_opencv",
    "OpenCVCameraConfig": "edge.sensors.camera_opencv",
    "jetson_csi_pipeline": "edge.sensors.camera_opencv",
    "PyAudioMicrophone": "edge.sensors.microphone_pyaudio",
    "PyAudioMicrophoneConfig": "edge.sensors.microphone_pyaudio",
    "list_input_devices": "edge.sensors.microphone_pyaudio",
    "WavMicrophone": "edge.sensors.microphone_wav",
    "WavMicrophoneConfig": "edge.sensors.microphone_wav",
}

__all__ = [
    "CAMERA_TYPES", "MICROPHONE_TYPES", "SAMPLE_RATE_HZ", "AudioDeviceNotFoundError", "AudioRangeError",
    "AudioRing", "AudioTimeError", "Camera", "CameraConfig", "CameraConfigError", "CameraError",
    "CameraMode", "CameraStats", "DeviceAlreadyConnectedError", "DeviceNotConnectedError", "Frame",
    "FrameBuffer", "FrameNotInHistoryError", "Microphone", "MicrophoneConfig", "MicrophoneConfigError",
    "MicrophoneError", "MicrophoneStats", "NoFrameError", "OpenCVCamera", "OpenCVCameraConfig",
    "PyAudioMicrophone", "PyAudioMicrophoneConfig", "SensorError",
    "StaleFrameError", "WavMicrophone", "WavMicrophoneConfig",
    "clock", "jetson_csi_pipeline", "list_input_devices", "make_camera", "make_microphone",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge.sensors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
