"""FrameBuffer: latest frame, bounded timestamped history, lookups by time, thread safety."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from edge.sensors import clock
from edge.sensors.errors import (
    CameraConfigError,
    CameraError,
    FrameNotInHistoryError,
    NoFrameError,
    StaleFrameError,
)
from edge.sensors.frame_buffer import Frame, FrameBuffer


def _frame(seq: int, t: float, value: int | None = None) -> Frame:
    img = np.full((4, 6, 3), seq % 256 if value is None else value, dtype=np.uint8)
    return Frame(image=img, t=t, seq=seq)


def _filled(n: int, t0: float, period: float, **kw) -> FrameBuffer:
    buf = FrameBuffer(**kw)
    for i in range(n):
        buf.push(_frame(i, t0 + i * period))
    return buf


def test_frame_rejects_bgr_like_mistakes():
    with pytest.raises(CameraError, match="uint8 HxWx3"):
        Frame(image=np.zeros((4, 6), np.uint8), t=0.0, seq=0)
    with pytest.raises(CameraError, match="uint8 HxWx3"):
        Frame(image=np.zeros((4, 6, 3), np.float32), t=0.0, seq=0)
    with pytest.raises(CameraError, match="finite"):
        Frame(image=np.zeros((4, 6, 3), np.uint8), t=float("nan"), seq=0)


def test_empty_buffer_says_no_frame_yet():
    buf = FrameBuffer()
    assert len(buf) == 0
    with pytest.raises(NoFrameError, match="no camera frame has arrived yet"):
        buf.latest()
    with pytest.raises(NoFrameError):
        buf.at(clock.now())
    assert buf.between(0.0, clock.now()) == []


def test_latest_and_stale_error_reports_age():
    buf = FrameBuffer()
    now = clock.now()
    buf.push(_frame(0, now - 2.0))
    buf.push(_frame(1, now - 0.5))
    assert buf.latest().seq == 1
    assert buf.latest(max_age_s=1.0).seq == 1
    with pytest.raises(StaleFrameError, match=r"0\.5\d* s old, more than max_age_s=0.2") as info:
        buf.latest(max_age_s=0.2)
    assert 0.5 <= info.value.age_s < 1.0


def test_history_is_bounded_by_time_and_count():
    buf = _filled(200, 100.0, 0.05, history_s=3.0)  # 10 s of frames at 20 fps
    assert buf.span_s() == pytest.approx(3.0)
    assert len(buf) == 61  # 3.0 s / 0.05 s + the latest
    assert buf.latest().seq == 199
    capped = _filled(200, 100.0, 0.001, history_s=3.0, max_frames=50)
    assert len(capped) == 50
    assert capped.between(0, 1e9)[0].seq == 150


def test_at_returns_nearest_frame_and_refuses_times_outside_history():
    buf = _filled(100, 10.0, 0.1, history_s=3.0)  # frames 69..99 kept: t in [16.9, 19.9]
    assert buf.at(18.0).seq == 80
    assert buf.at(18.04).seq == 80
    assert buf.at(18.06).seq == 81
    assert buf.at(16.9).seq == 69
    assert buf.at(19.95).seq == 99      # within 1.5 frame periods after the latest
    with pytest.raises(FrameNotInHistoryError, match="older than the history"):
        buf.at(16.0)
    with pytest.raises(FrameNotInHistoryError, match="after the latest frame"):
        buf.at(20.5)
    assert buf.at(25.0, tolerance_s=10.0).seq == 99


def test_between_is_inclusive_and_ordered():
    buf = _filled(50, 0.0, 0.1)
    frames = buf.between(3.0, 3.5)
    assert [f.seq for f in frames] == [30, 31, 32, 33, 34, 35]
    assert buf.between(3.01, 3.09) == []
    with pytest.raises(CameraError, match="t0 must not be after t1"):
        buf.between(2.0, 1.0)


def test_push_refuses_frames_from_the_past_and_non_frames():
    buf = FrameBuffer()
    buf.push(_frame(0, 5.0))
    with pytest.raises(CameraError, match="before the latest frame"):
        buf.push(_frame(1, 4.0))
    with pytest.raises(CameraError, match="takes a Frame"):
        buf.push(np.zeros((4, 6, 3), np.uint8))  # type: ignore[arg-type]


def test_bad_configuration_is_a_config_error():
    with pytest.raises(CameraConfigError, match="history_s"):
        FrameBuffer(history_s=0)
    with pytest.raises(CameraConfigError, match="max_frames"):
        FrameBuffer(max_frames=0)


def test_wait_for_returns_a_newer_frame_or_times_out():
    buf = FrameBuffer()
    buf.push(_frame(0, clock.now()))
    with pytest.raises(NoFrameError, match="no frame newer than seq 0"):
        buf.wait_for(after_seq=0, timeout_s=0.05)
    timer = threading.Timer(0.05, lambda: buf.push(_frame(1, clock.now())))
    timer.start()
    try:
        assert buf.wait_for(after_seq=0, timeout_s=2.0).seq == 1
    finally:
        timer.join()


def test_concurrent_writer_and_readers_see_consistent_frames():
    buf = FrameBuffer(history_s=0.5)
    stop = threading.Event()
    errors: list[str] = []

    def writer():
        seq = 0
        while not stop.is_set():
            buf.push(_frame(seq, clock.now()))
            seq += 1

    def reader():
        while not stop.is_set():
            try:
                f = buf.latest()
                frames = buf.between(f.t - 0.2, f.t)
                if any(b.t < a.t for a, b in itertools.pairwise(frames)):
                    errors.append("history out of order")
                if any(int(x.image[0, 0, 0]) != x.seq % 256 for x in frames):
                    errors.append("frame content does not match its seq")
            except NoFrameError:
                pass

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    threading.Event().wait(0.3)
    stop.set()
    for th in threads:
        th.join(2.0)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert buf.span_s() <= 0.5


def test_a_frozen_pictures_frames_go_stale_by_their_content_time():
    buf = FrameBuffer()
    now = clock.now()
    image = np.zeros((4, 4, 3), np.uint8)
    buf.push(Frame(image, now, 0, content_t=now - 2.0))  # arrived just now, but the picture is 2 s old
    assert buf.latest(max_age_s=5.0).content_age_s >= 2.0
    with pytest.raises(StaleFrameError, match="frozen: its picture has not changed"):
        buf.latest(max_age_s=0.5)
    buf.push(Frame(image, now + 0.01, 1))  # content_t None: the picture is as new as the frame
    assert buf.latest(max_age_s=0.5).seq == 1
