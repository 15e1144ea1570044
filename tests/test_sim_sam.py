"""SAM, the evaluation-only second synthesizer: real speech out of the real program."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sim import sam
from sim.speech import SAMPLE_RATE_HZ

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="SAM needs node.js and npm")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sam")


def _pitch_hz(x: np.ndarray) -> float:
    """Autocorrelation pitch of the loudest 100 ms."""
    n = SAMPLE_RATE_HZ // 10
    energy = np.convolve(x**2, np.ones(n), mode="valid")
    seg = x[int(np.argmax(energy)):][:n]
    ac = np.correlate(seg, seg, mode="full")[n - 1:]
    lo, hi = SAMPLE_RATE_HZ // 400, SAMPLE_RATE_HZ // 60
    return SAMPLE_RATE_HZ / (lo + int(np.argmax(ac[lo:hi])))


def test_sam_speaks_commands_at_16_khz_that_fit_the_window(cache):
    texts = ["go to the red ball", "stop", "pick up the yellow cone"]
    audio = sam.synthesize_sam_fitting(texts, list(sam.VOICES[:3]), cache)
    assert len(audio) == 3
    for text, a in zip(texts, audio):
        assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
        assert 0.2 * SAMPLE_RATE_HZ < len(a) <= sam.MAX_SPEECH_S * SAMPLE_RATE_HZ, text
        assert np.sqrt(np.mean(a**2)) > 0.05  # speech, not silence
    assert len(audio[0]) > 2 * len(audio[1])  # "go to the red ball" is longer than "stop"
    # voiced speech with a human-range pitch
    assert 60 < _pitch_hz(audio[0]) < 400


def test_sam_refuses_mismatched_requests(cache):
    with pytest.raises(ValueError, match="2 texts but 1 voices"):
        sam.synthesize_sam(["a", "b"], [sam.VOICES[0]], cache)
