"""The camera contract: lifecycle, one reader thread per camera, health statistics, factory.

A ``Camera`` owns one reader thread that pulls frames from its backend,
stamps them with ``edge.sensors.clock.now`` at capture, converts them to RGB
once and pushes them into a ``FrameBuffer`` (latest frame + ~3 s history).
The thread watches the stream's health: identical content for
``freeze_frames`` frames marks it *frozen*; no new frame for
``stall_timeout_s`` marks it *missing*; a read or open error closes the
device and reopens it after an exponential backoff, and
``max_consecutive_failures`` errors in a row mark the camera *failed* (the
thread ends and ``read()`` raises with the last error).

Backends implement three hooks, called from the reader thread only (and
``_open_impl`` once from ``connect()``): ``_open_impl`` (open the device,
raise on failure), ``_read_impl`` (block for one frame, return ``(rgb, t)``
or ``None`` at the end of a stream, raise on failure) and ``_close_impl``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edge.sensors import clock
from edge.sensors.errors import (
    CameraConfigError,
    CameraError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    NoFrameError,
)
from edge.sensors.frame_buffer import DEFAULT_HISTORY_S, DEFAULT_MAX_FRAMES, Frame, FrameBuffer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CAMERA_TYPES", "Camera", "CameraConfig", "CameraMode", "CameraStats", "make_camera"]

log = logging.getLogger(__name__)

# --- Defaults -------------------------------------------------------------------------------
# Identical consecutive frames that mean "frozen": 0.8 s at 15 fps, 0.4 s at 30 fps. A working sensor never
# repeats an image bit for bit (it has noise), so a short run already means a stuck driver or source; the
# robot must not drive on a picture that stopped (issue 16: detection within 1 s at 15 fps).
DEFAULT_FREEZE_FRAMES = 12
# A picture this dark (mean of 0..255) for DARK_FRAMES frames in a row is "dark": lens covered, no light,
# or a sensor sending zeros. The robot does not drive on it either; a few frames suffice (0.2 s at 15 fps),
# so the hold comes before the policy would give the target up as lost on black pictures.
DARK_MEAN_LEVEL = 8.0
DARK_FRAMES = 3
DEFAULT_STALL_TIMEOUT_S = 1.0         # no new frame for this long means "missing"
DEFAULT_MAX_CONSECUTIVE_FAILURES = 10 # errors in a row (reads or reopens) before giving up
DEFAULT_RECONNECT_BACKOFF_S = 0.1     # first wait before reopening; doubles per failure
DEFAULT_RECONNECT_BACKOFF_MAX_S = 2.0 # ... up to this
DEFAULT_FIRST_FRAME_TIMEOUT_S = 5.0   # connect() waits this long for the first frame
JOIN_TIMEOUT_S = 3.0                  # disconnect() waits this long for the reader thread
FIRST_FRAME_POLL_S = 0.05             # connect() checks this often whether the reader gave up
DROP_GAP_PERIODS = 1.5                # a gap longer than this many frame periods counts drops
FPS_WINDOW_S = 1.0                    # measured fps is over the frames of the last second

# Camera type -> "module:Class"; modules are imported only when that type is made.
CAMERA_TYPES: dict[str, str] = {
    "opencv": "edge.sensors.camera_opencv:OpenCVCamera",
    "sim": "simrobot.camera:SimCamera",  # the simulated robot's (edge never imports it)
}


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise CameraConfigError(f"{name}={value!r}; use a positive number" + (" or None" if allow_none else ""))


def _count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CameraConfigError(f"{name}={value!r}; use an int >= {minimum}")


@dataclass(kw_only=True)
class CameraConfig:
    """Settings every camera shares (backends add their own fields).

    Attributes:
        history_s: seconds of frame history kept behind the latest frame.
        max_frames: hard cap on buffered frames.
        freeze_frames: this many consecutive identical frames mark the camera
            frozen (0 disables the check).
        stall_timeout_s: no new frame for this long marks the camera missing.
        max_consecutive_failures: read/reopen errors in a row before the
            camera is marked failed and its reader thread ends.
        reconnect_backoff_s: first wait before reopening after an error.
        reconnect_backoff_max_s: the wait doubles per failure up to this.
        first_frame_timeout_s: connect() waits this long for the first frame
            and fails if none comes; None returns right after opening.
    """

    history_s: float = DEFAULT_HISTORY_S
    max_frames: int = DEFAULT_MAX_FRAMES
    freeze_frames: int = DEFAULT_FREEZE_FRAMES
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES
    reconnect_backoff_s: float = DEFAULT_RECONNECT_BACKOFF_S
    reconnect_backoff_max_s: float = DEFAULT_RECONNECT_BACKOFF_MAX_S
    first_frame_timeout_s: float | None = DEFAULT_FIRST_FRAME_TIMEOUT_S

    def __post_init__(self) -> None:
        _positive("history_s", self.history_s)
        _count("max_frames", self.max_frames, 1)
        _count("freeze_frames", self.freeze_frames, 0)
        if self.freeze_frames == 1:
            raise CameraConfigError("freeze_frames=1 would call every frame frozen; use 0 (off) or >= 2")
        _positive("stall_timeout_s", self.stall_timeout_s)
        _count("max_consecutive_failures", self.max_consecutive_failures, 1)
        _positive("reconnect_backoff_s", self.reconnect_backoff_s)
        _positive("reconnect_backoff_max_s", self.reconnect_backoff_max_s)
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            raise CameraConfigError(
                f"reconnect_backoff_max_s={self.reconnect_backoff_max_s!r} is below "
                f"reconnect_backoff_s={self.reconnect_backoff_s!r}"
            )
        _positive("first_frame_timeout_s", self.first_frame_timeout_s, allow_none=True)


@dataclass(frozen=True)
class CameraMode:
    """The mode a device actually granted (may differ from what was asked for)."""

    width: int
    height: int
    fps: float | None
    fourcc: str | None
    backend: str


@dataclass(frozen=True)
class CameraStats:
    """A snapshot of a camera's health.

    Attributes:
        frames: frames delivered since connect().
        fps: frame rate measured over the last second (0 when missing).
        reconnects: successful reopens after errors.
        read_errors: failed reads and reopens since connect().
        dropped_frames: frames the source skipped, estimated from gaps longer
            than ``DROP_GAP_PERIODS`` nominal frame periods.
        frozen: the last ``freeze_frames`` frames were identical.
        dark: the last ``DARK_FRAMES`` frames were black (mean level below ``DARK_MEAN_LEVEL``).
        missing: no new frame for more than ``stall_timeout_s`` (none arrives, or they arrive late).
        failed: the reader gave up after too many consecutive errors.
        ended: a finite source (a video file without loop) reached its end.
        last_error: the most recent error message, or None.
        latest_age_s: age of the latest frame in seconds, None before the first.
        mode: what the device granted, None until opened.
    """

    frames: int
    fps: float
    reconnects: int
    read_errors: int
    dropped_frames: int
    frozen: bool
    missing: bool
    failed: bool
    dark: bool
    ended: bool
    last_error: str | None
    latest_age_s: float | None
    mode: CameraMode | None


def _is_dark(image: np.ndarray) -> bool:
    """Mean level below DARK_MEAN_LEVEL, judged on every 8th pixel (a few microseconds at 640x480)."""
    return float(image[::8, ::8].mean()) < DARK_MEAN_LEVEL


class Camera(ABC):
    """A frame source with a reader thread and a FrameBuffer.

    ``is_connected`` is True between a successful ``connect()`` and
    ``disconnect()``, even if the reader later fails (see ``stats().failed``
    and ``read()``). Not reusable concurrently from several owners: one
    thread connects and disconnects it; any thread may read.
    """

    config_class: ClassVar[type[CameraConfig]] = CameraConfig

    def __init__(self, config: CameraConfig) -> None:
        if not isinstance(config, self.config_class):
            raise CameraConfigError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self._buffer = FrameBuffer(config.history_s, config.max_frames)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the counters below
        self._connected = False
        self._mode: CameraMode | None = None
        self._reset_counters()

    # --- identity --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Short human-readable description of the source, used in messages."""
        return type(self).__name__

    @property
    def buffer(self) -> FrameBuffer:
        """The FrameBuffer this camera's reader fills."""
        return self._buffer

    @property
    def mode(self) -> CameraMode | None:
        """The mode the device granted, or None before it was opened."""
        return self._mode

    @property
    def is_connected(self) -> bool:
        """True between a successful connect() and disconnect()."""
        return self._connected

    # --- lifecycle -------------------------------------------------------------------------

    def connect(self) -> Self:
        """Open the device and start the reader thread.

        Waits up to ``first_frame_timeout_s`` for the first frame (unless None).

        Raises:
            DeviceAlreadyConnectedError: already connected.
            CameraError: the device could not be opened or delivered no frame;
                the device is closed again before raising.
        """
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self.name} is already connected; disconnect() it first")
        self._reset_counters()
        self._buffer.clear()
        self._stop.clear()
        try:
            self._open_impl()
        except BaseException as exc:
            self._safe_close()
            if isinstance(exc, CameraError) or not isinstance(exc, Exception):
                raise
            raise CameraError(f"{self.name}: could not open the camera: {exc}") from exc
        self._connected_at = clock.now()
        self._thread = threading.Thread(target=self._reader, name=f"camera-reader[{self.name}]", daemon=True)
        self._thread.start()
        self._connected = True
        timeout = self.config.first_frame_timeout_s
        if timeout is not None and not self._wait_first_frame(timeout):
            waited = clock.now() - self._connected_at
            detail = self._failure_detail()
            self.disconnect()
            raise CameraError(
                f"{self.name} opened but delivered no frame (waited {waited:.1f} s, first_frame_timeout_s="
                f"{timeout:g}){detail}; check the source (cable, file contents, pipeline)"
            )
        return self

    def _wait_first_frame(self, timeout_s: float) -> bool:
        """Wait for the first frame; give up early if the reader thread has already ended."""
        deadline = clock.now() + timeout_s
        while True:
            remaining = deadline - clock.now()
            if remaining <= 0:
                return False
            try:
                self._buffer.wait_for(-1, min(FIRST_FRAME_POLL_S, remaining))
                return True
            except NoFrameError:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    return len(self._buffer) > 0

    def disconnect(self) -> None:
        """Stop the reader thread (bounded wait) and close the device.

        Raises:
            DeviceNotConnectedError: not connected.
            CameraError: the reader thread did not stop within JOIN_TIMEOUT_S
                (the device is then left open, since the thread may still use it).
        """
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name} is not connected")
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                self._connected = False
                raise CameraError(
                    f"{self.name}: the reader thread did not stop within {JOIN_TIMEOUT_S:g} s (blocked in a "
                    "device read); it is a daemon thread and ends with the process. Set read timeouts "
                    "on network sources"
                )
        self._connected = False
        self._safe_close()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        if self._connected:
            self.disconnect()

    # --- reading ---------------------------------------------------------------------------

    def read(self, max_age_s: float | None = None) -> Frame:
        """The latest frame from the buffer (never blocks).

        When the camera is frozen, the age checked against ``max_age_s`` is
        that of the content (the first of the identical frames), so a frozen
        feed goes stale like a stopped one.

        Raises:
            DeviceNotConnectedError: not connected.
            CameraError: the camera failed (too many consecutive errors).
            NoFrameError: no frame yet.
            StaleFrameError: the latest frame (or frozen content) is older than ``max_age_s``.
        """
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name} is not connected; call connect() first")
        with self._lock:
            failed, last_error, failures = self._failed, self._last_error, self._consecutive_failures
        if failed:
            raise CameraError(
                f"{self.name} stopped after {failures} consecutive errors; last error: {last_error}. "
                "Check the device/source, then disconnect() and connect() again"
            )
        return self._buffer.latest(max_age_s)  # a frozen picture's frames carry its age (Frame.content_t)

    def stats(self) -> CameraStats:
        """A consistent snapshot of the camera's health counters."""
        now = clock.now()
        with self._lock:
            last_t = self._last_t
            since = last_t if last_t is not None else self._connected_at
            missing = self._connected and since is not None and now - since > self.config.stall_timeout_s
            return CameraStats(
                frames=self._frames,
                fps=0.0 if missing else self._buffer.fps(FPS_WINDOW_S),
                reconnects=self._reconnects,
                read_errors=self._read_errors,
                dropped_frames=self._dropped,
                frozen=self._frozen,
                dark=self._dark_run >= DARK_FRAMES,
                missing=bool(missing),
                failed=self._failed,
                ended=self._ended,
                last_error=self._last_error,
                latest_age_s=None if last_t is None else now - last_t,
                mode=self._mode,
            )

    # --- backend hooks ---------------------------------------------------------------------

    @abstractmethod
    def _open_impl(self) -> None:
        """Open the device; raise (any exception) on failure. Sets ``self._mode`` where known."""

    @abstractmethod
    def _read_impl(self) -> tuple[np.ndarray, float] | None:
        """Block for the next frame: (RGB uint8 HxWx3, capture time), or None at end of stream.

        Raise on a failed read. Sleep only through ``self._stop.wait`` and
        return None promptly once ``self._stop`` is set.
        """

    @abstractmethod
    def _close_impl(self) -> None:
        """Release the device; must be safe to call when it is not open."""

    def _nominal_fps(self) -> float | None:
        """Expected frame rate, for counting dropped frames; None if unknown."""
        return self._mode.fps if self._mode is not None and self._mode.fps else None

    # --- internals -------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        with self._lock:
            self._frames = 0
            self._seq = 0
            self._reconnects = 0
            self._read_errors = 0
            self._dropped = 0
            self._consecutive_failures = 0
            self._frozen = False
            self._frozen_since: float | None = None
            self._identical_run = 0
            self._dark_run = 0
            self._failed = False
            self._ended = False
            self._last_error: str | None = None
            self._last_t: float | None = None
            self._last_image: np.ndarray | None = None
            self._connected_at: float | None = None

    def _safe_close(self) -> None:
        try:
            self._close_impl()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the error that led here
            log.warning("%s: error while closing: %s", self.name, exc)

    def _failure_detail(self) -> str:
        with self._lock:
            if self._last_error:
                return f" (last error: {self._last_error})"
            if self._ended:
                return " (the source ended before the first frame)"
        return ""

    def _record_failure(self, exc: BaseException, what: str) -> bool:
        """Count an error; True when the cap on consecutive failures is reached."""
        message = f"{what}: {type(exc).__name__}: {exc}"
        with self._lock:
            self._read_errors += 1
            self._consecutive_failures += 1
            self._last_error = message
            give_up = self._consecutive_failures >= self.config.max_consecutive_failures
            if give_up:
                self._failed = True
        if give_up:
            log.error("%s: giving up after %d consecutive errors; last: %s",
                      self.name, self.config.max_consecutive_failures, message)
        else:
            log.warning("%s: %s; reopening", self.name, message)
        return give_up

    def _accept(self, image: np.ndarray, t: float) -> None:
        """Stamp, health-check and publish one RGB frame."""
        image.flags.writeable = False  # shared with every reader
        nominal = self._nominal_fps()
        freeze_n = self.config.freeze_frames
        with self._lock:
            prev_t, prev = self._last_t, self._last_image
            if prev_t is not None and t < prev_t:
                t = prev_t  # never let a backend's stamp go backwards
            if prev_t is not None and nominal:
                gap_periods = (t - prev_t) * nominal
                if gap_periods > DROP_GAP_PERIODS:
                    self._dropped += round(gap_periods) - 1
            if freeze_n and prev is not None and prev.shape == image.shape and np.array_equal(prev, image):
                self._identical_run += 1
            else:
                self._identical_run = 1
                self._frozen_since = t
            self._dark_run = self._dark_run + 1 if _is_dark(image) else 0
            was_frozen = self._frozen
            self._frozen = bool(freeze_n) and self._identical_run >= freeze_n
            # Readers judge freshness by the content: a frozen feed's frames carry the time its picture
            # stopped changing (FrameBuffer.latest(max_age_s) then refuses them like old frames).
            content_t = self._frozen_since if self._frozen else t
            seq = self._seq
            self._seq += 1
            self._frames += 1
            self._consecutive_failures = 0
            self._last_t = t
            self._last_image = image
        if self._frozen and not was_frozen:
            log.warning("%s: frozen (%d identical frames)", self.name, freeze_n)
        self._buffer.push(Frame(image=image, t=t, seq=seq, content_t=content_t))

    def _reader(self) -> None:
        """Reader thread: read, publish, reopen with backoff after errors, give up at the cap."""
        cfg = self.config
        backoff = cfg.reconnect_backoff_s
        need_reopen = False
        while not self._stop.is_set():
            if need_reopen:
                if self._stop.wait(backoff):
                    break
                backoff = min(2.0 * backoff, cfg.reconnect_backoff_max_s)
                self._safe_close()
                try:
                    self._open_impl()
                except Exception as exc:  # noqa: BLE001 - any backend error means reopen
                    if self._record_failure(exc, "reopen failed"):
                        break
                    continue
                need_reopen = False
                with self._lock:
                    self._reconnects += 1
                log.info("%s: reopened", self.name)
            try:
                got = self._read_impl()
            except Exception as exc:  # noqa: BLE001 - any backend error means reopen
                if self._record_failure(exc, "read failed"):
                    break
                need_reopen = True
                continue
            if got is None:
                if not self._stop.is_set():
                    with self._lock:
                        self._ended = True
                    log.info("%s: end of stream", self.name)
                break
            image, t = got
            backoff = cfg.reconnect_backoff_s
            self._accept(image, t)


def make_camera(type: str, **config: Any) -> Camera:
    """Build a camera by type name ("opencv", "sim") from keyword configuration.

    The backend module is imported only here, so unused backends' packages
    (OpenCV, the simulator) are never loaded.

    Raises:
        CameraConfigError: unknown type or invalid configuration.
    """
    spec = CAMERA_TYPES.get(type)
    if spec is None:
        raise CameraConfigError(f"unknown camera type {type!r}; use one of {sorted(CAMERA_TYPES)}")
    module_name, _, class_name = spec.partition(":")
    cls: type[Camera] = getattr(importlib.import_module(module_name), class_name)
    cfg_cls = cls.config_class
    fields = sorted(f.name for f in dataclasses.fields(cfg_cls))
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise CameraConfigError(f"unknown {type!r} camera settings {unknown}; valid settings are {fields}")
    try:
        cfg = cfg_cls(**config)
    except TypeError as exc:
        raise CameraConfigError(f"bad {type!r} camera settings: {exc}") from exc
    return cls(cfg)
