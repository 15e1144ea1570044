"""The model's audio: the microphone rate and the window the model hears, and cutting audio to it."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE_HZ = 16_000  # every microphone ring, sample set and model input runs at this rate
WINDOW_S = 2.0  # the reference model hears 2 s around each utterance
WINDOW_SAMPLES = int(SAMPLE_RATE_HZ * WINDOW_S)


def pad_or_trim(audio: np.ndarray, n: int) -> np.ndarray:
    """``audio`` as exactly ``n`` float32 samples: longer audio keeps its start (commands carry their
    meaning up front), shorter audio is centred in silence."""
    audio = np.asarray(audio, np.float32).ravel()
    if audio.size >= n:
        return audio[:n].copy()
    out = np.zeros(n, np.float32)
    start = (n - audio.size) // 2
    out[start : start + audio.size] = audio
    return out
