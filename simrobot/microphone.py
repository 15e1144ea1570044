"""Simulated microphone: background noise plus speech synthesized on demand, in real time.

A feeder thread writes 20 ms blocks on the real-time schedule of
``FeederMicrophone``: a looped background-noise bed from ``sim.noise`` at
``noise_dbfs`` plus whatever was injected. ``say(text)`` synthesizes with
espeak-ng (``sim.speech``) in the *caller's* thread, so the feeder never
waits on a subprocess, then schedules the utterance to start at the first
block not yet written and returns that block's start time. ``sim`` is
imported only on connect and on ``say``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from edge.sensors.audio_ring import SAMPLE_RATE_HZ
from edge.sensors.errors import DeviceNotConnectedError, MicrophoneConfigError, MicrophoneError
from edge.sensors.microphone import FeederMicrophone, FeederMicrophoneConfig

__all__ = ["NOISE_KINDS", "SimMicrophone", "SimMicrophoneConfig"]

NOISE_KINDS = ("white", "pink", "motor")
DEFAULT_NOISE_DBFS = -50.0        # a quiet room
NOISE_LOOP_S = 10.0               # the noise bed is generated once and looped (pink noise loops seamlessly)
MAX_PENDING_INJECTIONS = 16       # utterances scheduled or playing at once
MAX_INJECTION_S = 60.0
DEFAULT_VOICE = "en-us"


@dataclass
class SimMicrophoneConfig(FeederMicrophoneConfig):
    """Settings of the simulated microphone.

    Attributes:
        noise: background noise kind ("white", "pink", "motor") or None for silence.
        noise_dbfs: RMS level of the noise bed in dBFS.
        seed: seeds the noise bed.
        voice: default espeak-ng voice for ``say``, "base" or "base+variant" (e.g. "en-us+m3").
        speech_cache_dir: where synthesized speech is cached (None: no cache).
    """

    noise: str | None = "pink"
    noise_dbfs: float = DEFAULT_NOISE_DBFS
    seed: int = 0
    voice: str = DEFAULT_VOICE
    speech_cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise is not None and self.noise not in NOISE_KINDS:
            raise MicrophoneConfigError(f"noise={self.noise!r}; use one of {NOISE_KINDS} or None")
        ok = isinstance(self.noise_dbfs, (int, float)) and not isinstance(self.noise_dbfs, bool)
        if not (ok and math.isfinite(self.noise_dbfs) and self.noise_dbfs <= 0):
            raise MicrophoneConfigError(f"noise_dbfs={self.noise_dbfs!r}; use a level <= 0 dBFS (e.g. -50)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise MicrophoneConfigError(f"seed={self.seed!r}; use an int")
        if not isinstance(self.voice, str) or not self.voice:
            raise MicrophoneConfigError(f"voice={self.voice!r}; use an espeak-ng voice like 'en-us' or 'en-us+m3'")


def parse_voice(spec: object):
    """A ``sim.speech.Voice`` from a Voice, "base" or "base+variant"."""
    from sim.speech import Voice

    if isinstance(spec, Voice):
        return spec
    if not isinstance(spec, str):
        raise MicrophoneConfigError(f"voice={spec!r}; use a sim.speech.Voice or a string like 'en-us+m3'")
    base, _, variant = spec.partition("+")
    try:
        return Voice(base, variant or None)
    except ValueError as exc:
        raise MicrophoneConfigError(f"voice {spec!r}: {exc}") from exc


class SimMicrophone(FeederMicrophone):
    """Noise bed plus injected or synthesized speech, written to the ring in real time."""

    config_class = SimMicrophoneConfig

    def __init__(self, config: SimMicrophoneConfig) -> None:
        super().__init__(config)
        self.config: SimMicrophoneConfig = config
        self._voice = None
        self._noise = np.zeros(0, dtype=np.float32)
        self._injections: list[tuple[int, np.ndarray]] = []  # (start index, samples), guarded by _sched

    @property
    def name(self) -> str:
        return f"SimMicrophone(noise={self.config.noise})"

    def _prepare(self) -> int:
        cfg = self.config
        self._voice = parse_voice(cfg.voice)
        with self._sched:
            self._injections = []
        if cfg.noise is None:
            self._noise = np.zeros(0, dtype=np.float32)
            return SAMPLE_RATE_HZ
        from sim.noise import NOISE_RMS_DBFS, make_noise

        rng = np.random.default_rng(cfg.seed)
        bed = make_noise(cfg.noise, int(NOISE_LOOP_S * SAMPLE_RATE_HZ), rng)
        self._noise = (bed * 10 ** ((cfg.noise_dbfs - NOISE_RMS_DBFS) / 20)).astype(np.float32)
        return SAMPLE_RATE_HZ

    def _make_block(self, start: int, n: int) -> np.ndarray:
        if self._noise.size:
            block = self._noise[(start + np.arange(n)) % self._noise.size]  # a copy: fancy indexing
        else:
            block = np.zeros(n, dtype=np.float32)
        keep = []
        for s0, samples in self._injections:
            lo, hi = max(start, s0), min(start + n, s0 + samples.size)
            if lo < hi:
                block[lo - start:hi - start] += samples[lo - s0:hi - s0]
            if s0 + samples.size > start + n:
                keep.append((s0, samples))
        self._injections = keep
        return np.clip(block, -1.0, 1.0)

    def inject(self, samples: np.ndarray, gain: float = 1.0) -> float:
        """Mix 16 kHz mono ``samples`` (times ``gain``) in, starting at the next block to be written.

        Returns:
            The capture time (edge.sensors.clock) of the first injected sample.
            If the feeder has to resynchronise after a host stall before that
            block, ``ring.time_of`` of the start index is the authoritative time.

        Raises:
            DeviceNotConnectedError: not connected.
            MicrophoneError: bad samples, or MAX_PENDING_INJECTIONS already pending.
        """
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name} is not connected; connect() before injecting audio")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise MicrophoneError(f"inject takes non-empty 1-D mono samples at 16 kHz, got shape {x.shape}")
        if x.size > MAX_INJECTION_S * SAMPLE_RATE_HZ:
            raise MicrophoneError(f"inject of {x.size / SAMPLE_RATE_HZ:.1f} s is longer than {MAX_INJECTION_S:g} s")
        if not np.all(np.isfinite(x)):
            raise MicrophoneError("inject samples contain NaN or infinity")
        x = x * np.float32(gain)
        with self._sched:
            if len(self._injections) >= MAX_PENDING_INJECTIONS:
                raise MicrophoneError(
                    f"{len(self._injections)} injections are already pending (max {MAX_PENDING_INJECTIONS}); "
                    "wait for them to play"
                )
            start = self._next_index
            self._injections.append((start, x))
            return self._sched_t0 + start / SAMPLE_RATE_HZ

    def say(self, text: str, voice: object = None, gain: float = 1.0, rate_wpm: int = 160) -> float:
        """Speak ``text`` with espeak-ng into the microphone; returns when the speech starts.

        Synthesis runs in the calling thread (typically ~20-100 ms), so the feeder keeps time.

        Args:
            text: what to say.
            voice: a ``sim.speech.Voice`` or "base[+variant]"; default the configured voice.
            gain: linear gain applied to the synthesized audio.
            rate_wpm: speaking rate in words per minute.

        Returns:
            The capture time (edge.sensors.clock) of the first sample of the speech.

        Raises:
            DeviceNotConnectedError: not connected.
            sim.errors.EspeakNotFoundError / SynthesisError: espeak-ng is missing or failed.
        """
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.name} is not connected; connect() before say()")
        from sim.speech import SpeechRequest, synthesize

        request = SpeechRequest(text=text, voice=parse_voice(voice) if voice is not None else self._voice,
                                rate_wpm=rate_wpm)
        cache = self.config.speech_cache_dir
        audio = synthesize(request, cache_dir=os.fspath(cache) if cache is not None else None)
        return self.inject(audio, gain=gain)
