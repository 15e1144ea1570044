"""OpenCVCamera through the real cv2.VideoCapture path on generated video files.

Each generated frame carries its frame number as eight black/white stripes
(bit 7 on the left) above a red band, so a test can read back which file
frame it got and that the colour order is RGB.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge.sensors import clock, make_camera
from edge.sensors.camera_opencv import (
    OpenCVCamera,
    OpenCVCameraConfig,
    gstreamer_available,
    jetson_csi_pipeline,
    source_kind,
)
from edge.sensors.errors import (
    CameraConfigError,
    CameraError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    NoFrameError,
    StaleFrameError,
)

W, H = 160, 120
BITS = 8
STRIPE_PX = W // BITS
BAND_ROWS = slice(96, 120)   # red band (BGR 0,0,255 in the file)
CODE_ROWS = slice(8, 80)


def _encode(n: int) -> np.ndarray:
    """A BGR frame showing ``n`` as stripes, with a red band below."""
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (n >> (BITS - 1 - b)) & 1:
            img[CODE_ROWS, b * STRIPE_PX:(b + 1) * STRIPE_PX] = 255
    img[BAND_ROWS] = (0, 0, 255)
    return img


def _decode(rgb: np.ndarray) -> int:
    """The frame number a camera frame (RGB) shows."""
    n = 0
    for b in range(BITS):
        cell = rgb[CODE_ROWS, b * STRIPE_PX + 4:(b + 1) * STRIPE_PX - 4]
        n = (n << 1) | int(cell.mean() > 128)
    return n


def _write_video(path, numbers, fps) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for n in numbers:
        writer.write(_encode(n))
    writer.release()
    return str(path)


FPS = 20.0
N_FRAMES = 90  # 4.5 s at 20 fps: longer than the 3 s history


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """Play a 4.5 s numbered video at real time once and record what the camera delivered."""
    path = _write_video(tmp_path_factory.mktemp("video") / "numbers.avi", range(N_FRAMES), FPS)
    threads_before = threading.active_count()
    cam = OpenCVCamera(OpenCVCameraConfig(source=path, realtime=True, history_s=3.0, stall_timeout_s=0.3))
    seen = []
    stats_mid = None
    t_connect = clock.now()
    cam.connect()
    try:
        mode = cam.mode
        last_seq = -1
        while True:
            try:
                frame = cam.buffer.wait_for(last_seq, timeout_s=0.5)
            except NoFrameError:
                break
            last_seq = frame.seq
            seen.append((frame, _decode(frame.image)))
            if frame.seq == 60:
                stats_mid = cam.stats()
        t_end = clock.now()
        history = cam.buffer.between(-1e9, 1e9)
        stats_at_end = cam.stats()
        stale_error = None
        time.sleep(0.35)
        try:
            cam.read(max_age_s=0.3)
        except StaleFrameError as exc:
            stale_error = exc
        stats_later = cam.stats()
        latest = cam.read()
    finally:
        cam.disconnect()
    return {
        "path": path, "mode": mode, "seen": seen, "history": history, "t_connect": t_connect,
        "t_end": t_end, "stats_mid": stats_mid, "stats_at_end": stats_at_end, "stats_later": stats_later, "stale_error": stale_error,
        "latest": latest, "threads_before": threads_before, "threads_after": threading.active_count(),
        "buffer": cam.buffer,
    }


def test_file_mode_is_reported(played):
    mode = played["mode"]
    assert (mode.width, mode.height) == (W, H)
    assert mode.fps == pytest.approx(FPS)
    assert mode.backend == "file"


def test_frames_arrive_in_order_with_monotonic_timestamps(played):
    seen = played["seen"]
    numbers = [n for _, n in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[-1] == N_FRAMES - 1
    assert len(numbers) >= N_FRAMES - 5  # the poller may miss a frame, the camera does not
    seqs = [f.seq for f, _ in seen]
    assert all(f.seq == n for f, n in seen)  # seq counts file frames one by one
    assert seqs == sorted(seqs)
    times = [f.t for f, _ in seen]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[0] >= played["t_connect"]


def test_frames_are_rgb_uint8_and_read_only(played):
    frame = played["seen"][0][0]
    assert frame.image.dtype == np.uint8 and frame.image.shape == (H, W, 3)
    band = frame.image[BAND_ROWS].reshape(-1, 3).mean(axis=0)
    assert band[0] > 200 and band[2] < 60  # red in RGB order: converted from BGR once
    assert not frame.image.flags.writeable


def test_real_time_pacing_matches_the_file_rate(played):
    history = played["history"]
    times = np.array([f.t for f in history])
    intervals = np.diff(times)
    assert np.median(intervals) == pytest.approx(1 / FPS, rel=0.1)
    duration = played["seen"][-1][0].t - played["seen"][0][0].t
    assert duration == pytest.approx((N_FRAMES - 1) / FPS, rel=0.05)
    mid = played["stats_mid"]
    assert mid.fps == pytest.approx(FPS, rel=0.15)
    assert not (mid.missing or mid.frozen or mid.ended) and mid.dropped_frames == 0


def test_history_is_bounded_to_three_seconds(played):
    history = played["history"]
    span = history[-1].t - history[0].t
    assert 2.8 <= span <= 3.0
    assert len(history) <= 3.0 * FPS + 1
    assert history[-1].seq == N_FRAMES - 1
    assert [f.seq for f in history] == list(range(history[0].seq, N_FRAMES))


def test_at_returns_the_frame_nearest_in_time(played):
    buf = played["buffer"]
    history = played["history"]
    for frame in history[5:-5:7]:
        assert buf.at(frame.t).seq == frame.seq
        assert buf.at(frame.t + 0.4 / FPS).seq == frame.seq
        assert buf.at(frame.t + 0.6 / FPS).seq == frame.seq + 1
    with pytest.raises(CameraError, match="older than the history"):
        buf.at(history[0].t - 1.0)


def test_end_of_file_ends_the_stream_and_frames_go_stale(played):
    assert played["stats_at_end"].ended
    assert played["stats_at_end"].frames == N_FRAMES
    assert played["stats_at_end"].read_errors == 0
    err = played["stale_error"]
    assert err is not None and err.age_s > 0.3
    assert "check its stats()" in str(err)
    later = played["stats_later"]
    assert later.missing and later.fps == 0.0 and later.latest_age_s > 0.3
    assert _decode(played["latest"].image) == N_FRAMES - 1  # without max_age the last frame is still there


def test_reader_thread_is_joined_on_disconnect(played):
    assert played["threads_after"] == played["threads_before"]


def test_loop_restarts_the_file(tmp_path):
    path = _write_video(tmp_path / "short.avi", range(10), 100.0)
    with OpenCVCamera(OpenCVCameraConfig(source=path, loop=True)) as cam:
        deadline = clock.now() + 5.0
        numbers = []
        last = -1
        while len(numbers) < 25 and clock.now() < deadline:
            f = cam.buffer.wait_for(last, 1.0)
            last = f.seq
            numbers.append(_decode(f.image))
        stats = cam.stats()
    assert numbers[:25] == [i % 10 for i in range(numbers[0], numbers[0] + 25)]
    assert not stats.ended and stats.read_errors == 0


def test_unpaced_file_reads_as_fast_as_it_decodes(tmp_path):
    path = _write_video(tmp_path / "fast.avi", range(60), 5.0)  # 12 s of video at 5 fps
    t0 = clock.now()
    with OpenCVCamera(OpenCVCameraConfig(source=path, realtime=False, max_frames=100, history_s=60)) as cam:
        while not cam.stats().ended and clock.now() - t0 < 5.0:
            time.sleep(0.01)
        frames = cam.buffer.between(-1e9, 1e9)
    assert clock.now() - t0 < 3.0
    assert [_decode(f.image) for f in frames] == list(range(60))


def test_frozen_video_is_detected_and_reads_go_stale(tmp_path):
    # 10 changing frames, the same frame 40 times (0.8 s at 50 fps), then changing again.
    numbers = list(range(10)) + [10] * 40 + list(range(11, 30))
    path = _write_video(tmp_path / "frozen.avi", numbers, 50.0)
    observed = []  # (file number, frozen, stale_read)
    with OpenCVCamera(OpenCVCameraConfig(source=path, freeze_frames=10)) as cam:
        last = -1
        while True:
            try:
                f = cam.buffer.wait_for(last, 0.5)
            except CameraError:
                break
            last = f.seq
            try:
                cam.read(max_age_s=0.3)
                stale = False
            except StaleFrameError as exc:
                stale = "frozen" in str(exc)
            observed.append((f.seq, _decode(f.image), cam.stats().frozen, stale))
    by_seq = {seq: (n, frozen, stale) for seq, n, frozen, stale in observed}
    # Frames 0..9 change: not frozen. The 10th identical frame (seq 19) and on: frozen. (Margins
    # of a few frames: the poller reads stats() a little after the frame it woke up for.)
    assert not any(by_seq[s][1] for s in by_seq if s < 15)
    assert all(by_seq[s][1] for s in by_seq if 21 <= s < 46)
    # Content older than 0.3 s (15 frames at 50 fps) while frozen: read(max_age_s) refuses it.
    assert any(by_seq[s][2] for s in by_seq if 40 <= s < 50)
    assert not any(by_seq[s][2] for s in by_seq if s < 20)
    # Changing content again: frozen clears.
    assert not any(by_seq[s][1] or by_seq[s][2] for s in by_seq if s >= 52)


def test_missing_file_is_a_clear_camera_error(tmp_path):
    before = threading.active_count()
    cam = OpenCVCamera(OpenCVCameraConfig(source=str(tmp_path / "nope.mp4")))
    with pytest.raises(CameraError, match=r"video file '.*nope\.mp4' not found"):
        cam.connect()
    assert not cam.is_connected
    assert threading.active_count() == before


def test_undecodable_file_is_a_clear_camera_error(tmp_path):
    path = tmp_path / "not_a_video.avi"
    path.write_bytes(b"this is not a video" * 100)
    with pytest.raises(CameraError, match="could not decode video file"):
        OpenCVCamera(OpenCVCameraConfig(source=str(path))).connect()


def test_missing_v4l2_device_is_a_clear_camera_error():
    with pytest.raises(CameraError, match=r"'/dev/video99' does not exist; `voxedge devices`"):
        OpenCVCamera(OpenCVCameraConfig(source="/dev/video99")).connect()


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer; the refusal path cannot be tested")
def test_gstreamer_pipeline_without_gstreamer_says_why():
    cam = OpenCVCamera(OpenCVCameraConfig(source=jetson_csi_pipeline()))
    with pytest.raises(CameraError, match="built without GStreamer.*JetPack's OpenCV"):
        cam.connect()


def test_jetson_csi_pipeline_string():
    p = jetson_csi_pipeline(sensor_id=1, width=1920, height=1080, fps=30, flip_method=2, out_width=640, out_height=480)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=1920,height=1080,framerate=30/1" in p
    assert "nvvidconv flip-method=2 ! video/x-raw,width=640,height=480,format=BGRx" in p
    assert p.endswith("videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
    assert source_kind(p) == "gstreamer"
    with pytest.raises(CameraConfigError, match="flip_method"):
        jetson_csi_pipeline(flip_method=9)


@pytest.mark.parametrize(
    ("source", "kind"),
    [(0, "v4l2"), ("2", "v4l2"), ("/dev/video0", "v4l2"), ("rtsp://10.0.0.2:8554/cam", "url"),
     ("http://host/stream.mjpg", "url"), ("videotestsrc ! appsink", "gstreamer"), ("clip.mp4", "file")],
)
def test_source_kind(source, kind):
    assert source_kind(source) == kind
    assert OpenCVCameraConfig(source=source).source_kind == kind


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"source": ""}, "source"), ({"source": -1}, "indexes start at 0"), ({"source": 0, "width": 640}, "both"),
     ({"source": 0, "fps": 0}, "fps"), ({"source": 0, "fourcc": "MJPEG"}, "four-character"),
     ({"source": 0, "kind": "usb"}, "kind"), ({"source": 0, "history_s": -1}, "history_s"),
     ({"source": 0, "freeze_frames": 1}, "freeze_frames"),
     ({"source": 0, "reconnect_backoff_s": 1.0, "reconnect_backoff_max_s": 0.5}, "backoff")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(CameraConfigError, match=match):
        OpenCVCameraConfig(**kwargs)


def test_factory_builds_opencv_camera_and_rejects_unknowns(tmp_path):
    path = _write_video(tmp_path / "f.avi", range(3), 10.0)
    cam = make_camera("opencv", source=path, realtime=False)
    assert isinstance(cam, OpenCVCamera) and cam.config.source == path
    with pytest.raises(CameraConfigError, match=r"unknown camera type 'usb'; use one of \['opencv', 'sim'\]"):
        make_camera("usb", source=0)
    with pytest.raises(CameraConfigError, match=r"unknown 'opencv' camera settings \['resolution'\]"):
        make_camera("opencv", source=0, resolution=(640, 480))


def test_lifecycle_errors(tmp_path):
    path = _write_video(tmp_path / "l.avi", range(5), 10.0)
    cam = OpenCVCamera(OpenCVCameraConfig(source=path))
    with pytest.raises(DeviceNotConnectedError):
        cam.read()
    with pytest.raises(DeviceNotConnectedError):
        cam.disconnect()
    cam.connect()
    try:
        with pytest.raises(DeviceAlreadyConnectedError):
            cam.connect()
    finally:
        cam.disconnect()
    assert not cam.is_connected


# --- reconnects ---------------------------------------------------------------------------------


class _FlakyCapture:
    """A real cv2.VideoCapture whose read() raises once after ``fail_after`` frames (a dropped device)."""

    def __init__(self, cap, fail_after: int | None, on_fail=None):
        self._cap = cap
        self._left = fail_after
        self._on_fail = on_fail

    def read(self):
        if self._left is not None:
            if self._left == 0:
                self._left = None
                if self._on_fail is not None:
                    self._on_fail()
                raise OSError("simulated I/O error: device went away")
            self._left -= 1
        return self._cap.read()

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_source_that_disappears_and_reappears_is_reopened(tmp_path):
    path = _write_video(tmp_path / "r.avi", range(60), 50.0)
    hidden = str(tmp_path / "r.hidden")
    opens = []

    def vanish():
        os.rename(path, hidden)  # the file is gone while the camera tries to reopen it
        threading.Timer(0.35, os.rename, (hidden, path)).start()

    def factory(source, api, params):
        opens.append(source)
        cap = cv2.VideoCapture(source, api, params)
        return _FlakyCapture(cap, 20 if len(opens) == 1 else None, vanish)

    cfg = OpenCVCameraConfig(source=path, capture_factory=factory, reconnect_backoff_s=0.05,
                             reconnect_backoff_max_s=0.1, max_consecutive_failures=20)
    before = threading.active_count()
    with OpenCVCamera(cfg) as cam:
        deadline = clock.now() + 5.0
        while not cam.stats().ended and clock.now() < deadline:
            time.sleep(0.02)
        stats = cam.stats()
        numbers = [_decode(f.image) for f in cam.buffer.between(-1e9, 1e9)]
    assert threading.active_count() == before
    assert stats.reconnects == 1
    assert stats.read_errors >= 3  # the read error plus reopen attempts while the file was gone
    assert "not found" in stats.last_error
    assert not stats.failed and stats.ended
    assert len(opens) == 2
    # After the reopen the file plays again from its start: 20 frames, then the whole file.
    assert numbers[-60:] == list(range(60))
    assert stats.frames == 80


def test_too_many_consecutive_failures_mark_the_camera_failed(tmp_path):
    path = _write_video(tmp_path / "f.avi", range(30), 50.0)
    opens = []

    def factory(source, api, params):
        opens.append(source)
        if len(opens) == 1:
            return _FlakyCapture(cv2.VideoCapture(source, api, params), 5)
        return cv2.VideoCapture("/nonexistent/device.avi", api, params)  # never opens again

    cfg = OpenCVCameraConfig(source=path, capture_factory=factory, reconnect_backoff_s=0.01,
                             reconnect_backoff_max_s=0.02, max_consecutive_failures=4)
    with OpenCVCamera(cfg) as cam:
        deadline = clock.now() + 3.0
        while not cam.stats().failed and clock.now() < deadline:
            time.sleep(0.01)
        stats = cam.stats()
        with pytest.raises(CameraError, match=r"stopped after 4 consecutive errors; last error: reopen failed"):
            cam.read()
    assert stats.failed and stats.read_errors == 4 and stats.reconnects == 0
    assert "could not decode video file" in stats.last_error
    assert stats.frames == 5


# --- V4L2 mode negotiation, through a capture that speaks the VideoCapture API ------------------


class _RecordingV4L2:
    """Stands in for a V4L2 VideoCapture: records set() calls and grants its own mode."""

    def __init__(self, granted):
        self.calls = []
        self.granted = granted
        self.n = 0

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.calls.append((prop, value))
        return True

    def get(self, prop):
        return float(self.granted.get(prop, 0.0))

    def grab(self):
        time.sleep(0.01)
        self.n += 1
        return True

    def retrieve(self):
        img = np.zeros((self.granted[cv2.CAP_PROP_FRAME_HEIGHT], self.granted[cv2.CAP_PROP_FRAME_WIDTH], 3), np.uint8)
        img[..., 0] = self.n % 256  # blue channel in BGR
        return True, img

    def release(self):
        pass


def test_v4l2_requests_format_then_size_then_rate_and_reports_the_granted_mode(caplog):
    granted = {cv2.CAP_PROP_FRAME_WIDTH: 640, cv2.CAP_PROP_FRAME_HEIGHT: 480, cv2.CAP_PROP_FPS: 15.0,
               cv2.CAP_PROP_FOURCC: cv2.VideoWriter_fourcc(*"YUYV")}
    fake = _RecordingV4L2(granted)
    cfg = OpenCVCameraConfig(source=0, width=1280, height=720, fps=30, capture_factory=lambda *a: fake)
    with caplog.at_level("WARNING"), OpenCVCamera(cfg) as cam:
        frame = cam.read()
        mode = cam.mode
    props = [p for p, _ in fake.calls]
    assert props[:4] == [cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS]
    assert dict(fake.calls)[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert dict(fake.calls)[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert (mode.width, mode.height, mode.fps, mode.fourcc) == (640, 480, 15.0, "YUYV")
    assert "size 1280x720 -> 640x480" in caplog.text and "fps 30 -> 15.0" in caplog.text
    assert frame.image.shape == (480, 640, 3) and frame.image[0, 0, 2] == frame.seq + 1  # BGR blue -> RGB index 2


# --- network stream: the same file served over HTTP, read as a live URL -------------------------


@pytest.fixture
def http_video(tmp_path):
    import functools
    import http.server

    _write_video(tmp_path / "stream.avi", range(40), 25.0)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream.avi"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)


def test_url_stream_is_read_live_and_reconnected_when_it_drops(http_video):
    cfg = OpenCVCameraConfig(source=http_video, reconnect_backoff_s=0.05, history_s=60.0)
    assert cfg.source_kind == "url"
    with OpenCVCamera(cfg) as cam:
        deadline = clock.now() + 10.0
        while cam.stats().reconnects < 1 and clock.now() < deadline:
            time.sleep(0.02)
        while cam.stats().frames < 60 and clock.now() < deadline:
            time.sleep(0.02)
        stats = cam.stats()
        numbers = [_decode(f.image) for f in cam.buffer.between(-1e9, 1e9)]
    # (the HTTP server's request threads come and go on their own; count only ours)
    assert not [t for t in threading.enumerate() if t.name.startswith("camera-reader")]
    assert cam.mode is not None and (cam.mode.width, cam.mode.height) == (W, H)
    # A live stream that ends is a dropped stream: the camera reopens it and it plays again.
    assert stats.reconnects >= 1 and not stats.failed and not stats.ended
    assert "grab() failed" in stats.last_error
    assert numbers[:40] == list(range(40))
    assert numbers[40:60] == list(range(20))
