"""Camera frames and the thread-safe buffer that holds the latest ones.

One camera reader thread pushes; any number of threads read. The buffer keeps
the latest frame and a bounded, timestamped history (about ``history_s``
seconds, never more than ``max_frames`` frames), so the pipeline can pick the
frame that was on screen while a command was spoken.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.sensors import clock
from edge.sensors.errors import (
    CameraConfigError,
    CameraError,
    FrameNotInHistoryError,
    NoFrameError,
    StaleFrameError,
)

__all__ = ["DEFAULT_HISTORY_S", "DEFAULT_MAX_FRAMES", "Frame", "FrameBuffer"]

DEFAULT_HISTORY_S = 3.0       # seconds of history kept behind the latest frame
DEFAULT_MAX_FRAMES = 512      # hard cap on buffered frames whatever the frame rate
AT_TOLERANCE_PERIODS = 1.5    # at(t) accepts t this many frame intervals outside the history


@dataclass(frozen=True)
class Frame:
    """One captured image.

    Attributes:
        image: uint8 array [H, W, 3], RGB channel order. Treat it as read-only;
            the buffer hands the same array to every reader.
        t: capture time on ``edge.sensors.clock`` (``time.monotonic``), seconds.
        seq: frame number from the camera, increasing by one per captured frame.
        content_t: when this picture was first captured: earlier than ``t`` when the camera
            repeats an unchanged (frozen) image, None (the same as ``t``) otherwise.
    """

    image: np.ndarray
    t: float
    seq: int
    content_t: float | None = None

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise CameraError(f"Frame.image must be a uint8 HxWx3 RGB array, got {got}")
        if not math.isfinite(self.t):
            raise CameraError(f"Frame.t must be a finite monotonic time in seconds, got {self.t!r}")
        if isinstance(self.seq, bool) or not isinstance(self.seq, (int, np.integer)):
            raise CameraError(f"Frame.seq must be an int, got {self.seq!r}")
        object.__setattr__(self, "seq", int(self.seq))

    @property
    def age_s(self) -> float:
        """Seconds since capture."""
        return clock.now() - self.t

    @property
    def content_age_s(self) -> float:
        """Seconds since the picture last changed (``age_s`` unless the camera is frozen)."""
        return clock.now() - (self.t if self.content_t is None else self.content_t)


class FrameBuffer:
    """Thread-safe latest frame plus a bounded history ordered by capture time.

    Args:
        history_s: frames older than this behind the latest frame are dropped.
        max_frames: hard cap on the number of frames kept (oldest dropped first).
    """

    def __init__(self, history_s: float = DEFAULT_HISTORY_S, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        if not (isinstance(history_s, (int, float)) and math.isfinite(history_s) and history_s > 0):
            raise CameraConfigError(f"history_s={history_s!r}; use a positive number of seconds (e.g. 3.0)")
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise CameraConfigError(f"max_frames={max_frames!r}; use a positive int")
        self.history_s = float(history_s)
        self.max_frames = max_frames
        self._frames: deque[Frame] = deque(maxlen=max_frames)
        self._cond = threading.Condition(threading.Lock())

    # --- writing ---------------------------------------------------------------------------

    def push(self, frame: Frame) -> None:
        """Add a frame; it becomes the latest and old frames fall out of the history.

        Raises:
            CameraError: ``frame`` is not a Frame, or it is older than the latest frame.
        """
        if not isinstance(frame, Frame):
            raise CameraError(f"FrameBuffer.push takes a Frame, got {type(frame).__name__}")
        with self._cond:
            if self._frames and frame.t < self._frames[-1].t:
                raise CameraError(
                    f"frame {frame.seq} has capture time {frame.t:.6f} s, before the latest frame's "
                    f"{self._frames[-1].t:.6f} s; stamp frames with edge.sensors.clock.now at capture"
                )
            self._frames.append(frame)
            horizon = frame.t - self.history_s
            while self._frames[0].t < horizon:
                self._frames.popleft()
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop every frame."""
        with self._cond:
            self._frames.clear()

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def latest(self, max_age_s: float | None = None) -> Frame:
        """The most recent frame.

        Args:
            max_age_s: if given, refuse a frame captured more than this many seconds ago.

        Raises:
            NoFrameError: no frame has been pushed yet.
            StaleFrameError: the latest frame is older than ``max_age_s``.
        """
        with self._cond:
            if not self._frames:
                raise NoFrameError(
                    "no camera frame has arrived yet; check that the camera is connected and its "
                    "stats() show frames, or wait for the first frame (FrameBuffer.wait_for)"
                )
            frame = self._frames[-1]
        if max_age_s is not None:
            age = clock.now() - frame.t
            if age > max_age_s:
                raise StaleFrameError(
                    f"the latest frame (seq {frame.seq}) is {age:.3f} s old, more than max_age_s={max_age_s:g} s; "
                    "the camera may be stalled, unplugged or at the end of its file: check its stats() "
                    "(missing, frozen, last_error) and the cable/source",
                    age_s=age,
                )
            content_age = frame.content_age_s
            if content_age > max_age_s:
                raise StaleFrameError(
                    f"the camera is frozen: its picture has not changed for {content_age:.3f} s (more than "
                    f"max_age_s={max_age_s:g} s) although frames keep arriving; replug or restart the camera",
                    age_s=content_age,
                )
        return frame

    def wait_for(self, after_seq: int = -1, timeout_s: float = 1.0) -> Frame:
        """Block until a frame with ``seq > after_seq`` is the latest, and return it.

        Raises:
            NoFrameError: no such frame arrived within ``timeout_s``.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: bool(self._frames) and self._frames[-1].seq > after_seq, timeout_s)
            if not ok:
                raise NoFrameError(
                    f"no frame newer than seq {after_seq} arrived within {timeout_s:g} s; "
                    "check that the camera is connected and delivering (stats())"
                )
            return self._frames[-1]

    def at(self, t: float, tolerance_s: float | None = None) -> Frame:
        """The buffered frame whose capture time is nearest to ``t``.

        Args:
            t: a time on ``edge.sensors.clock``.
            tolerance_s: how far outside [oldest, latest] capture time ``t`` may
                lie; default ``AT_TOLERANCE_PERIODS`` median frame intervals.

        Raises:
            NoFrameError: the buffer is empty.
            FrameNotInHistoryError: ``t`` lies outside the history.
        """
        with self._cond:
            frames = list(self._frames)
        if not frames:
            raise NoFrameError("no camera frame has arrived yet; nothing to look up by time")
        times = [f.t for f in frames]
        if tolerance_s is None:
            tolerance_s = AT_TOLERANCE_PERIODS * float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        if t < times[0] - tolerance_s or t > times[-1] + tolerance_s:
            where = "older than the history" if t < times[0] else "after the latest frame"
            raise FrameNotInHistoryError(
                f"t={t:.6f} is {where}: the buffer spans [{times[0]:.6f}, {times[-1]:.6f}] "
                f"(now {clock.now():.6f}, history_s={self.history_s:g}); ask for times within the last "
                "history_s seconds, or enlarge history_s"
            )
        i = bisect.bisect_left(times, t)
        if i == 0:
            return frames[0]
        if i == len(frames):
            return frames[-1]
        return frames[i] if times[i] - t < t - times[i - 1] else frames[i - 1]

    def between(self, t0: float, t1: float) -> list[Frame]:
        """Buffered frames captured in [t0, t1], oldest first (empty if none).

        Raises:
            CameraError: ``t0 > t1``.
        """
        if t0 > t1:
            raise CameraError(f"between(t0={t0!r}, t1={t1!r}): t0 must not be after t1")
        with self._cond:
            return [f for f in self._frames if t0 <= f.t <= t1]

    def span_s(self) -> float:
        """Seconds between the oldest and the latest buffered frame (0 with fewer than two)."""
        with self._cond:
            return self._frames[-1].t - self._frames[0].t if len(self._frames) > 1 else 0.0

    def fps(self, window_s: float = 1.0) -> float:
        """Frame rate measured over the frames of the last ``window_s`` seconds (0 if unknown)."""
        with self._cond:
            if len(self._frames) < 2:
                return 0.0
            t_last = self._frames[-1].t
            recent = [f.t for f in self._frames if f.t >= t_last - window_s]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])
