"""Background noise for the simulated microphone, and mixing at a target SNR.

Every generator returns float32 mono at NOISE_RMS_DBFS so that kinds are
interchangeable; ``mix_at_snr`` then sets the actual level relative to the
speech. SNR definition (used by both ``mix_at_snr`` and ``snr_db``):

    SNR = 10 log10( mean(speech[a:b]**2) / mean(noise[a:b]**2) )

where [a, b) is the *active span* of the speech: from its first to its last
sample whose magnitude exceeds ACTIVE_THRESHOLD. Speech sits in a 2 s window
padded with zeros, so averaging over the whole window would make the SNR
depend on the utterance length; pauses between words inside the span do
count, as they would for a listener. Noise is measured over the same span
because that is the noise that actually overlaps the words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ

__all__ = [
    "ACTIVE_THRESHOLD", "NOISE_KINDS", "NOISE_RMS", "NOISE_RMS_DBFS", "SAMPLE_RATE_HZ",
    "active_span", "babble", "make_noise", "mix_at_snr", "motor_hum", "pink_noise", "rms_dbfs",
    "snr_db", "white_noise",
]  # fmt: skip

NOISE_RMS_DBFS = -20.0  # level every generator returns (RMS re full scale 1.0)
NOISE_RMS = 10 ** (NOISE_RMS_DBFS / 20)
ACTIVE_THRESHOLD = 10 ** (-60 / 20)  # |x| above -60 dBFS counts as speech

NOISE_KINDS: tuple[str, ...] = ("white", "motor", "babble")

# Small DC gear motor: fundamental (rotation/gear mesh) with harmonics that
# fall off, a slow wobble in speed and load, and a faint broadband whine from
# the brushes/commutator.
MOTOR_F0_RANGE_HZ = (80.0, 250.0)
MOTOR_HARMONICS = (2, 8)  # inclusive range for the number of harmonics (incl. fundamental)
MOTOR_HARMONIC_MAX_HZ = 1000.0  # hum harmonics stop here; only the whine is above
MOTOR_FREQ_WOBBLE_DEPTH = (0.005, 0.03)  # fraction of f0
MOTOR_AMP_WOBBLE_DEPTH = (0.05, 0.2)  # fraction of amplitude
MOTOR_WOBBLE_RATE_HZ = (0.2, 2.0)
MOTOR_WHINE_BAND_HZ = (2000.0, 5000.0)
MOTOR_WHINE_POWER_FRACTION = (0.02, 0.08)  # share of total power in the whine

BABBLE_TALKERS = (3, 6)  # inclusive
BABBLE_GAIN_DB = (-6.0, 0.0)
BABBLE_PAUSE_S = (0.05, 0.4)  # gap between one talker's utterances


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r}; use a non-negative int number of samples")
    return int(n)


def _normalize(x: np.ndarray, rms: float = NOISE_RMS) -> np.ndarray:
    current = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if current == 0.0:
        return x.astype(np.float32)
    return (x * (rms / current)).astype(np.float32)


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB re full scale 1.0 (so a full-scale sine is -3.01 dBFS); -inf for silence."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(x))))
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, float32, at NOISE_RMS_DBFS."""
    n = _check_n(n)
    return _normalize(rng.standard_normal(n))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f (pink) noise by spectral shaping of white noise, float32, at NOISE_RMS_DBFS."""
    n = _check_n(n)
    if n < 2:
        return white_noise(n, rng)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0  # avoid dividing by zero; DC is removed below anyway
    spectrum /= np.sqrt(freqs)
    spectrum[0] = 0.0
    return _normalize(np.fft.irfft(spectrum, n))


def _bandpass_noise(
    n: int, rng: np.random.Generator, low_hz: float, high_hz: float, sample_rate: int
) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0.0
    return np.fft.irfft(spectrum, n)


def motor_hum(n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Hum of a small DC gear motor, float32, at NOISE_RMS_DBFS.

    A fundamental drawn from MOTOR_F0_RANGE_HZ with decaying harmonics below
    MOTOR_HARMONIC_MAX_HZ, slow sinusoidal wobble of speed and amplitude, plus
    a few percent of band-limited broadband whine (MOTOR_WHINE_BAND_HZ).
    """
    n = _check_n(n)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}; use a positive int in Hz")
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / sample_rate
    f0 = rng.uniform(*MOTOR_F0_RANGE_HZ)
    wobble_rate = rng.uniform(*MOTOR_WOBBLE_RATE_HZ)
    freq_depth = rng.uniform(*MOTOR_FREQ_WOBBLE_DEPTH)
    amp_depth = rng.uniform(*MOTOR_AMP_WOBBLE_DEPTH)
    # Speed wobble: integrate the instantaneous frequency to get the phase so
    # that all harmonics stay locked to the fundamental.
    inst_freq = f0 * (1.0 + freq_depth * np.sin(2 * np.pi * wobble_rate * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(inst_freq) / sample_rate
    n_harmonics = int(rng.integers(MOTOR_HARMONICS[0], MOTOR_HARMONICS[1] + 1))
    max_hz = min(MOTOR_HARMONIC_MAX_HZ, 0.45 * sample_rate)
    rolloff = rng.uniform(0.7, 1.5)  # amplitude ~ 1/k**rolloff
    hum = np.zeros(n, dtype=np.float64)
    for k in range(1, n_harmonics + 1):
        if k * f0 * (1 + freq_depth) > max_hz:
            break
        hum += (1.0 / k**rolloff) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    # Load wobble at a different, unrelated slow rate.
    amp_rate = rng.uniform(*MOTOR_WOBBLE_RATE_HZ)
    hum *= 1.0 + amp_depth * np.sin(2 * np.pi * amp_rate * t + rng.uniform(0, 2 * np.pi))
    hum = _normalize(hum, 1.0).astype(np.float64)

    low, high = MOTOR_WHINE_BAND_HZ
    high = min(high, 0.45 * sample_rate)
    if low < high and n >= 2:
        whine = _normalize(_bandpass_noise(n, rng, low, high, sample_rate), 1.0).astype(np.float64)
        frac = rng.uniform(*MOTOR_WHINE_POWER_FRACTION)
        hum = np.sqrt(1.0 - frac) * hum + np.sqrt(frac) * whine
    return _normalize(hum)


def babble(n: int, rng: np.random.Generator, speech_pool: Sequence[np.ndarray]) -> np.ndarray:
    """Cocktail-party babble: 3-6 overlapping talkers drawn from ``speech_pool``.

    Each talker says random pool utterances back to back (short random pauses)
    from a random start, so the babble covers the whole output; talkers get
    random gains in BABBLE_GAIN_DB. Output float32 at NOISE_RMS_DBFS.

    Args:
        n: output length in samples.
        rng: randomness.
        speech_pool: 1-D utterances at SAMPLE_RATE_HZ (e.g. synthesized
            ``distractor_phrases()`` in voices other than the command's).

    Raises:
        ValueError: if the pool is empty or contains no non-empty 1-D array.
    """
    n = _check_n(n)
    if speech_pool is None or len(speech_pool) == 0:
        raise ValueError(
            "babble needs a non-empty speech_pool of 1-D utterances; synthesize some distractor "
            "speech (sim.commands.distractor_phrases() with sim.speech.synthesize_many) and pass it"
        )
    pool = [np.asarray(u, dtype=np.float32) for u in speech_pool]
    bad = [i for i, u in enumerate(pool) if u.ndim != 1 or u.size == 0]
    if bad:
        raise ValueError(f"speech_pool entries {bad[:10]} are empty or not 1-D; pass mono utterances")
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)
    n_talkers = int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))
    for _ in range(n_talkers):
        talker = np.zeros(n, dtype=np.float64)
        first = pool[int(rng.integers(len(pool)))]
        pos = -int(rng.integers(first.size))  # start mid-utterance so talkers are out of step
        utt = first
        while pos < n:
            start, stop = max(pos, 0), min(pos + utt.size, n)
            if stop > start:
                talker[start:stop] += utt[start - pos : stop - pos]
            pos += utt.size + int(rng.uniform(*BABBLE_PAUSE_S) * SAMPLE_RATE_HZ)
            utt = pool[int(rng.integers(len(pool)))]
        rms = float(np.sqrt(np.mean(talker**2)))
        if rms > 0:
            # Equalise talkers before the random gain, so the gain alone sets the mix.
            out += talker / rms * 10 ** (rng.uniform(*BABBLE_GAIN_DB) / 20)
    return _normalize(out)


def make_noise(
    kind: str,
    n: int,
    rng: np.random.Generator,
    speech_pool: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Noise of ``kind`` (one of NOISE_KINDS, or "pink"), float32 at NOISE_RMS_DBFS.

    Raises:
        ValueError: unknown kind, or "babble" without a speech pool.
    """
    if kind == "white":
        return white_noise(n, rng)
    if kind == "motor":
        return motor_hum(n, rng)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        if speech_pool is None:
            raise ValueError(
                "noise kind 'babble' needs speech_pool (a list of 1-D speech arrays); "
                "synthesize distractor phrases and pass them"
            )
        return babble(n, rng, speech_pool)
    raise ValueError(f"unknown noise kind {kind!r}; use one of {NOISE_KINDS + ('pink',)}")


def active_span(x: np.ndarray) -> tuple[int, int]:
    """[start, stop) from the first to the last sample with |x| > ACTIVE_THRESHOLD; (0, 0) if none."""
    loud = np.flatnonzero(np.abs(np.asarray(x)) > ACTIVE_THRESHOLD)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]), int(loud[-1]) + 1


def _active_powers(speech: np.ndarray, noise: np.ndarray) -> tuple[float, float]:
    speech = np.asarray(speech, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if speech.ndim != 1 or noise.ndim != 1:
        raise ValueError(f"speech and noise must be 1-D, got shapes {speech.shape} and {noise.shape}")
    if speech.shape != noise.shape:
        raise ValueError(
            f"speech has {speech.size} samples but noise has {noise.size}; make noise of the same length"
        )
    a, b = active_span(speech)
    if b == a:
        raise ValueError(
            f"speech is silent (no sample above {ACTIVE_THRESHOLD:.0e}); cannot define an SNR"
        )
    return float(np.mean(speech[a:b] ** 2)), float(np.mean(noise[a:b] ** 2))


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """Measured SNR in dB per the module's definition (+inf if the noise is zero there).

    Raises:
        ValueError: shape mismatch or silent ``clean``.
    """
    p_speech, p_noise = _active_powers(clean, noise)
    if p_noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(p_speech / p_noise))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` scaled so that the speech-to-noise ratio is ``snr_db``.

    See the module docstring for how SNR is measured. The result is clipped to
    [-1, 1]; heavy clipping (very loud speech or very low SNR) makes the
    measured SNR of the clipped mix deviate from ``snr_db``.

    Args:
        speech: 1-D clean speech (usually a zero-padded window).
        noise: 1-D noise of the same length.
        snr_db: target SNR in dB; +inf returns the speech alone.

    Returns:
        float32 mix in [-1, 1], same length as the inputs.

    Raises:
        ValueError: shape mismatch, silent speech, NaN SNR, or noise that is
            silent over the speech's active span (it cannot be scaled up).
    """
    snr = float(snr_db)
    if np.isnan(snr) or snr == float("-inf"):
        raise ValueError(f"snr_db={snr_db!r}; use a finite number of dB (or +inf for no noise)")
    p_speech, p_noise = _active_powers(speech, noise)
    speech64 = np.asarray(speech, dtype=np.float64)
    if snr == float("inf"):
        mix = speech64
    else:
        if p_noise == 0.0:
            raise ValueError("noise is silent over the speech's active span; cannot scale it to an SNR")
        gain = np.sqrt(p_speech / (p_noise * 10 ** (snr / 10)))
        mix = speech64 + gain * np.asarray(noise, dtype=np.float64)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)
