"""The one clock every sensor sample and frame is stamped with.

``time.monotonic`` never jumps with wall-clock changes (NTP, a user setting
the date), so intervals between stamps are real durations, and camera frames
and audio samples captured on different threads can be matched by time. Tests
and other modules use ``clock.now`` rather than calling ``time`` directly, so
there is exactly one time base to reason about.
"""

from __future__ import annotations

import time

__all__ = ["now"]

now = time.monotonic
