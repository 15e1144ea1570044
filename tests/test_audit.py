"""The audit log is a bounded ring in the sample-set format that calibration reads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from calibration.sampleset import read_set
from edge.audit import QUEUE_DEPTH, AuditError, AuditLog


def _sample(i):
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (rng.standard_normal(32000) * 0.1).astype(np.float32)


def test_ring_keeps_the_newest_samples_readable_as_a_calibration_set(tmp_path):
    before = threading.active_count()
    log = AuditLog(tmp_path / "log", max_samples=5).start()
    images = []
    for i in range(8):
        img, wav = _sample(i)
        images.append(img)
        assert log.record(img, wav, {"intent": "go_to" if i % 2 else "stop", "confidence": 0.9}, t=float(i))
        if i % 3 == 2:
            log.stop()  # let the writer catch up so nothing is dropped
            log.start()
    log.stop()
    assert threading.active_count() == before
    s = read_set(tmp_path / "log")
    assert len(s) == 5 and [r.t for r in s.records] == [3.0, 4.0, 5.0, 6.0, 7.0]
    img, wav, rate = s.load(4)
    assert np.array_equal(img, images[7]) and rate == 16000 and wav.shape == (32000,)
    assert s.records[0].intent is None and s.records[0].decision["intent"] == "go_to"
    assert len(list((tmp_path / "log" / "samples").iterdir())) == 10  # the oldest 3 samples' files are gone
    batch = next(s.batches(8, (120, 160), 32000))
    assert batch["image"].shape == (5, 120, 160, 3)
    assert s.meta["decided_intent"] == {"go_to": 3, "stop": 2}


def test_reopened_log_continues_the_ring(tmp_path):
    log = AuditLog(tmp_path / "log", max_samples=3).start()
    for i in range(2):
        log.record(*_sample(i), {"intent": "stop"})
    log.stop()
    log = AuditLog(tmp_path / "log", max_samples=3).start()
    for i in range(2, 4):
        log.record(*_sample(i), {"intent": "stop"})
    log.stop()
    assert [r.id for r in read_set(tmp_path / "log").records] == ["00000002", "00000003", "00000004"]


def test_a_full_queue_drops_entries_instead_of_blocking(tmp_path):
    log = AuditLog(tmp_path / "log")  # writer not started: nothing drains the queue
    results = [log.record(*_sample(0), {"intent": "stop"}) for _ in range(QUEUE_DEPTH + 3)]
    assert results.count(False) == 3 and log.dropped == 3
    log.start()
    log.stop()
    assert log.written == QUEUE_DEPTH


def test_bad_inputs(tmp_path):
    with pytest.raises(AuditError, match="max_samples"):
        AuditLog(tmp_path / "a", max_samples=0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.jsonl").write_text("not json\n")
    with pytest.raises(AuditError, match="index.jsonl:1"):
        AuditLog(tmp_path / "b")
    log = AuditLog(tmp_path / "c").start()
    log.record(np.zeros((4, 4), np.uint8), np.zeros(10, np.float32), {"intent": "stop"})  # not an RGB frame
    log.stop()
    assert log.errors == 1 and "RGB" in log.last_error and len(log) == 0
