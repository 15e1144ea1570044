"""OpenCV camera: V4L2 devices, GStreamer pipelines (Jetson CSI), video files and network streams.

The source kind is worked out from ``source`` (or given as ``kind``):

- ``v4l2``: an int index or ``/dev/videoN``. MJPG is requested by default
  (USB cameras deliver full-rate HD only compressed), the size is set before
  the frame rate (drivers pick the rates available for the current size), and
  the mode actually granted is read back and reported in ``mode``. The
  driver's queue is cut to one buffer so frames are never seconds old.
- ``gstreamer``: a pipeline string ending in ``appsink``, opened with
  ``cv2.CAP_GSTREAMER``; needs an OpenCV built with GStreamer (JetPack's is;
  the PyPI wheels are not). ``jetson_csi_pipeline`` builds the usual CSI one.
- ``file``: a video file, paced at its own frame rate (``realtime``) or read
  as fast as possible, optionally looping.
- ``url``: ``rtsp://``, ``http(s)://`` ... through FFmpeg, with open/read timeouts.

Frames are stamped right after the device hands them over (``grab``), before
decoding, so decode time does not skew the timestamps; file frames are
stamped when they are emitted at their paced time.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge import sources
from edge.sensors import clock
from edge.sensors.camera import Camera, CameraConfig, CameraMode
from edge.sensors.errors import CameraConfigError, CameraError

__all__ = [
    "SOURCE_KINDS", "OpenCVCamera", "OpenCVCameraConfig", "gstreamer_available", "jetson_csi_pipeline",
    "list_video_devices", "source_kind",
]  # fmt: skip

log = logging.getLogger(__name__)

SOURCE_KINDS = ("auto", "v4l2", "gstreamer", "file", "url")
URL_SCHEMES = tuple(f"{scheme}://" for scheme in sources.URL_SCHEMES)
DEFAULT_FOURCC = "MJPG"
DEFAULT_OPEN_TIMEOUT_S = 5.0  # FFmpeg (files/URLs): give up opening a stream after this
DEFAULT_READ_TIMEOUT_S = 5.0  # FFmpeg: a read blocking longer than this fails (then reconnect)
FILE_FALLBACK_FPS = 30.0      # pacing rate for files that do not declare one
MAX_FPS = 1000.0
LATE_RESYNC_S = 0.5           # a paced file more than this behind schedule restarts its clock

# Jetson CSI defaults (IMX219 on a Jetson Nano / Orin Nano dev kit).
CSI_DEFAULT_WIDTH_PX = 1280
CSI_DEFAULT_HEIGHT_PX = 720
CSI_DEFAULT_FPS = 30


def source_kind(source: int | str) -> str:
    """Classify a camera source as "v4l2", "gstreamer", "url" or "file"."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return "v4l2"
    s = str(source).strip()
    if s.isdigit() or re.fullmatch(r"/dev/video\d+", s) or s.startswith("/dev/v4l/"):
        return "v4l2"
    if s.lower().startswith(URL_SCHEMES):
        return "url"
    if " ! " in s or s.endswith("appsink") or "appsink " in s:
        return "gstreamer"
    return "file"


def jetson_csi_pipeline(
    sensor_id: int = 0,
    width: int = CSI_DEFAULT_WIDTH_PX,
    height: int = CSI_DEFAULT_HEIGHT_PX,
    fps: int = CSI_DEFAULT_FPS,
    flip_method: int = 0,
    out_width: int | None = None,
    out_height: int | None = None,
) -> str:
    """The usual GStreamer pipeline for a Jetson CSI camera, ending in a latest-only BGR appsink.

    Args:
        sensor_id: CSI port (``nvarguscamerasrc sensor-id``).
        width, height, fps: sensor mode to capture (must be one the sensor offers).
        flip_method: ``nvvidconv flip-method`` (0 none, 2 rotate 180, ...).
        out_width, out_height: size after the hardware scaler (default: capture size).
    """
    for name, value in (("sensor_id", sensor_id), ("width", width), ("height", height), ("fps", fps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "sensor_id" else 1):
            raise CameraConfigError(f"jetson_csi_pipeline {name}={value!r}; use a positive int")
    if isinstance(flip_method, bool) or not isinstance(flip_method, int) or not 0 <= flip_method <= 7:
        raise CameraConfigError(f"flip_method={flip_method!r}; use 0..7 (nvvidconv flip-method)")
    if (out_width is None) != (out_height is None):
        raise CameraConfigError("give both out_width and out_height, or neither")
    ow, oh = (width, height) if out_width is None else (out_width, out_height)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip_method} ! video/x-raw,width={ow},height={oh},format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )


def gstreamer_available() -> bool:
    """Whether the installed OpenCV was built with GStreamer support."""
    import cv2

    match = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(match) and match.group(1).upper().startswith("YES")


def list_video_devices() -> list[dict[str, Any]]:
    """V4L2 video devices present on this machine: ``[{"path", "index", "name"}]``.

    Names come from sysfs; nothing is opened (a camera in use elsewhere stays untouched).
    Note that one USB camera often registers two nodes (video and metadata).
    """
    out = []
    for path in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
        m = re.fullmatch(r"/dev/video(\d+)", path)
        if not m:
            continue
        name = ""
        try:
            with open(f"/sys/class/video4linux/video{m.group(1)}/name", encoding="utf-8") as fh:
                name = fh.read().strip()
        except OSError:
            pass
        out.append({"path": path, "index": int(m.group(1)), "name": name})
    return out


def _fourcc_str(code: float) -> str | None:
    value = int(code)
    if value <= 0:
        return None
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() else None


@dataclass
class OpenCVCameraConfig(CameraConfig):
    """Settings of an OpenCV camera.

    Attributes:
        source: V4L2 index or ``/dev/videoN``, a GStreamer pipeline, a video
            file path, or a stream URL.
        kind: "auto" (from ``source``) or one of "v4l2", "gstreamer", "file", "url".
        width, height: requested size (V4L2); both or neither. None keeps the default.
        fps: requested frame rate (V4L2), or the pacing rate of a file
            (default: the file's own rate).
        fourcc: pixel format requested from a V4L2 device ("MJPG", "YUYV"); None keeps the default.
        realtime: pace a file at its frame rate (False: as fast as it decodes).
        loop: restart a file at its end instead of ending.
        buffer_size: V4L2 driver queue length (1 = latest only); None keeps the default.
        open_timeout_s, read_timeout_s: FFmpeg timeouts for files and URLs.
        capture_factory: ``(source, api_preference, params) -> capture``; the
            capture must behave like ``cv2.VideoCapture``. For tests and exotic
            sources; default ``cv2.VideoCapture``.
    """

    source: int | str
    kind: str = "auto"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = DEFAULT_FOURCC
    realtime: bool = True
    loop: bool = False
    buffer_size: int | None = 1
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    capture_factory: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.source, bool) or not isinstance(self.source, (int, str)) or self.source == "":
            raise CameraConfigError(
                f"source={self.source!r}; use a V4L2 index or /dev/videoN, a GStreamer pipeline, "
                "a video file path or a stream URL"
            )
        if isinstance(self.source, int) and self.source < 0:
            raise CameraConfigError(f"source={self.source!r}; V4L2 indexes start at 0 (see `voxedge devices`)")
        if self.kind not in SOURCE_KINDS:
            raise CameraConfigError(f"kind={self.kind!r}; use one of {SOURCE_KINDS}")
        if (self.width is None) != (self.height is None):
            raise CameraConfigError(f"width={self.width!r}, height={self.height!r}: give both or neither")
        for name in ("width", "height", "buffer_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise CameraConfigError(f"{name}={value!r}; use a positive int or None")
        if self.fps is not None:
            ok = isinstance(self.fps, (int, float)) and not isinstance(self.fps, bool)
            if not (ok and math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS):
                raise CameraConfigError(f"fps={self.fps!r}; use a number in (0, {MAX_FPS:g}] or None")
        if self.fourcc is not None and (not isinstance(self.fourcc, str) or len(self.fourcc) != 4):
            raise CameraConfigError(f"fourcc={self.fourcc!r}; use a four-character code like 'MJPG' or None")
        for name in ("open_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise CameraConfigError(f"{name}={value!r}; use a positive number of seconds")
        if self.capture_factory is not None and not callable(self.capture_factory):
            raise CameraConfigError("capture_factory must be callable: (source, api_preference, params) -> capture")

    @property
    def source_kind(self) -> str:
        """The resolved kind: "v4l2", "gstreamer", "file" or "url"."""
        return source_kind(self.source) if self.kind == "auto" else self.kind


def _default_factory(source: int | str, api: int, params: list[int]) -> Any:
    import cv2

    return cv2.VideoCapture(source, api, params)


class OpenCVCamera(Camera):
    """A camera read through ``cv2.VideoCapture`` (see the module docstring for sources)."""

    config_class = OpenCVCameraConfig

    def __init__(self, config: OpenCVCameraConfig) -> None:
        super().__init__(config)
        self.config: OpenCVCameraConfig = config
        self._kind = config.source_kind
        self._cap: Any = None
        self._file_fps: float | None = None
        self._pace_t0: float | None = None
        self._pace_n = 0

    @property
    def name(self) -> str:
        src = self.config.source
        if self._kind == "gstreamer":
            src = str(src).split(" ! ")[0] + " ! ..."
        return f"OpenCVCamera({self._kind}:{src})"

    # --- opening ---------------------------------------------------------------------------

    def _open_impl(self) -> None:
        import cv2

        cfg = self.config
        factory = cfg.capture_factory or _default_factory
        source: int | str = cfg.source
        params: list[int] = []
        if self._kind == "v4l2":
            api = cv2.CAP_V4L2
            if isinstance(source, str) and source.strip().isdigit():
                source = int(source)
            if isinstance(source, str) and not os.path.exists(source):
                raise CameraError(
                    f"V4L2 device {source!r} does not exist; `voxedge devices` lists the cameras present"
                )
        elif self._kind == "gstreamer":
            api = cv2.CAP_GSTREAMER
            if cfg.capture_factory is None and not gstreamer_available():
                raise CameraError(
                    f"this OpenCV ({cv2.__version__}, {os.path.dirname(cv2.__file__)}) was built without "
                    "GStreamer, so it cannot open a GStreamer pipeline. On a Jetson use JetPack's OpenCV "
                    "(the system python3-opencv; do not pip-install opencv-python over it), or use a "
                    "V4L2 device as source"
                )
        else:
            api = cv2.CAP_FFMPEG
            if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):  # OpenCV >= 4.5.2
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.open_timeout_s * 1000),
                          cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * 1000)]
            if self._kind == "file":
                path = os.path.abspath(os.path.expanduser(str(source)))
                if not os.path.isfile(path):
                    raise CameraError(
                        f"video file {str(source)!r} not found (looked at {path}); check the path, or "
                        "give a V4L2 device (0, /dev/video0), a GStreamer pipeline or a stream URL"
                    )
                source = path
        cap = factory(source, api, params)
        self._cap = cap
        if cap is None or not cap.isOpened():
            raise CameraError(self._open_hint())
        if self._kind == "v4l2":
            self._configure_v4l2(cap)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
        if fps is not None and not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            fps = None
        fourcc = _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC))
        if self._kind == "file":
            self._file_fps = fps or FILE_FALLBACK_FPS
            fps = cfg.fps or self._file_fps
            self._pace_t0, self._pace_n = None, 0  # the next frame starts a new schedule
        self._mode = CameraMode(width=width, height=height, fps=fps, fourcc=fourcc, backend=self._kind)
        if self._kind == "v4l2":
            self._warn_if_not_granted()

    def _configure_v4l2(self, cap: Any) -> None:
        import cv2

        cfg = self.config
        # Order matters: pixel format first (it limits sizes), size before the rate.
        if cfg.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps is not None:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        if cfg.buffer_size is not None:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, cfg.buffer_size)

    def _warn_if_not_granted(self) -> None:
        cfg, mode = self.config, self._mode
        assert mode is not None
        asked = []
        if cfg.width is not None and (mode.width, mode.height) != (cfg.width, cfg.height):
            asked.append(f"size {cfg.width}x{cfg.height} -> {mode.width}x{mode.height}")
        if cfg.fps is not None and (mode.fps is None or abs(mode.fps - cfg.fps) > 0.5):
            asked.append(f"fps {cfg.fps:g} -> {mode.fps}")
        if cfg.fourcc is not None and mode.fourcc is not None and mode.fourcc != cfg.fourcc:
            asked.append(f"format {cfg.fourcc} -> {mode.fourcc}")
        if asked:
            log.warning("%s granted a different mode than requested: %s (see `v4l2-ctl --list-formats-ext`)",
                        self.name, "; ".join(asked))

    def _open_hint(self) -> str:
        src = self.config.source
        if self._kind == "v4l2":
            return (f"could not open V4L2 camera {src!r}: check that it is plugged in (`voxedge devices`), "
                    "that this user may use it (group 'video') and that no other program holds it")
        if self._kind == "gstreamer":
            return (f"GStreamer could not start the pipeline {src!r}: test it with `gst-launch-1.0` "
                    "(replace appsink by fakesink) and check that it ends in appsink")
        if self._kind == "url":
            return (f"could not open stream {src!r} within {self.config.open_timeout_s:g} s: check the URL, "
                    "the network and that the server is up (try `ffprobe URL`)")
        return f"OpenCV could not decode video file {src!r}: check that it is a video (try `ffprobe FILE`)"

    def _close_impl(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    # --- reading ---------------------------------------------------------------------------

    def _read_impl(self) -> tuple[np.ndarray, float] | None:
        cap = self._cap
        if cap is None:
            raise CameraError(f"{self.name} is not open")
        if self._kind == "file":
            return self._read_file(cap)
        if not cap.grab():
            raise CameraError(f"{self.name}: grab() failed (device unplugged, stream dropped or timed out)")
        t = clock.now()
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            raise CameraError(f"{self.name}: retrieve() failed (frame could not be decoded)")
        return self._to_rgb(bgr), t

    def _read_file(self, cap: Any) -> tuple[np.ndarray, float] | None:
        import cv2

        ok, bgr = cap.read()
        if not ok or bgr is None:
            if not self.config.loop:
                return None
            # Rewind: seeking to 0 is exact for the containers we write; reopen if it is refused.
            if not cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                self._close_impl()
                self._open_impl()
                cap = self._cap
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise CameraError(f"{self.name}: no frame after rewinding the file for loop=True")
        rgb = self._to_rgb(bgr)
        if not self.config.realtime:
            return rgb, clock.now()
        fps = self.config.fps or self._file_fps or FILE_FALLBACK_FPS
        now = clock.now()
        if self._pace_t0 is None:
            self._pace_t0, self._pace_n = now, 0
        due = self._pace_t0 + self._pace_n / fps
        if now - due > LATE_RESYNC_S:  # decoding fell far behind: restart the schedule, do not burst
            self._pace_t0, self._pace_n, due = now, 0, now
        self._pace_n += 1
        if due > now and self._stop.wait(due - now):
            return None
        return rgb, clock.now()

    @staticmethod
    def _to_rgb(img: np.ndarray) -> np.ndarray:
        import cv2

        if img.ndim == 2:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        if img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        if img.shape[2] == 3:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        raise CameraError(f"unexpected frame shape {img.shape}; expected HxW, HxWx3 (BGR) or HxWx4 (BGRA)")

    def _nominal_fps(self) -> float | None:
        if self._kind == "file" and not self.config.realtime:
            return None
        return super()._nominal_fps()
