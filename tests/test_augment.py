"""Training augmentation: each variation does what it says, measured on signals with known content."""

from __future__ import annotations

import numpy as np
import pytest

from reference_model import augment as A
from reference_model.errors import ConfigError

SR = 16000


def _tone(f: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-20))


def test_speed_perturbation_scales_duration_and_pitch_together():
    x = _tone(500)
    fast = A.speed_perturb(x, 1.15)
    assert abs(len(fast) - len(x) / 1.15) < 2
    assert _peak_hz(fast) == pytest.approx(500 * 1.15, abs=3)
    with pytest.raises(ValueError, match="outside"):
        A.speed_perturb(x, 3.0)


def test_vtlp_moves_the_spectral_envelope_and_keeps_the_duration():
    rng = np.random.default_rng(0)
    # noise through a resonance at 1 kHz: a "formant"
    from scipy import signal

    b, a = A._peaking(1000.0, 20.0, q=4.0)
    x = signal.lfilter(b, a, 0.05 * rng.standard_normal(SR)).astype(np.float32)
    for alpha in (0.85, 1.15):
        y = A.vtlp(x, alpha)
        assert len(y) == len(x)
        spec = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(len(y), 1 / SR)
        smooth = np.convolve(spec, np.ones(64) / 64, mode="same")
        assert f[np.argmax(smooth)] == pytest.approx(1000 * alpha, rel=0.06)


def test_room_impulse_responses_start_with_the_direct_path_and_add_a_tail():
    rng = np.random.default_rng(1)
    rir = A.room_impulse_response(rng)
    assert rir[0] == pytest.approx(1.0) and len(rir) <= A.RIR_MAX_S * SR
    assert np.abs(rir[1:]).max() < 1.0
    click = np.zeros(SR, np.float32)
    click[100] = 0.5
    wet = A.reverberate(click, rir)
    assert len(wet) == SR and np.abs(wet).max() == pytest.approx(0.5, rel=1e-4)
    tail = np.sum(wet[2000:] ** 2)
    assert tail > 1e-4 * np.sum(wet**2)  # energy arrives long after the click


def test_rir_bank_is_deterministic_and_cached(tmp_path):
    first = A.rir_bank(3, seed=5, cache_dir=tmp_path)
    assert (tmp_path / "rirs-3-5.npy").is_file()
    np.testing.assert_array_equal(A.rir_bank(3, seed=5, cache_dir=tmp_path), first)
    np.testing.assert_array_equal(A.rir_bank(3, seed=5), first)
    assert not np.array_equal(A.rir_bank(3, seed=6)[0], first[0])


@pytest.mark.parametrize("kind, keep, cut", [
    ("telephone", (900, 1100), [(50, 150), (5000, 7000)]),
    ("band4k", (900, 1100), [(4500, 7500)]),
    ("band6k", (900, 1100), [(6500, 7900)]),
])
def test_band_limited_microphones_remove_what_their_band_excludes(kind, keep, cut):
    x = np.random.default_rng(2).standard_normal(SR).astype(np.float32) * 0.1
    y = A.microphone(x, kind, np.random.default_rng(0))
    kept = _band_db(y, *keep) - _band_db(x, *keep)
    assert kept > -3
    for lo, hi in cut:
        assert _band_db(y, lo, hi) - _band_db(x, lo, hi) < kept - 20, (kind, lo, hi)


def test_every_microphone_kind_runs_and_an_unknown_one_is_refused():
    x = _tone(700)
    rng = np.random.default_rng(3)
    for kind in A.MIC_KINDS:
        y = A.microphone(x, kind, rng)
        assert y.shape == x.shape and np.isfinite(y).all()
    with pytest.raises(ValueError, match="unknown microphone kind"):
        A.microphone(x, "carbon", rng)


def test_level_and_clipping_stay_in_full_scale_and_sometimes_clip():
    rng = np.random.default_rng(4)
    x = _tone(300, amp=0.3)  # at most +6 dB of gain never clips this; only the ADC overdrive does
    outs = [A.level_and_clip(x, rng) for _ in range(200)]
    assert all(np.abs(y).max() <= 1.0 for y in outs)
    flat_tops = sum(np.mean(np.abs(y) >= 0.999) > 0.1 for y in outs)
    assert 8 <= flat_tops <= 35  # about CLIP_FRACTION (10 %) of 200


def test_augment_utterance_is_deterministic_keeps_the_peak_and_never_overruns_the_window():
    x = _tone(200, seconds=1.85)
    config = A.AugmentConfig(speed=1.0, vtlp=1.0, reverb=1.0, mic=1.0)
    rirs = A.rir_bank(4, seed=0)
    a = A.augment_utterance(x, np.random.default_rng(7), config, rirs, max_samples=32000)
    b = A.augment_utterance(x, np.random.default_rng(7), config, rirs, max_samples=32000)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() == pytest.approx(np.abs(x).max(), rel=1e-4)
    for seed in range(20):
        assert len(A.augment_utterance(x, np.random.default_rng(seed), config, rirs, max_samples=32000)) <= 32000


def test_config_probabilities_are_checked():
    with pytest.raises(ConfigError, match="augment.reverb"):
        A.AugmentConfig(reverb=1.5)
    with pytest.raises(ConfigError, match="rirs"):
        A.AugmentConfig(rirs=0)
