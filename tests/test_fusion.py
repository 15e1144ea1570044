"""Fusion: the frame from the speech interval, the audio window from the ring, and a queue that never grows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.fusion import FusionError, InferenceWorker, audio_window
from edge.listening import Utterance
from edge.sensors import AudioRing, Frame, FrameBuffer


class _Runner:
    """Records what it was fed; slow on demand."""

    def __init__(self, manifest, delay_s=0.0):
        self.bundle = type("B", (), {"manifest": manifest})()
        self.delay_s = delay_s
        self.fed = []
        self.is_active = True

    def infer(self, feed):
        self.fed.append(feed)
        time.sleep(self.delay_s)
        n = len(self.bundle.manifest.heads.intent_labels)
        return {"intent_logits": np.eye(n, dtype=np.float32)[[0]] * 5, "target_xy": np.array([[0.5, 0.5]], np.float32),
                "target_logit": np.array([3.0], np.float32), "attention": np.ones((1, 15, 20), np.float32) / 300}


@pytest.fixture()
def manifest():
    from convert.config import REFERENCE_CONFIG, ConvertConfig
    from edge.bundle import Manifest

    c = ConvertConfig.from_file(REFERENCE_CONFIG)
    return Manifest(inputs=c.inputs, outputs=c.outputs, preprocessing=c.preprocessing, heads=c.heads)


def _frames(t0=100.0, n=30, fps=15.0):
    buf = FrameBuffer(history_s=3.0)
    for i in range(n):
        buf.push(Frame(np.full((120, 160, 3), i, np.uint8), t0 + i / fps, i))
    return buf


def _utterance(ring, start, end):
    return Utterance(ring.read(start, end), start, end, ring.time_of(start), ring.time_of(end - 1), start, False, 0.9)


def test_the_frame_is_the_one_captured_at_the_end_of_the_speech(manifest):
    frames = _frames()
    ring = AudioRing(capacity_s=30.0)
    ring.write(np.zeros(16000 * 3, np.float32), t_end=100.0 + 3.0)  # samples 0..48000 end at t=103
    runner = _Runner(manifest)
    worker = InferenceWorker(runner, frames, ring, on_decision=lambda d: None)
    u = _utterance(ring, 4000, 20000)  # speech ends at t = 100 + 20000/16000 = 101.25
    d = worker.decide_utterance(u)
    assert d.frame_seq == round((u.t_end - 100.0) * 15) and abs(d.t_frame - u.t_end) <= 1 / 30
    assert runner.fed[0]["image"][0, 0, 0, 0] == d.frame_seq  # that frame's pixels went to the model
    stale = _utterance(ring, 40000, 47000)  # speech after the camera stopped delivering (frames end at 101.93)
    with pytest.raises(FusionError, match="after the latest frame|camera is not delivering"):
        worker.decide_utterance(stale)


def test_audio_window_centres_real_audio_and_never_reads_the_future():
    ring = AudioRing(capacity_s=30.0)
    audio = np.arange(16000 * 4, dtype=np.float32) / 1e5
    ring.write(audio, t_end=4.0)
    u = _utterance(ring, 20000, 28000)
    w = audio_window(ring, u, 32000)
    assert w[12000:20000].tolist() == audio[20000:28000].tolist()  # centred
    assert w[0] == audio[8000]  # real audio around it, not zeros
    late = _utterance(ring, 56000, 64000)  # at the newest end: slides back, the whole utterance stays inside
    w = audio_window(ring, late, 32000)
    assert w[-1] == audio[-1] and w[24000:].tolist() == audio[56000:].tolist()


def test_utterances_arriving_while_busy_replace_each_other(manifest):
    frames = _frames(t0=time.monotonic() - 1.5, n=30)
    ring = AudioRing(capacity_s=30.0)
    ring.write(np.zeros(16000 * 2, np.float32), t_end=time.monotonic())
    decided = []
    runner = _Runner(manifest, delay_s=0.3)
    worker = InferenceWorker(runner, frames, ring, on_decision=decided.append)
    worker.start()
    try:
        end = ring.end_index
        for k in range(5):
            worker.submit(_utterance(ring, end - 16000 + k, end - 4000 + k))
            time.sleep(0.02)
        time.sleep(1.0)
    finally:
        worker.stop()
    assert worker.utterances.dropped >= 3  # replaced while the first one was being decided
    assert len(decided) <= 2 and len(runner.fed) == len(decided)
    assert threading.active_count() >= 1
