"""WAV file microphone: plays a recording into the ring as if it were being captured.

Any PCM (8/16/24/32-bit) or float WAV at any rate and channel count is read
(``edge.contract.wav``), downmixed to mono (channel mean), resampled once to 16 kHz, then
written in ``block_s`` blocks on a real-time schedule (or as fast as possible
with ``realtime=False``), optionally looping. The whole file is held in
memory at 16 kHz (1 h = 230 MB), so use it for clips, not for archives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edge.sensors.audio_ring import SAMPLE_RATE_HZ
from edge.sensors.errors import MicrophoneConfigError, MicrophoneError
from edge.sensors.microphone import FeederMicrophone, FeederMicrophoneConfig
from edge.contract.wav import resample

__all__ = ["WavMicrophone", "WavMicrophoneConfig", "load_wav_mono"]


def load_wav_mono(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float32 in [-1, 1] at its own rate: (samples, rate_hz) (``edge.contract.wav``).

    Raises:
        MicrophoneError: missing or unreadable file, or no samples.
    """
    from edge.contract.wav import WavError, load_wav

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MicrophoneError(f"WAV file {path!r} not found (looked at {os.path.abspath(path)}); check the path")
    try:
        x, rate = load_wav(path)
    except WavError as exc:
        raise MicrophoneError(f"could not read WAV file {path!r}: {exc}") from exc
    return np.clip(x, -1.0, 1.0), rate


@dataclass
class WavMicrophoneConfig(FeederMicrophoneConfig):
    """Settings of a WAV-file microphone.

    Attributes:
        path: the WAV file.
        loop: start again at the end instead of ending.
    """

    path: str = ""
    loop: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise MicrophoneConfigError(f"path={self.path!r}; give the WAV file to play")
        self.path = os.fspath(self.path)


class WavMicrophone(FeederMicrophone):
    """Plays a WAV file into the ring at 16 kHz mono, in real time by default."""

    config_class = WavMicrophoneConfig

    def __init__(self, config: WavMicrophoneConfig) -> None:
        super().__init__(config)
        self.config: WavMicrophoneConfig = config
        self._audio = np.zeros(0, dtype=np.float32)
        self._pos = 0

    @property
    def name(self) -> str:
        return f"WavMicrophone({os.path.basename(self.config.path)})"

    @property
    def duration_s(self) -> float:
        """Length of the loaded file at 16 kHz, seconds (0 before connect)."""
        return self._audio.size / SAMPLE_RATE_HZ

    def _prepare(self) -> int:
        audio, rate = load_wav_mono(self.config.path)
        self._audio = resample(audio, rate, SAMPLE_RATE_HZ)
        self._pos = 0
        return rate

    def _make_block(self, start: int, n: int) -> np.ndarray | None:
        audio, pos = self._audio, self._pos
        if pos >= audio.size:
            if not self.config.loop:
                return None
            pos = 0
        block = audio[pos:pos + n]
        if self.config.loop and block.size < n:
            block = np.concatenate([block, np.resize(audio, n - block.size)])
            pos = (n - (audio.size - pos)) % audio.size if audio.size else 0
        else:
            pos += block.size
        self._pos = pos
        return block.copy()
