"""Training-time variation of what the model must ignore: speaker, room, microphone, level.

espeak-ng varies accent, voice, rate and pitch at synthesis time
(``sim.speech.random_request``). This module varies the rest, on the
synthesized utterance before it is placed in the 2 s window:

- speed perturbation (Ko et al. 2015): resampling by 0.85-1.15, which moves
  tempo, pitch and formants together, as a faster or smaller speaker does;
- vocal-tract-length perturbation (Jaitly & Hinton 2013): the spectrum's
  frequency axis warped by 0.85-1.15 below a cut-off, which moves formants
  without changing duration;
- room reverberation: impulse responses of ``pyroomacoustics`` image-source
  shoebox rooms of several sizes and reverberation times (0.15-0.9 s), with
  the microphone 0.3-3 m from the talker;
- microphone responses and band limits: the telephone band (300-3400 Hz), a
  cheap MEMS microphone (rising low-end cut, a presence bump), a band limit at
  4 or 6 kHz (8 or 12 kHz devices), and a random 5-band equaliser (+-6 dB).

and on the whole window after noise is mixed in: level changes and clipping
(``level_and_clip``), as a microphone's gain stage and ADC apply them.

Every function takes a ``numpy.random.Generator`` and is deterministic for it.
The room impulse responses are the expensive part (~0.1 s each); ``RirBank``
makes a fixed set once per seed and caches it under ``data/``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from edge.contract.wav import resample
from reference_model.errors import ConfigError
from reference_model.io import atomic_write
from sim.speech import SAMPLE_RATE_HZ

SPEED_RANGE = (0.85, 1.15)
VTLP_RANGE = (0.85, 1.15)
VTLP_CUTOFF_HZ = 4800.0  # warp below this, then a line to Nyquist (Jaitly & Hinton's boundary)
ROOM_SIZE_M = ((3.0, 10.0), (2.5, 8.0), (2.4, 3.5))  # length, width, height ranges
RT60_RANGE_S = (0.15, 0.9)
MIC_DISTANCE_M = (0.3, 3.0)
RIR_MAX_S = 0.6  # impulse responses are cut here; the tail beyond is far below the direct sound
EQ_BANDS_HZ = (150.0, 400.0, 1000.0, 2500.0, 5000.0)
EQ_GAIN_DB = 6.0
MIC_KINDS = ("flat", "telephone", "mems", "band4k", "band6k", "eq")
LEVEL_DB = (-20.0, 6.0)  # whole-window gain after mixing
CLIP_FRACTION = 0.1  # windows driven into the ADC's limits
CLIP_LEVEL = (0.2, 0.6)  # where those clip, as a fraction of full scale


@dataclass(frozen=True)
class AugmentConfig:
    """How often each variation is applied to a training utterance (probabilities)."""

    speed: float = 0.5
    vtlp: float = 0.5
    reverb: float = 0.5
    mic: float = 0.6
    level: float = 1.0
    rirs: int = 96  # impulse responses in the bank

    def __post_init__(self) -> None:
        for name in ("speed", "vtlp", "reverb", "mic", "level"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"augment.{name} is a probability in [0, 1], got {p!r}")
        if self.rirs < 1:
            raise ConfigError(f"augment.rirs must be >= 1, got {self.rirs!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch and formants move with it): the audio read as if it had been
    recorded at ``factor`` times the rate (to the nearest 1 %), resampled back with the training corpus's
    filter (``edge.contract.wav.resample``)."""
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed factor {factor!r} is outside 0.5..2")
    return resample(x, int(round(100 * factor)), 100, method="polyphase")


def vtlp(x: np.ndarray, alpha: float, n_fft: int = 512) -> np.ndarray:
    """Warp the frequency axis by ``alpha`` below VTLP_CUTOFF_HZ (formants move, duration stays)."""
    if not 0.5 <= alpha <= 2.0:
        raise ValueError(f"VTLP factor {alpha!r} is outside 0.5..2")
    if len(x) < n_fft:
        return x.astype(np.float32)
    hop = n_fft // 4
    _, _, spec = signal.stft(x, fs=SAMPLE_RATE_HZ, nperseg=n_fft, noverlap=n_fft - hop)
    freqs = np.linspace(0.0, SAMPLE_RATE_HZ / 2.0, spec.shape[0])
    nyquist = SAMPLE_RATE_HZ / 2.0
    boundary = VTLP_CUTOFF_HZ * min(alpha, 1.0) / alpha
    # Output frequency f takes the input at warp^-1(f): linear (f / alpha) up to the
    # boundary, then a line that meets Nyquist, so no content is pushed off the band.
    lo = freqs <= boundary * alpha
    source = np.empty_like(freqs)
    source[lo] = freqs[lo] / alpha
    top = boundary * alpha
    source[~lo] = boundary + (freqs[~lo] - top) * (nyquist - boundary) / (nyquist - top)
    # Magnitudes are interpolated; phases are taken from the nearest source bin (interpolating
    # complex values between bins of unrelated phase would cancel energy).
    pos = source / freqs[1]
    left = np.clip(np.floor(pos).astype(int), 0, len(freqs) - 2)
    frac = (pos - left)[:, None].astype(np.float32)
    spec = spec.astype(np.complex64)
    mag = np.abs(spec)
    warped_mag = mag[left] * (1.0 - frac) + mag[left + 1] * frac
    nearest = np.clip(np.rint(pos).astype(int), 0, len(freqs) - 1)
    warped = spec[nearest] * (warped_mag / np.maximum(mag[nearest], 1e-12))  # |.| warped, phase of the nearest bin
    _, y = signal.istft(warped, fs=SAMPLE_RATE_HZ, nperseg=n_fft, noverlap=n_fft - hop)
    return y[: len(x)].astype(np.float32)


def room_impulse_response(rng: np.random.Generator) -> np.ndarray:
    """One image-source RIR of a random shoebox room, talker 0.3-3 m from the mic, direct path at 0."""
    import pyroomacoustics as pra  # lazy: training only

    dims = np.array([rng.uniform(*r) for r in ROOM_SIZE_M])
    rt60 = float(rng.uniform(*RT60_RANGE_S))
    try:
        absorption, max_order = pra.inverse_sabine(rt60, dims)
    except ValueError:  # a reverberation time this room cannot have: fall back to a drier one
        absorption, max_order = pra.inverse_sabine(RT60_RANGE_S[0] * 1.5, dims)
    max_order = min(int(max_order), 12)  # the late tail of a high order adds time, not realism
    room = pra.ShoeBox(dims, fs=SAMPLE_RATE_HZ, materials=pra.Material(absorption), max_order=max_order)
    margin = 0.25
    mic = np.array([rng.uniform(margin, d - margin) for d in dims[:2]] + [rng.uniform(0.5, min(1.8, dims[2] - 0.3))])
    for _ in range(100):  # a talker position at the drawn distance that lies inside the room
        distance = rng.uniform(*MIC_DISTANCE_M)
        direction = rng.normal(size=3)
        direction[2] *= 0.2
        direction /= np.linalg.norm(direction)
        src = mic + distance * direction
        if np.all(src > margin) and np.all(src < dims - margin):
            break
    else:
        src = np.clip(mic + np.array([0.5, 0.0, 0.0]), margin, dims - margin)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    onset = int(np.argmax(np.abs(rir)))
    rir = rir[onset: onset + int(RIR_MAX_S * SAMPLE_RATE_HZ)]
    return (rir / (np.abs(rir[0]) + 1e-12)).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` as heard through ``rir`` (same length, same peak level)."""
    y = signal.fftconvolve(x, rir)[: len(x)]
    peak_in, peak_out = np.abs(x).max(), np.abs(y).max()
    return (y * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def _peaking(f0: float, gain_db: float, q: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """RBJ audio-EQ-cookbook peaking biquad."""
    a = 10 ** (gain_db / 40.0)
    w0 = 2 * np.pi * f0 / SAMPLE_RATE_HZ
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return b / den[0], den / den[0]


@functools.lru_cache(maxsize=None)
def _fixed_filter(kind: str) -> np.ndarray:
    """Second-order sections of the fixed channel filters (designed once)."""
    nyq = SAMPLE_RATE_HZ / 2.0
    if kind == "telephone":
        return signal.butter(4, [300.0 / nyq, 3400.0 / nyq], btype="band", output="sos")
    return signal.butter(8, (3800.0 if kind == "band4k" else 5800.0) / nyq, output="sos")


def microphone(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` through a microphone/channel response of ``kind`` (one of MIC_KINDS)."""
    nyq = SAMPLE_RATE_HZ / 2.0
    if kind == "flat":
        return x.astype(np.float32)
    if kind == "telephone":
        y = signal.sosfilt(_fixed_filter(kind), x)
    elif kind == "mems":
        sos = signal.butter(2, rng.uniform(80.0, 250.0) / nyq, btype="high", output="sos")
        b, a = _peaking(rng.uniform(2500.0, 5000.0), rng.uniform(3.0, 8.0), q=0.8)
        y = signal.lfilter(b, a, signal.sosfilt(sos, x))
    elif kind in ("band4k", "band6k"):
        y = signal.sosfilt(_fixed_filter(kind), x)
    elif kind == "eq":
        y = np.asarray(x, dtype=np.float64)
        for f0 in EQ_BANDS_HZ:
            b, a = _peaking(f0 * rng.uniform(0.8, 1.25), rng.uniform(-EQ_GAIN_DB, EQ_GAIN_DB))
            y = signal.lfilter(b, a, y)
    else:
        raise ValueError(f"unknown microphone kind {kind!r}; expected one of {MIC_KINDS}")
    return y.astype(np.float32)


def level_and_clip(window: np.ndarray, rng: np.random.Generator, p: float = 1.0) -> np.ndarray:
    """A gain stage and an ADC: the window's level moved by LEVEL_DB; some windows clip."""
    y = np.asarray(window, dtype=np.float32)
    if rng.random() < p:
        y = y * np.float32(10 ** (rng.uniform(*LEVEL_DB) / 20.0))
    if rng.random() < CLIP_FRACTION:
        peak = float(np.abs(y).max())
        if peak > 0:
            level = rng.uniform(*CLIP_LEVEL)
            y = np.clip(y / peak, -level, level) / level  # drive it into the limits, then back to full scale
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def augment_utterance(x: np.ndarray, rng: np.random.Generator, config: AugmentConfig,
                      rirs: np.ndarray | None, max_samples: int | None = None) -> np.ndarray:
    """One random variation of an utterance: speed, VTLP, room, microphone (each with its probability).

    ``max_samples``: slowing down never makes the utterance longer than this (cropping
    would cut words off and make its label wrong).
    """
    y = np.asarray(x, dtype=np.float32)
    if rng.random() < config.speed:
        low = SPEED_RANGE[0] if max_samples is None else max(SPEED_RANGE[0], 1.02 * len(y) / max_samples)
        y = speed_perturb(y, rng.uniform(low, max(low, SPEED_RANGE[1])))
    if rng.random() < config.vtlp:
        y = vtlp(y, rng.uniform(*VTLP_RANGE))
    if rirs is not None and len(rirs) and rng.random() < config.reverb:
        y = reverberate(y, rirs[int(rng.integers(len(rirs)))])
    if rng.random() < config.mic:
        y = microphone(y, MIC_KINDS[1 + int(rng.integers(len(MIC_KINDS) - 1))], rng)
    peak = float(np.abs(y).max())
    return (y * (np.abs(x).max() / peak) if peak > 0 else y).astype(np.float32)


def rir_bank(n: int, seed: int, cache_dir: Path | None = None) -> np.ndarray:
    """``n`` room impulse responses [n, RIR_MAX_S * 16 kHz] (zero-padded), cached under ``cache_dir``."""
    path = Path(cache_dir) / f"rirs-{n}-{seed}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        return np.load(path)
    rng = np.random.default_rng([seed, 4241])
    out = np.zeros((n, int(RIR_MAX_S * SAMPLE_RATE_HZ)), np.float32)
    for i in range(n):
        rir = room_impulse_response(rng)
        out[i, : len(rir)] = rir
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.save(f, out))
    return out
