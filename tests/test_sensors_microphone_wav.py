"""WavMicrophone: a real WAV file (any rate/channels) played into the 16 kHz mono ring."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from scipy.io import wavfile

from edge.sensors import SAMPLE_RATE_HZ, clock, make_microphone
from edge.sensors.errors import (
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    MicrophoneConfigError,
    MicrophoneError,
)
from edge.sensors.microphone_wav import WavMicrophone, WavMicrophoneConfig, load_wav_mono

DURATION_S = 1.5


def _peak_hz(x: np.ndarray, rate: int = SAMPLE_RATE_HZ) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.fixture
def stereo_44k(tmp_path):
    """1.5 s, 44.1 kHz, 16-bit stereo: 440 Hz on the left, 1000 Hz on the right."""
    rate = 44100
    t = np.arange(int(DURATION_S * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 1000 * t)
    data = (np.stack([left, right], axis=1) * 32767).astype(np.int16)
    path = tmp_path / "stereo44k.wav"
    wavfile.write(path, rate, data)
    return str(path)


def test_stereo_44k_plays_in_real_time_as_16k_mono(stereo_44k):
    before = threading.active_count()
    mic = WavMicrophone(WavMicrophoneConfig(path=stereo_44k))
    t_connect = clock.now()
    with mic:
        assert mic.device_rate_hz == 44100
        assert mic.ring.wait_for(SAMPLE_RATE_HZ // 2, timeout_s=2.0)
        t_half = clock.now()
        deadline = t_connect + 5.0
        while not mic.stats().ended and clock.now() < deadline:
            time.sleep(0.01)
        t_done = clock.now()
        stats = mic.stats()
        ring = mic.ring
        x = ring.read(0, ring.end_index)
    assert threading.active_count() == before
    # Duration preserved through 44.1 -> 16 kHz: exactly round(1.5 s * 16000) samples.
    assert x.size == round(DURATION_S * SAMPLE_RATE_HZ) == stats.samples
    assert stats.ended and stats.errors == 0 and stats.blocks == int(np.ceil(x.size / 320))
    # Real time: half a second of audio took about half a second, the whole file about 1.5 s.
    assert t_half - t_connect == pytest.approx(0.5, abs=0.1)
    assert t_done - t_connect == pytest.approx(DURATION_S, abs=0.15)
    # Timestamps span the file's duration and end around when the last block was written.
    assert ring.time_of(x.size - 1) - ring.time_of(0) == pytest.approx(DURATION_S - 1 / SAMPLE_RATE_HZ, abs=1e-6)
    assert t_connect <= ring.time_of(0) <= t_connect + 0.05
    # Mono downmix keeps both channels at half amplitude.
    spec = np.abs(np.fft.rfft(x[1600:-1600] * np.hanning(x.size - 3200)))
    freqs = np.fft.rfftfreq(x.size - 3200, 1 / SAMPLE_RATE_HZ)
    top2 = sorted(freqs[np.argsort(spec)[-2:]])
    assert top2[0] == pytest.approx(440, abs=2) and top2[1] == pytest.approx(1000, abs=2)
    # (0.5 sin a + 0.5 sin b) / 2 has RMS sqrt(0.25**2 / 2 + 0.25**2 / 2) = 0.25.
    assert np.sqrt(np.mean(x[1600:-1600] ** 2)) == pytest.approx(0.25, rel=0.02)


def test_loop_and_as_fast_as_possible(stereo_44k):
    mic = WavMicrophone(WavMicrophoneConfig(path=stereo_44k, loop=True, realtime=False, ring_s=60.0))
    t0 = clock.now()
    with mic:
        assert mic.ring.wait_for(3 * 24000 + 100, timeout_s=5.0)
    assert clock.now() - t0 < 2.0  # 4.5 s of audio, written faster than real time
    ring = mic.ring
    # Unpaced, the feeder may have lapped the ring by now; what is left is stable once disconnected.
    x = ring.latest(3 * 24000)
    # Looping is seamless sample for sample: the audio repeats with the file's period.
    np.testing.assert_array_equal(x[:24000], x[24000:48000])
    np.testing.assert_array_equal(x[:24000], x[48000:])
    times = [ring.time_of(i) for i in range(0, ring.end_index, 997)]
    assert all(b > a for a, b in itertools.pairwise(times))


def test_float_mono_48k_and_uint8(tmp_path):
    rate = 48000
    t = np.arange(rate // 2) / rate
    path = tmp_path / "f.wav"
    wavfile.write(path, rate, (0.25 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32))
    x, r = load_wav_mono(path)
    assert r == 48000 and x.dtype == np.float32 and np.max(np.abs(x)) == pytest.approx(0.25, abs=1e-3)
    with make_microphone("wav", path=str(path), realtime=False) as mic:
        assert mic.ring.wait_for(8000, 2.0)
        y = mic.ring.read(0, 8000)
    assert _peak_hz(y[400:-400]) == pytest.approx(3000, abs=3)
    path8 = tmp_path / "u8.wav"
    wavfile.write(path8, 8000, np.array([128, 255, 0], np.uint8))
    x8, _ = load_wav_mono(path8)
    np.testing.assert_allclose(x8, [0.0, 127 / 128, -1.0])


@pytest.mark.filterwarnings("ignore::scipy.io.wavfile.WavFileWarning")
def test_bad_files_and_config(tmp_path):
    with pytest.raises(MicrophoneError, match=r"WAV file '.*missing\.wav' not found"):
        WavMicrophone(WavMicrophoneConfig(path=str(tmp_path / "missing.wav"))).connect()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEnope")
    with pytest.raises(MicrophoneError, match="could not read WAV file"):
        WavMicrophone(WavMicrophoneConfig(path=str(junk))).connect()
    with pytest.raises(MicrophoneConfigError, match="path"):
        WavMicrophoneConfig(path="")
    with pytest.raises(MicrophoneConfigError, match="block_s"):
        WavMicrophoneConfig(path="a.wav", block_s=0)
    with pytest.raises(MicrophoneConfigError, match=r"unknown 'wav' microphone settings \['rate'\]"):
        make_microphone("wav", path="a.wav", rate=16000)
    with pytest.raises(MicrophoneConfigError, match="unknown microphone type 'alsa'"):
        make_microphone("alsa")


def test_lifecycle(stereo_44k):
    mic = WavMicrophone(WavMicrophoneConfig(path=stereo_44k))
    with pytest.raises(DeviceNotConnectedError):
        mic.disconnect()
    mic.connect()
    try:
        with pytest.raises(DeviceAlreadyConnectedError):
            mic.connect()
        assert mic.ring.wait_for(3200, 2.0)
    finally:
        mic.disconnect()
    first_end = mic.ring.end_index
    # Reconnecting continues the same ring: indexes and times keep increasing.
    t_before = mic.ring.end_time
    with mic:
        assert mic.ring.wait_for(first_end + 3200, 2.0)
        assert mic.ring.time_of(first_end) > t_before
        np.testing.assert_allclose(mic.ring.read(first_end, first_end + 3200), mic.ring.read(0, 3200))


def test_loop_across_a_block_boundary(tmp_path):
    # 1000 samples at 16 kHz: the file ends in the middle of the fourth 320-sample block.
    audio = ((np.arange(1000) % 97) / 97.0 - 0.5).astype(np.float32)
    path = tmp_path / "odd.wav"
    wavfile.write(path, SAMPLE_RATE_HZ, audio)
    with WavMicrophone(WavMicrophoneConfig(path=str(path), loop=True, realtime=False)) as mic:
        assert mic.ring.wait_for(5000, 2.0)
    end = mic.ring.end_index  # stable after disconnect; the unpaced feeder may be far past 5000
    x = mic.ring.read(end - 5000, end)
    np.testing.assert_array_equal(x, audio[np.arange(end - 5000, end) % 1000])
