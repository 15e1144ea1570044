"""SimMicrophone: a noise bed plus speech synthesized with the real espeak-ng, in real time."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from edge.sensors import SAMPLE_RATE_HZ, clock, make_microphone
from edge.sensors.audio_ring import rms_dbfs
from edge.sensors.errors import DeviceNotConnectedError, MicrophoneConfigError, MicrophoneError
from simrobot.microphone import MAX_PENDING_INJECTIONS, SimMicrophone, SimMicrophoneConfig

BLOCK = 320  # 20 ms at 16 kHz
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


def _frame_db(x: np.ndarray, n: int = 160) -> np.ndarray:
    """Level of consecutive 10 ms frames in dBFS."""
    frames = x[: x.size // n * n].reshape(-1, n).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def _speech(text: str) -> np.ndarray:
    from sim.speech import SpeechRequest, Voice, synthesize

    return synthesize(SpeechRequest(text=text, voice=Voice("en-us")))


@needs_espeak
def test_say_puts_the_utterance_in_the_ring_at_the_returned_time():
    expected = _speech("go to the red ball")
    before = threading.active_count()
    with SimMicrophone(SimMicrophoneConfig(noise=None)) as mic:
        ring = mic.ring
        assert ring.wait_for(SAMPLE_RATE_HZ // 4, 2.0)
        t_call = clock.now()
        t_start = mic.say("go to the red ball")
        t_returned = clock.now()
        start = ring.index_at(t_start)
        assert ring.wait_for(start + expected.size + BLOCK, 5.0)
        got = ring.read(start - BLOCK, start + expected.size + BLOCK)
    assert threading.active_count() == before
    # The utterance starts at a block boundary, exactly at the returned time, sample for sample.
    assert start % BLOCK == 0
    assert ring.time_of(start) == pytest.approx(t_start, abs=1e-6)
    np.testing.assert_array_equal(got[:BLOCK], 0.0)
    np.testing.assert_allclose(got[BLOCK:-BLOCK], np.clip(expected, -1, 1), atol=1e-7)
    np.testing.assert_array_equal(got[-BLOCK:], 0.0)
    # "The next block": the block being captured when say() had synthesized the speech (the
    # feeder writes a block once its last sample's time has come; a loaded host may lag it a bit).
    assert t_call - BLOCK / SAMPLE_RATE_HZ - 0.1 <= t_start <= t_returned + 1 / SAMPLE_RATE_HZ


@needs_espeak
def test_speech_stands_out_of_the_noise_bed_at_the_configured_level():
    cfg = SimMicrophoneConfig(noise="white", noise_dbfs=-45.0, seed=3)  # stationary: its level is exact
    with make_microphone("sim", **vars(cfg)) as mic:
        ring = mic.ring
        assert ring.wait_for(SAMPLE_RATE_HZ, 3.0)
        noise_only = ring.read(0, SAMPLE_RATE_HZ)
        level = mic.stats().level_dbfs
        t_start = mic.say("go to the red ball")
        start = ring.index_at(t_start)
        n = _speech("go to the red ball").size
        assert ring.wait_for(start + n, 5.0)
        x = ring.read(start - SAMPLE_RATE_HZ // 2, start + n)
        stats = mic.stats()
    assert rms_dbfs(noise_only) == pytest.approx(-45.0, abs=0.3)
    assert level == pytest.approx(-45.0, abs=1.0)
    db = _frame_db(x)
    before, during = db[:50], db[50:]
    assert np.max(before) < -38.0  # half a second of noise alone before the speech
    onset = int(np.argmax(during > -30.0))  # first 10 ms frame clearly above the noise
    # The synthesized audio starts with <= 30 ms of trimmed near-silence, so the speech
    # energy appears within one block plus that margin after the returned time.
    assert 0 <= onset * 10 <= 20 + 30 + 10
    assert rms_dbfs(x[SAMPLE_RATE_HZ // 2:]) > -45.0 + 15.0
    assert stats.errors == 0 and not stats.failed and stats.device_rate_hz == SAMPLE_RATE_HZ


def test_inject_raw_samples_and_the_real_time_schedule():
    tone = (0.3 * np.sin(2 * np.pi * 500 * np.arange(1600) / SAMPLE_RATE_HZ)).astype(np.float32)
    t_connect = clock.now()
    with SimMicrophone(SimMicrophoneConfig(noise="white", noise_dbfs=-60.0)) as mic:
        ring = mic.ring
        time.sleep(0.2)
        t_inject = mic.inject(tone, gain=2.0)
        start = ring.index_at(t_inject)
        assert ring.wait_for(start + tone.size, 2.0)
        got = ring.read(start, start + tone.size)
        t_now = clock.now()
        end = ring.end_index
        end_time = ring.end_time
    residual = got - 2.0 * tone
    assert rms_dbfs(residual) == pytest.approx(-60.0, abs=1.5)  # what remains is the noise bed
    # Real time: the ring's timeline advances like the clock, and never runs ahead of it.
    assert end_time <= t_now
    assert end / SAMPLE_RATE_HZ == pytest.approx(t_now - t_connect, abs=0.06)
    assert ring.time_of(end - 1) - ring.time_of(0) == pytest.approx((end - 1) / SAMPLE_RATE_HZ, abs=1e-6)


def test_inject_limits_and_state():
    mic = SimMicrophone(SimMicrophoneConfig(noise=None))
    with pytest.raises(DeviceNotConnectedError):
        mic.inject(np.zeros(10, np.float32))
    with pytest.raises(DeviceNotConnectedError):
        mic.say("stop")
    with mic:
        with pytest.raises(MicrophoneError, match="1-D mono"):
            mic.inject(np.zeros((10, 2), np.float32))
        with pytest.raises(MicrophoneError, match="NaN"):
            mic.inject(np.array([0.0, np.nan], np.float32))
        long = np.zeros(SAMPLE_RATE_HZ * 10, np.float32)
        for _ in range(MAX_PENDING_INJECTIONS):
            mic.inject(long)
        with pytest.raises(MicrophoneError, match="already pending"):
            mic.inject(long)


def test_config_validation():
    with pytest.raises(MicrophoneConfigError, match="noise="):
        SimMicrophoneConfig(noise="babble")
    with pytest.raises(MicrophoneConfigError, match="noise_dbfs"):
        SimMicrophoneConfig(noise_dbfs=3.0)
    with pytest.raises(MicrophoneConfigError, match="unknown base voice"):
        SimMicrophone(SimMicrophoneConfig(voice="klingon")).connect()


@pytest.mark.parametrize("kind", ["pink", "motor"])
def test_noise_bed_level_over_its_loop(kind):
    # As fast as possible: ten seconds of noise bed (one loop) in a fraction of that.
    with SimMicrophone(SimMicrophoneConfig(noise=kind, noise_dbfs=-50.0, realtime=False)) as mic:
        assert mic.ring.wait_for(10 * SAMPLE_RATE_HZ, 5.0)
    # Any 10 s stretch is one whole loop of the bed (read after disconnect: unpaced, the feeder
    # may have lapped the ring meanwhile).
    x = mic.ring.latest(10 * SAMPLE_RATE_HZ)
    assert x.size == 10 * SAMPLE_RATE_HZ
    assert rms_dbfs(x) == pytest.approx(-50.0, abs=0.05)
