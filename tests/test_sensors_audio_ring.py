"""AudioRing: sample-indexed ring with an index<->time map; BlockClock; the streaming resampler."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sensors.audio_ring import SAMPLE_RATE_HZ, AudioRing, BlockClock, rms_dbfs
from edge.sensors.errors import AudioRangeError, AudioTimeError, MicrophoneConfigError, MicrophoneError
from edge.contract.wav import WavError
from edge.sensors.resample import StreamResampler, resample

RATE = 1000  # small rate and capacity keep the property tests fast and the wraparound frequent
CAP = 1000


def _values(start: int, n: int) -> np.ndarray:
    """Sample values that identify their index exactly in float32."""
    return ((np.arange(start, start + n) % 4096) / 4096.0).astype(np.float32)


def test_constants():
    assert SAMPLE_RATE_HZ == 16000
    ring = AudioRing()
    assert ring.capacity == 30 * 16000 and ring.sample_rate == 16000


def test_empty_ring():
    ring = AudioRing(1.0, RATE)
    assert ring.end_index == 0 and ring.oldest_index == 0 and ring.end_time is None and ring.age_s() is None
    assert ring.read(0, 0).size == 0
    assert ring.level_dbfs() == -math.inf
    with pytest.raises(AudioRangeError, match="empty"):
        ring.time_of(0)
    with pytest.raises(AudioRangeError, match="empty"):
        ring.index_at(0.0)


def test_index_time_map_for_contiguous_blocks():
    ring = AudioRing(1.0, RATE)
    t0 = 100.0
    end = 0
    for n in (10, 1, 250, 39):
        ring.write(_values(end, n), t_end=t0 + (end + n - 1) / RATE)
        end += n
    assert ring.end_index == 300
    for i in (0, 9, 10, 11, 150, 299):
        assert ring.time_of(i) == pytest.approx(t0 + i / RATE, abs=1e-9)
        assert ring.index_at(t0 + i / RATE) == i
    assert ring.index_at(t0 + 150.4 / RATE) == 150
    assert ring.index_at(t0 + 150.6 / RATE) == 151
    # Outside the written range the nominal rate extrapolates (a future index: when it will be captured).
    assert ring.time_of(400) == pytest.approx(t0 + 0.4)
    assert ring.index_at(t0 + 0.4) == 400
    assert ring.end_time == pytest.approx(t0 + 0.299)


def test_a_capture_gap_shows_in_the_time_map():
    ring = AudioRing(1.0, RATE)
    ring.write(_values(0, 100), t_end=10.099)
    ring.write(_values(100, 100), t_end=10.699)  # 0.5 s of audio was lost between the blocks
    assert ring.time_of(99) == pytest.approx(10.099)
    assert ring.time_of(100) == pytest.approx(10.600)
    assert ring.time_of(150) == pytest.approx(10.650)
    assert ring.index_at(10.650) == 150
    assert ring.index_at(10.3) in (99, 100)  # inside the gap: one of the samples around it


def test_wraparound_keeps_the_newest_capacity_samples():
    ring = AudioRing(1.0, RATE)
    end = 0
    for n in (700, 700, 150):
        ring.write(_values(end, n), t_end=float(end + n))
        end += n
    assert ring.end_index == 1550 and ring.oldest_index == 550
    np.testing.assert_array_equal(ring.read(550, 1550), _values(550, 1000))
    np.testing.assert_array_equal(ring.latest(30), _values(1520, 30))
    with pytest.raises(AudioRangeError, match="samples before 550 were overwritten.*larger capacity_s"):
        ring.read(549, 600)
    with pytest.raises(AudioRangeError, match="not been captured yet"):
        ring.read(1500, 1551)
    with pytest.raises(AudioRangeError, match="start is after end"):
        ring.read(1000, 900)
    with pytest.raises(AudioRangeError, match="ints"):
        ring.read(1000.0, 1001)


def test_block_longer_than_the_ring():
    ring = AudioRing(1.0, RATE)
    ring.write(_values(0, 2500), t_end=5.0)
    assert ring.end_index == 2500 and ring.oldest_index == 1500
    np.testing.assert_array_equal(ring.read(1500, 2500), _values(1500, 1000))
    assert ring.time_of(2000) == pytest.approx(5.0 - 0.499)


def test_timestamps_must_increase():
    ring = AudioRing(1.0, RATE)
    ring.write(np.zeros(10, np.float32), t_end=1.0)
    with pytest.raises(AudioTimeError, match="not after the previous block's end"):
        ring.write(np.zeros(10, np.float32), t_end=1.0)
    with pytest.raises(AudioTimeError, match="stamp blocks"):
        ring.write(np.zeros(10, np.float32), t_end=float("nan"))
    with pytest.raises(MicrophoneError, match="1-D mono"):
        ring.write(np.zeros((10, 2), np.float32), t_end=2.0)
    assert ring.end_index == 10


def test_overlapping_stamps_are_compressed_not_reordered():
    # A block stamped so that its start would fall before the previous block's end (jittery
    # host clock): its first anchor is moved just after the previous end, times stay ordered.
    ring = AudioRing(1.0, RATE)
    ring.write(np.zeros(100, np.float32), t_end=1.0)
    ring.write(np.zeros(100, np.float32), t_end=1.05)  # nominally needs 0.1 s
    times = [ring.time_of(i) for i in range(200)]
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert times[100] > 1.0 and times[199] == pytest.approx(1.05)


def test_overflows_and_level():
    ring = AudioRing(1.0, SAMPLE_RATE_HZ)
    ring.note_overflow()
    ring.note_overflow(2)
    assert ring.overflows == 3
    t = np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    ring.write(np.sin(2 * np.pi * 1000 * t).astype(np.float32), t_end=1.0)
    assert ring.level_dbfs() == pytest.approx(-3.01, abs=0.05)
    ring.write(np.full(1600, 0.01, np.float32), t_end=1.2)
    assert ring.level_dbfs(0.1) == pytest.approx(-40.0, abs=0.01)
    assert rms_dbfs(np.zeros(5)) == -math.inf


def test_wait_for_blocks_until_samples_arrive():
    ring = AudioRing(1.0, RATE)
    assert not ring.wait_for(10, timeout_s=0.02)
    timer = threading.Timer(0.05, ring.write, (np.zeros(10, np.float32), 1.0))
    timer.start()
    try:
        assert ring.wait_for(10, timeout_s=2.0)
    finally:
        timer.join()


def test_bad_configuration():
    with pytest.raises(MicrophoneConfigError, match="capacity_s"):
        AudioRing(0)
    with pytest.raises(MicrophoneConfigError, match="sample_rate"):
        AudioRing(1.0, 0)


blocks = st.lists(
    st.tuples(st.integers(1, 700), st.floats(0.0, 0.3), st.floats(-0.5, 0.0)),
    min_size=1, max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(blocks=blocks)
def test_property_reads_and_time_map_match_what_was_written(blocks):
    """Random block sizes, capture gaps and early stamps: content, ranges and the time map stay exact."""
    ring = AudioRing(CAP / RATE, RATE)
    end = 0
    t_last = None
    nominal: dict[int, float] = {}   # t_end - (samples after i) / rate
    block_end: dict[int, float] = {}
    exact: dict[int, bool] = {}      # the block did not overlap its predecessor
    for n, gap_s, early_frac in blocks:
        nominal_end = (t_last if t_last is not None else 50.0) + gap_s + n / RATE
        t_end = nominal_end + early_frac * (n - 1) / RATE * (gap_s == 0.0)  # some blocks overlap the previous
        ring.write(_values(end, n), t_end)
        overlaps = t_last is not None and t_end - (n - 1) / RATE <= t_last
        for i in range(end, end + n):
            nominal[i] = t_end - (end + n - 1 - i) / RATE
            block_end[i] = t_end
            exact[i] = not overlaps
        end += n
        t_last = t_end
        assert ring.end_index == end
        oldest = max(0, end - CAP)
        assert ring.oldest_index == oldest
        np.testing.assert_array_equal(ring.read(oldest, end), _values(oldest, end - oldest))
        if oldest > 0:
            with pytest.raises(AudioRangeError):
                ring.read(oldest - 1, end)
        with pytest.raises(AudioRangeError):
            ring.read(end - 1, end + 1)
    times = [ring.time_of(i) for i in range(ring.oldest_index, end)]
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert ring.time_of(end - 1) == pytest.approx(t_last, abs=1e-9)
    for i, t in zip(range(ring.oldest_index, end), times):
        # Exact for blocks that follow their predecessor; an overlapping block is squeezed
        # into the time after the previous block, never before it and never past its own end.
        if exact[i]:
            assert t == pytest.approx(nominal[i], abs=1e-9)
            assert ring.index_at(t) == i
        else:
            assert nominal[i] - 1e-9 <= t <= block_end[i] + 1e-9


def test_block_clock_removes_scheduling_jitter():
    rng = np.random.default_rng(0)
    rate, n = 48000, 960
    clock_ = BlockClock(rate)
    truth = 1000.0 + np.arange(1, 501) * n / rate * (1 + 50e-6)  # ADC 50 ppm fast vs the host clock
    observed = truth + rng.exponential(0.004, truth.size) + (rng.random(truth.size) < 0.05) * 0.03
    est = np.array([clock_.stamp(n, o) for o in observed])
    assert np.all(np.diff(est) > 0)
    err = est[50:] - truth[50:]
    assert np.max(np.abs(err)) < 0.004  # observations jitter by up to ~35 ms
    assert np.std(np.diff(est[50:])) < 0.001


def test_block_clock_resyncs_after_a_gap():
    clock_ = BlockClock(1000)
    t = 0.0
    for _ in range(20):
        t += 0.1
        clock_.stamp(100, t)
    t += 0.1 + 0.5  # five blocks lost
    assert clock_.stamp(100, t) == pytest.approx(t)
    assert clock_.resyncs == 1


def test_stream_resampler_is_seamless_and_accounts_for_its_delay():
    rate_in = 44100
    t = np.arange(rate_in * 2) / rate_in
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    rs = StreamResampler(rate_in, SAMPLE_RATE_HZ)
    out = []
    for i in range(0, x.size, 882):
        out.append(rs.process(x[i:i + 882]))
    y = np.concatenate(out)
    assert rs.in_total == x.size and rs.out_total == y.size
    assert x.size * 16000 / 44100 - 600 < y.size <= x.size * 16000 / 44100  # held back: < 40 ms
    # Output sample k is input position k * 44100/16000: compare with the ideal 1 kHz sine.
    k = np.arange(2000, y.size - 10)
    ideal = 0.5 * np.sin(2 * np.pi * 1000 * k / SAMPLE_RATE_HZ)
    assert np.max(np.abs(y[k] - ideal)) < 2e-3  # no clicks at block edges, no delay
    # The newest output sample's time, given that the newest input sample was captured at 10.0 s.
    expected = 10.0 - ((rs.in_total - 1) - (rs.out_total - 1) * 44100 / 16000) / 44100
    assert rs.last_output_time(10.0) == pytest.approx(expected)
    assert rs.last_output_time(10.0) < 10.0


def test_resample_whole_signal_preserves_duration():
    x = np.zeros(44100 * 3, np.float32)
    assert resample(x, 44100, 16000).size == 48000
    assert resample(x, 16000, 16000).size == x.size
    with pytest.raises(WavError, match="in_rate=0"):
        resample(x, 0, 16000)
