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


def test_a_lagging_camera_is_waited_for_not_blamed(manifest):
    """Under load the camera's reader can deliver the frame of the speech's end a little late: the worker waits
    for it (up to MIN_FRAME_MATCH_S) instead of dropping the command."""
    import threading

    frames = _frames()  # the last frame is at t = 101.93
    ring = AudioRing(capacity_s=30.0)
    ring.write(np.zeros(16000 * 3, np.float32), t_end=100.0 + 3.0)
    worker = InferenceWorker(_Runner(manifest), frames, ring, on_decision=lambda d: None)
    u = _utterance(ring, 20000, 33000)  # ends at 102.06: after the newest frame by more than at()'s tolerance
    late = threading.Timer(0.1, lambda: frames.push(Frame(np.full((120, 160, 3), 99, np.uint8), u.t_end, 99)))
    late.start()
    try:
        d = worker.decide_utterance(u)
    finally:
        late.join()
    assert d.frame_seq == 99


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


class _SumRunner:
    """Answers each sample with its own sums (so a batch's outputs can be told apart); slow on demand."""

    def __init__(self, manifest, delay_s=0.0, max_batch=None):
        self.bundle = type("B", (), {"manifest": manifest})()
        self.delay_s, self.fed, self.tried, self.is_active = delay_s, [], [], True
        if max_batch is not None:
            self.max_batch = max_batch

    def infer(self, feed):
        image, audio = feed["image"], feed["audio"]
        self.tried.append(len(image))
        if image.shape[1:] != (120, 160, 3) or audio.shape[1:] != (32000,) or len(image) != len(audio):
            raise ValueError(f"bad shapes {image.shape} {audio.shape}")
        if (image == 13).any():
            raise ValueError("a sample the model refuses")
        self.fed.append(len(image))
        time.sleep(self.delay_s)
        return {"intent_logits": np.repeat(audio.sum(axis=1, keepdims=True), 9, axis=1),
                "target_xy": np.stack([image.reshape(len(image), -1).sum(axis=1).astype(np.float32)] * 2, axis=1)}


def _feed(k: float, batch: int = 1, audio_n: int = 32000):
    return {"image": np.full((batch, 120, 160, 3), k, np.uint8), "audio": np.full((batch, audio_n), k, np.float32)}


def _requests_in_parallel(worker, feeds):
    results: list = [None] * len(feeds)

    def call(i):
        try:
            results[i] = worker.request(feeds[i])
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(feeds))]
    for i, t in enumerate(threads):
        t.start()
        if i == 0:
            time.sleep(0.05)  # the first one keeps the worker busy while the others queue up
    for t in threads:
        t.join(10)
    return results


@pytest.mark.parametrize("max_batch, most", [(None, 7), (3, 3)])
def test_waiting_api_requests_run_as_one_batch_and_each_gets_its_own_answer(manifest, max_batch, most):
    runner = _SumRunner(manifest, delay_s=0.2, max_batch=max_batch)
    worker = InferenceWorker(runner, _frames(), AudioRing(capacity_s=5.0), on_decision=lambda d: None)
    worker.start()
    try:
        results = _requests_in_parallel(worker, [_feed(k) for k in range(8)])
    finally:
        worker.stop()
    for k, (out, ms) in enumerate(results):
        assert out["intent_logits"].shape == (1, 9) and out["intent_logits"][0, 0] == pytest.approx(32000.0 * k)
        assert out["target_xy"][0, 0] == pytest.approx(120 * 160 * 3 * k) and ms >= 200
    assert runner.fed[0] == 1 and max(runner.fed) == most and sum(runner.fed) == 8
    assert worker.api_requests == 8 and worker.api_batches == len(runner.fed) < 8


@pytest.mark.parametrize("bad", ["refused", "unstackable"])
def test_a_bad_request_in_a_batch_fails_alone(manifest, bad):
    runner = _SumRunner(manifest, delay_s=0.1)
    worker = InferenceWorker(runner, _frames(), AudioRing(capacity_s=5.0), on_decision=lambda d: None)
    worker.start()
    try:
        # refused: it stacks, but the model refuses the batch, which is then rerun one by one;
        # unstackable: its audio has another length, so nothing is batched with it
        odd = _feed(13) if bad == "refused" else _feed(4, audio_n=16000)
        feeds = [_feed(1), _feed(2), _feed(3, batch=2), odd, _feed(5)]
        results = _requests_in_parallel(worker, feeds)
    finally:
        worker.stop()
    assert isinstance(results[3], ValueError) and ("refuses" if bad == "refused" else "bad shapes") in str(results[3])
    for k in (0, 1, 4):
        assert results[k][0]["intent_logits"][0, 0] == pytest.approx(32000.0 * (k + 1))
    assert results[2][0]["intent_logits"].shape == (2, 9)  # a request of batch 2 gets its two rows back
    # after the first request alone: one batch of all the others was tried only if they stack
    assert (5 in runner.tried) == (bad == "refused") and worker.api_requests == 4
