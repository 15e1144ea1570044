"""The audio ring: the last ~30 s of 16 kHz mono audio, indexed by sample and mapped to time.

Every sample written since the ring was made has a global index (0, 1, 2,
... as a Python int, so it never wraps). Each written block carries the
capture time of its last sample; the ring keeps two (index, time) anchors per
block (first and last sample, the first placed ``(n - 1) / rate`` before the
last), so ``time_of(index)`` and ``index_at(t)`` are exact inside a block,
interpolate across the one-sample step between blocks, and stay correct
across capture gaps (a dropped block shows as a time jump between anchors).

One writer (the capture callback or feeder thread) and any number of readers.
``write`` only copies into a preallocated array under a lock, so it is cheap
enough for a real-time audio callback.
"""

from __future__ import annotations

import bisect
import math
import threading

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ
from edge.sensors import clock
from edge.sensors.errors import AudioRangeError, AudioTimeError, MicrophoneConfigError, MicrophoneError

__all__ = ["DEFAULT_RING_S", "SAMPLE_RATE_HZ", "AudioRing", "BlockClock", "rms_dbfs"]

DEFAULT_RING_S = 30.0           # seconds of audio kept
DEFAULT_LEVEL_WINDOW_S = 0.1    # level_dbfs averages over this much recent audio
MIN_BLOCK_GAP_S = 1e-9          # a block's start is placed at least this after the previous block's end

# BlockClock: how device block times are smoothed (see its docstring).
CLOCK_SMOOTHING = 0.01          # fraction of a late observation's lead followed per block (drift)
CLOCK_RESYNC_S = 0.1            # an observation this much later than predicted (a gap) is taken as-is


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB re full scale 1.0 (a full-scale sine is -3.01 dBFS); -inf for silence or no samples."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(x))))
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


class AudioRing:
    """Thread-safe ring of mono float32 samples with a global sample index and a time map.

    Args:
        capacity_s: seconds kept; older samples are overwritten.
        sample_rate: samples per second (default SAMPLE_RATE_HZ).
    """

    def __init__(self, capacity_s: float = DEFAULT_RING_S, sample_rate: int = SAMPLE_RATE_HZ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise MicrophoneConfigError(f"sample_rate={sample_rate!r}; use a positive int in Hz ({SAMPLE_RATE_HZ})")
        ok = isinstance(capacity_s, (int, float)) and not isinstance(capacity_s, bool)
        if not (ok and math.isfinite(capacity_s) and capacity_s > 0):
            raise MicrophoneConfigError(f"capacity_s={capacity_s!r}; use a positive number of seconds (30.0)")
        self.sample_rate = sample_rate
        self.capacity = max(1, round(capacity_s * sample_rate))
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._end = 0                      # next index to be written
        self._anchor_i: list[int] = []     # anchor sample indexes, increasing
        self._anchor_t: list[float] = []   # their capture times, non-decreasing
        self._anchor_start = 0             # anchors before this position are dropped
        self._overflows = 0
        self._blocks = 0
        self._cond = threading.Condition(threading.Lock())

    # --- writing ---------------------------------------------------------------------------

    def write(self, samples: np.ndarray, t_end: float) -> None:
        """Append a block; ``t_end`` is the capture time (edge.sensors.clock) of its last sample.

        Raises:
            MicrophoneError: ``samples`` is not 1-D.
            AudioTimeError: ``t_end`` is not finite or not after the previous block's ``t_end``.
        """
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise MicrophoneError(f"AudioRing.write takes 1-D mono samples, got shape {x.shape}")
        n = x.size
        if n == 0:
            return
        t_end = float(t_end)
        if not math.isfinite(t_end):
            raise AudioTimeError(f"t_end={t_end!r}; stamp blocks with edge.sensors.clock.now()")
        with self._cond:
            prev_t = self._anchor_t[-1] if len(self._anchor_t) > self._anchor_start else None
            if prev_t is not None and t_end <= prev_t:
                raise AudioTimeError(
                    f"block ending at t={t_end:.6f} s is not after the previous block's end {prev_t:.6f} s; "
                    "stamp each block with the capture time of its last sample on edge.sensors.clock"
                )
            start = self._end
            # Copy only the tail that fits; a block longer than the ring overwrites itself.
            keep = x[-self.capacity:]
            first = (start + n - keep.size) % self.capacity
            head = min(keep.size, self.capacity - first)
            self._buf[first:first + head] = keep[:head]
            if head < keep.size:
                self._buf[: keep.size - head] = keep[head:]
            self._end = start + n
            # Anchors: the first sample (clamped so times never run backwards) and the last.
            t_first = t_end - (n - 1) / self.sample_rate
            if prev_t is not None:
                t_first = max(t_first, min(prev_t + MIN_BLOCK_GAP_S, t_end))
            if n > 1:
                self._anchor_i.append(start)
                self._anchor_t.append(t_first)
            self._anchor_i.append(start + n - 1)
            self._anchor_t.append(t_end)
            self._blocks += 1
            self._prune_anchors()
            self._cond.notify_all()

    def note_overflow(self, count: int = 1) -> None:
        """Count input blocks the device reported as dropped (e.g. PortAudio input overflow)."""
        with self._cond:
            self._overflows += int(count)

    def _prune_anchors(self) -> None:
        # Keep one anchor at or before the oldest retained sample so time_of stays
        # interpolated there; compact the lists once half of them is dead.
        oldest = self._end - self.capacity
        i = bisect.bisect_right(self._anchor_i, oldest, lo=self._anchor_start) - 1
        self._anchor_start = max(self._anchor_start, i)
        if self._anchor_start > 1024 and self._anchor_start * 2 > len(self._anchor_i):
            del self._anchor_i[: self._anchor_start]
            del self._anchor_t[: self._anchor_start]
            self._anchor_start = 0

    # --- state -----------------------------------------------------------------------------

    @property
    def end_index(self) -> int:
        """Index of the next sample to be written (= samples written so far)."""
        with self._cond:
            return self._end

    @property
    def oldest_index(self) -> int:
        """Index of the oldest sample still in the ring."""
        with self._cond:
            return max(0, self._end - self.capacity)

    @property
    def overflows(self) -> int:
        """Input blocks the device reported as dropped."""
        with self._cond:
            return self._overflows

    @property
    def blocks(self) -> int:
        """Blocks written so far."""
        with self._cond:
            return self._blocks

    @property
    def end_time(self) -> float | None:
        """Capture time of the newest sample, None before the first write."""
        with self._cond:
            return self._anchor_t[-1] if len(self._anchor_t) > self._anchor_start else None

    # --- reading ---------------------------------------------------------------------------

    def read(self, start: int, end: int) -> np.ndarray:
        """Copy of samples [start, end) as float32.

        Raises:
            AudioRangeError: ``start > end``, the range reaches past ``end_index``
                (not captured yet), or starts before ``oldest_index`` (overwritten).
        """
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise AudioRangeError(f"{name}={value!r}; sample indexes are ints")
        start, end = int(start), int(end)
        if start > end:
            raise AudioRangeError(f"read({start}, {end}): start is after end")
        with self._cond:
            if end > self._end:
                raise AudioRangeError(
                    f"read({start}, {end}) reaches {end - self._end} samples past the newest "
                    f"(end_index {self._end}); that audio has not been captured yet: wait for it "
                    "(AudioRing.wait_for) or read up to end_index"
                )
            if start < 0:
                raise AudioRangeError(f"read({start}, {end}): sample indexes start at 0")
            oldest = max(0, self._end - self.capacity)
            if start < oldest:
                raise AudioRangeError(
                    f"read({start}, {end}): samples before {oldest} were overwritten (the ring keeps "
                    f"{self.capacity / self.sample_rate:g} s); read sooner or give the ring a larger capacity_s"
                )
            n = end - start
            first = start % self.capacity
            head = min(n, self.capacity - first)
            out = np.empty(n, dtype=np.float32)
            out[:head] = self._buf[first:first + head]
            out[head:] = self._buf[: n - head]
            return out

    def latest(self, n: int) -> np.ndarray:
        """The newest ``min(n, available)`` samples."""
        with self._cond:
            end = self._end
            start = max(end - int(n), end - self.capacity, 0)
        return self.read(start, end)

    def wait_for(self, index: int, timeout_s: float) -> bool:
        """Block until ``end_index >= index``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._end >= index, timeout_s)

    def level_dbfs(self, window_s: float = DEFAULT_LEVEL_WINDOW_S) -> float:
        """RMS level of the newest ``window_s`` seconds in dBFS (-inf when silent or empty)."""
        return rms_dbfs(self.latest(max(1, round(window_s * self.sample_rate))))

    # --- time map --------------------------------------------------------------------------

    def time_of(self, index: int) -> float:
        """Capture time (edge.sensors.clock) of sample ``index``.

        Exact inside written blocks; extrapolated at the nominal rate before the
        oldest kept anchor and after the newest sample (a future index gives
        the time it will be captured if capture keeps pace).

        Raises:
            AudioRangeError: nothing written yet.
        """
        with self._cond:
            lo = self._anchor_start
            idx, ts = self._anchor_i, self._anchor_t
            if len(idx) <= lo:
                raise AudioRangeError("the ring is empty: no sample has a time yet")
            rate = self.sample_rate
            if index <= idx[lo]:
                return ts[lo] + (index - idx[lo]) / rate
            if index >= idx[-1]:
                return ts[-1] + (index - idx[-1]) / rate
            k = bisect.bisect_right(idx, index, lo=lo)
            i0, i1, t0, t1 = idx[k - 1], idx[k], ts[k - 1], ts[k]
        return t0 + (t1 - t0) * (index - i0) / (i1 - i0)

    def index_at(self, t: float) -> int:
        """Index of the sample captured nearest to time ``t`` (extrapolated outside the anchors).

        Raises:
            AudioRangeError: nothing written yet.
        """
        with self._cond:
            lo = self._anchor_start
            idx, ts = self._anchor_i, self._anchor_t
            if len(idx) <= lo:
                raise AudioRangeError("the ring is empty: no sample has a time yet")
            rate = self.sample_rate
            if t <= ts[lo]:
                return idx[lo] + round((t - ts[lo]) * rate)
            if t >= ts[-1]:
                return idx[-1] + round((t - ts[-1]) * rate)
            k = bisect.bisect_right(ts, t, lo=lo)
            i0, i1, t0, t1 = idx[k - 1], idx[k], ts[k - 1], ts[k]
        if t1 == t0:
            return i0
        return i0 + round((i1 - i0) * (t - t0) / (t1 - t0))

    def age_s(self) -> float | None:
        """Seconds since the newest sample was captured, None before the first write."""
        t = self.end_time
        return None if t is None else clock.now() - t


class BlockClock:
    """Turns noisy per-block capture stamps into a smooth, increasing timeline.

    Audio callbacks run when the OS gets round to them, so the stamp taken in
    a callback is the true capture time plus a scheduling delay that is never
    negative but jitters by milliseconds (and blocks queued at stream start
    arrive in a burst), while the ADC clock behind the samples is steady. The
    clock therefore tracks the *lower envelope* of the observations: it
    predicts each block's end from the previous one plus the block's
    duration; an observation earlier than the prediction proves the
    prediction late and is taken as-is; a later one is mostly delay, so the
    estimate only moves ``CLOCK_SMOOTHING`` of the way towards it (enough to
    follow drift between the ADC and host clocks). An observation more than
    ``CLOCK_RESYNC_S`` late (dropped blocks, a stalled device) is taken as-is.

    Args:
        sample_rate: the rate of the samples the blocks count, in Hz.
    """

    def __init__(self, sample_rate: float) -> None:
        if not sample_rate > 0:
            raise MicrophoneConfigError(f"sample_rate={sample_rate!r}; use a positive rate in Hz")
        self.sample_rate = float(sample_rate)
        self._t_end: float | None = None
        self.resyncs = 0

    def stamp(self, n: int, observed_t_end: float) -> float:
        """Smoothed capture time of the last sample of the next ``n``-sample block."""
        prev = self._t_end
        if prev is None:
            t = observed_t_end
        else:
            predicted = prev + n / self.sample_rate
            err = observed_t_end - predicted
            if err > CLOCK_RESYNC_S:
                self.resyncs += 1
                t = observed_t_end
            elif err < 0.0:
                t = observed_t_end
            else:
                t = predicted + CLOCK_SMOOTHING * err
            t = max(t, prev + MIN_BLOCK_GAP_S)
        self._t_end = t
        return t
