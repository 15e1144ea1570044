"""Exceptions raised by the sensors (cameras and microphones).

Every error a caller can act on has its own type under ``SensorError``;
messages quote the offending value and say what to check or do. Lower-layer
errors (OpenCV, PortAudio, file I/O) are translated at the boundary with
``raise ... from exc`` so the original cause stays attached.

    SensorError
    +-- DeviceNotConnectedError      used before connect() / after disconnect()
    +-- DeviceAlreadyConnectedError  connect() twice
    +-- CameraError
    |   +-- CameraConfigError        bad configuration value (also a ValueError)
    |   +-- NoFrameError             no frame has arrived (yet)
    |   +-- StaleFrameError          the latest frame is older than asked for
    |   +-- FrameNotInHistoryError   a time outside the buffered history
    +-- MicrophoneError
        +-- MicrophoneConfigError    bad configuration value (also a ValueError)
        +-- AudioDeviceNotFoundError no or several input devices match
        +-- AudioRangeError          a sample range overwritten or not yet captured
        +-- AudioTimeError           block timestamps that go backwards
"""

from __future__ import annotations

__all__ = [
    "AudioDeviceNotFoundError", "AudioRangeError", "AudioTimeError", "CameraConfigError", "CameraError",
    "DeviceAlreadyConnectedError", "DeviceNotConnectedError", "FrameNotInHistoryError",
    "MicrophoneConfigError", "MicrophoneError", "NoFrameError", "SensorError", "StaleFrameError",
]  # fmt: skip


class SensorError(Exception):
    """Base class of every error raised by ``edge.sensors``."""


class DeviceNotConnectedError(SensorError):
    """A sensor was used before ``connect()`` or after ``disconnect()``."""


class DeviceAlreadyConnectedError(SensorError):
    """``connect()`` was called on a sensor that is already connected."""


class CameraError(SensorError):
    """A camera could not be opened, failed while reading, or was misused."""


class CameraConfigError(CameraError, ValueError):
    """A camera configuration value is invalid."""


class NoFrameError(CameraError):
    """No frame is available (none captured yet, or none arrived in time)."""


class StaleFrameError(CameraError):
    """The latest frame is older than the caller accepts."""

    def __init__(self, message: str, age_s: float) -> None:
        super().__init__(message)
        self.age_s = age_s


class FrameNotInHistoryError(CameraError):
    """A frame was asked for at a time outside the buffered history."""


class MicrophoneError(SensorError):
    """A microphone could not be opened, failed while capturing, or was misused."""


class MicrophoneConfigError(MicrophoneError, ValueError):
    """A microphone configuration value is invalid."""


class AudioDeviceNotFoundError(MicrophoneError):
    """No audio input device, or more than one, matches the requested name or index."""


class AudioRangeError(MicrophoneError):
    """A sample range was already overwritten in the ring or has not been captured yet."""


class AudioTimeError(MicrophoneError):
    """A block was written with a timestamp that does not increase."""
