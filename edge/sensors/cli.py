"""``voxedge devices``: list the cameras and audio input devices this machine offers.

Registered by ``edge.cli`` through ``add_parsers``; PyAudio is imported only
when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["add_parsers", "collect_devices", "run_devices"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the ``devices`` subcommand."""
    p = sub.add_parser(
        "devices",
        help="list cameras (/dev/video*) and audio input devices",
        description="List V4L2 cameras and PortAudio input devices, with the names and indexes that "
        "camera and microphone settings accept.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_devices)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence fd 2 while PortAudio probes ALSA/JACK, which print pages of noise there."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def collect_devices() -> dict[str, Any]:
    """``{"cameras": [...], "audio_inputs": [...], "audio_error": str | None}``."""
    from edge.sensors.camera_opencv import list_video_devices
    from edge.sensors.errors import MicrophoneError
    from edge.sensors.microphone_pyaudio import list_input_devices

    out: dict[str, Any] = {"cameras": list_video_devices(), "audio_inputs": [], "audio_error": None}
    try:
        with quiet_stderr():
            out["audio_inputs"] = list_input_devices()
    except (MicrophoneError, OSError) as exc:
        out["audio_error"] = str(exc)
    return out


def run_devices(args: argparse.Namespace) -> int:
    """Print the devices; returns 0."""
    found = collect_devices()
    if getattr(args, "json", False):
        print(json.dumps(found, indent=2))
        return 0
    print("Cameras (V4L2):")
    if not found["cameras"]:
        print("  none (no /dev/video*; a CSI camera on a Jetson is used through a GStreamer pipeline)")
    for cam in found["cameras"]:
        print(f"  {cam['path']:<14} {cam['name']}")
    print("Audio inputs (PortAudio):")
    if found["audio_error"]:
        print(f"  unavailable: {found['audio_error']}")
    elif not found["audio_inputs"]:
        print("  none")
    for dev in found["audio_inputs"]:
        mark = "*" if dev["is_default"] else " "
        print(f" {mark}[{dev['index']:>2}] {dev['name']:<40} {dev['channels']:>2} ch  "
              f"{dev['default_rate_hz']} Hz  ({dev['host_api']})")
    if found["audio_inputs"]:
        print("  (* = default; select with the microphone's device setting: an index or part of a name)")
    sys.stdout.flush()
    return 0
