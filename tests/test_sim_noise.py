"""Tests for sim.noise (pure numpy; no espeak-ng needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.noise import (
    NOISE_KINDS,
    NOISE_RMS_DBFS,
    SAMPLE_RATE_HZ,
    active_span,
    babble,
    make_noise,
    mix_at_snr,
    motor_hum,
    pink_noise,
    rms_dbfs,
    snr_db,
    white_noise,
)

N = 32000


def tone_burst(
    amplitude: float = 0.3, start: int = 8000, length: int = 12000, freq: float = 440.0
) -> np.ndarray:
    """A sine burst padded by zeros, standing in for speech in a 2 s window."""
    x = np.zeros(N, dtype=np.float32)
    t = np.arange(length) / SAMPLE_RATE_HZ
    x[start : start + length] = amplitude * np.sin(2 * np.pi * freq * t + 0.1)
    return x


def fake_pool(rng: np.random.Generator, count: int = 5) -> list[np.ndarray]:
    """Speech-like stand-ins: amplitude-modulated harmonic bursts of varying length."""
    pool = []
    for _ in range(count):
        n = int(rng.integers(8000, 24000))
        t = np.arange(n) / SAMPLE_RATE_HZ
        f0 = rng.uniform(100, 220)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
        pool.append((0.2 * x).astype(np.float32))
    return pool


def band_power_fraction(x: np.ndarray, max_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE_HZ)
    return float(spectrum[freqs <= max_hz].sum() / spectrum.sum())


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("kind", NOISE_KINDS + ("pink",))
def test_noise_kinds_shape_level_and_determinism(kind):
    pool = fake_pool(np.random.default_rng(99))
    a = make_noise(kind, N, np.random.default_rng(3), speech_pool=pool)
    b = make_noise(kind, N, np.random.default_rng(3), speech_pool=pool)
    c = make_noise(kind, N, np.random.default_rng(4), speech_pool=pool)
    assert a.shape == (N,) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert rms_dbfs(a) == pytest.approx(NOISE_RMS_DBFS, abs=0.01)
    assert np.all(np.isfinite(a)) and np.abs(a).max() < 1.0


def test_zero_length_noise():
    rng = np.random.default_rng(0)
    for kind in NOISE_KINDS:
        assert make_noise(kind, 0, rng, speech_pool=fake_pool(rng)).shape == (0,)


def test_white_noise_is_flat():
    x = white_noise(N, np.random.default_rng(0))
    assert band_power_fraction(x, 4000) == pytest.approx(0.5, abs=0.03)


def test_pink_noise_falls_with_frequency():
    x = pink_noise(N, np.random.default_rng(0))
    # 1/f: equal power per octave, so far more than half of the power sits below 1 kHz.
    assert band_power_fraction(x, 1000) > 0.6


@pytest.mark.parametrize("seed", range(8))
def test_motor_hum_energy_below_1khz(seed):
    x = motor_hum(N, np.random.default_rng(seed))
    assert band_power_fraction(x, 1000) > 0.85
    assert band_power_fraction(x, 60) < 0.05  # no DC / sub-audible rumble
    assert 1 - band_power_fraction(x, 1500) > 0.01  # some broadband whine is present


def test_motor_hum_has_a_fundamental_in_range():
    for seed in range(5):
        x = motor_hum(N, np.random.default_rng(seed))
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(N, 1.0 / SAMPLE_RATE_HZ)
        peak = freqs[np.argmax(spectrum)]
        assert 75 <= peak <= 1000
        low = spectrum[(freqs >= 75) & (freqs <= 260)]
        assert low.max() > 0.1 * spectrum.max()  # the fundamental is prominent


def test_motor_hum_other_sample_rate():
    x = motor_hum(8000, np.random.default_rng(0), sample_rate=8000)
    assert x.shape == (8000,) and np.all(np.isfinite(x))
    with pytest.raises(ValueError, match="sample_rate"):
        motor_hum(10, np.random.default_rng(0), sample_rate=0)


def test_babble_requires_pool():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="speech_pool"):
        make_noise("babble", N, rng)
    with pytest.raises(ValueError, match="speech_pool"):
        babble(N, rng, [])
    with pytest.raises(ValueError, match="empty or not 1-D"):
        babble(N, rng, [np.zeros(0, dtype=np.float32)])


def test_babble_covers_the_window():
    x = babble(N, np.random.default_rng(1), fake_pool(np.random.default_rng(2)))
    frames = x.reshape(-1, 800)  # 50 ms frames
    frame_rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    assert (frame_rms > 0.01).mean() > 0.9


def test_unknown_kind_and_bad_n():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="'brown'"):
        make_noise("brown", N, rng)
    with pytest.raises(ValueError, match="n=-1"):
        white_noise(-1, rng)


# --------------------------------------------------------------------------- mixing


def test_rms_dbfs():
    t = np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    assert rms_dbfs(np.sin(2 * np.pi * 100 * t)) == pytest.approx(-3.01, abs=0.01)
    assert rms_dbfs(np.full(10, 0.1)) == pytest.approx(-20.0)
    assert rms_dbfs(np.zeros(10)) == float("-inf")
    assert rms_dbfs(np.zeros(0)) == float("-inf")


def test_active_span():
    x = tone_burst(start=8000, length=12000)
    a, b = active_span(x)
    assert 8000 <= a < 8010 and 19990 < b <= 20000
    assert active_span(np.zeros(10)) == (0, 0)


@pytest.mark.parametrize("kind", ["white", "motor", "babble"])
@pytest.mark.parametrize("target", [-5.0, 0.0, 5.0, 10.0, 20.0, 30.0])
def test_mix_at_snr_hits_target(kind, target):
    speech = tone_burst(amplitude=0.1)  # quiet enough that even -5 dB noise never clips
    rng = np.random.default_rng(int(target) + 100)
    noise = make_noise(kind, N, rng, speech_pool=fake_pool(rng))
    mix = mix_at_snr(speech, noise, target)
    assert mix.dtype == np.float32 and mix.shape == speech.shape
    assert np.abs(mix).max() < 1.0  # no clipping at these levels, so the measure is exact
    measured = snr_db(speech, mix.astype(np.float64) - speech)
    assert measured == pytest.approx(target, abs=0.5)


def test_snr_ignores_padding_length():
    # Same burst in a longer window of zeros: same SNR definition, same noise level.
    rng = np.random.default_rng(0)
    short = tone_burst()
    long = np.concatenate([short, np.zeros(N, dtype=np.float32)])
    noise = white_noise(2 * N, rng)
    m_short = mix_at_snr(short, noise[:N], 10.0) - short
    m_long = mix_at_snr(long, noise, 10.0) - long
    assert rms_dbfs(m_short) == pytest.approx(rms_dbfs(m_long), abs=0.3)


def test_mix_infinite_snr_and_errors():
    speech = tone_burst()
    noise = white_noise(N, np.random.default_rng(0))
    assert np.array_equal(mix_at_snr(speech, noise, float("inf")), speech)
    with pytest.raises(ValueError, match="same length"):
        mix_at_snr(speech, noise[:-1], 10.0)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(np.zeros(N, dtype=np.float32), noise, 10.0)
    with pytest.raises(ValueError, match="snr_db"):
        mix_at_snr(speech, noise, float("nan"))
    with pytest.raises(ValueError, match="noise is silent"):
        mix_at_snr(speech, np.zeros(N, dtype=np.float32), 10.0)
    assert snr_db(speech, np.zeros(N)) == float("inf")


def test_mix_clips_to_unit_range():
    speech = tone_burst(amplitude=0.99)
    noise = white_noise(N, np.random.default_rng(0))
    mix = mix_at_snr(speech, noise, -10.0)
    assert mix.dtype == np.float32
    assert mix.max() == pytest.approx(1.0) and mix.min() == pytest.approx(-1.0)
    assert np.abs(mix).max() <= 1.0


def test_mix_is_deterministic():
    speech = tone_burst()
    n1 = make_noise("motor", N, np.random.default_rng(5))
    n2 = make_noise("motor", N, np.random.default_rng(5))
    assert np.array_equal(mix_at_snr(speech, n1, 5.0), mix_at_snr(speech, n2, 5.0))


@settings(max_examples=60, deadline=None)
@given(
    speech=arrays(np.float32, st.integers(16, 400), elements=st.floats(-1, 1, width=32)),
    seed=st.integers(0, 2**32 - 1),
    target=st.floats(-30, 60),
    noise_scale=st.floats(1e-3, 10),
)
def test_mix_property_bounds_and_dtype(speech, seed, target, noise_scale):
    assume(np.abs(speech).max() > 1e-2)
    noise = (white_noise(speech.size, np.random.default_rng(seed)) * noise_scale).astype(np.float32)
    mix = mix_at_snr(speech, noise, target)
    assert mix.dtype == np.float32
    assert mix.shape == speech.shape
    assert np.all(np.isfinite(mix))
    assert np.all(mix <= 1.0) and np.all(mix >= -1.0)
