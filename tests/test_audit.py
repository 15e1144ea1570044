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
    with pytest.raises(AuditError, match="reserve"):
        AuditLog(tmp_path / "a", reserve_bytes=-1)
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(AuditError, match=r"cannot write the audit log at .*file/log: Not a directory; give a writable"):
        AuditLog(tmp_path / "file" / "log")
    log = AuditLog(tmp_path / "c").start()
    log.record(np.zeros((4, 4), np.uint8), np.zeros(10, np.float32), {"intent": "stop"})  # not an RGB frame
    log.stop()
    assert log.errors == 1 and "RGB" in log.last_error and len(log) == 0
    assert log.unrecorded["write_error"] == 1 and log.dropped == 1 and "cannot write" in log.problem()


def _write(path, n, **kw):
    log = AuditLog(path, **kw).start()
    for i in range(n):
        log.record(*_sample(i), {"intent": "stop"})
    log.stop()
    return log


def test_a_damaged_index_is_moved_aside_and_its_readable_lines_kept(tmp_path):
    _write(tmp_path / "log", 3)
    index = tmp_path / "log" / "index.jsonl"
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + "{not json\n" + lines[2][: len(lines[2]) // 2] + "\n" + lines[1] + "\n")
    log = AuditLog(tmp_path / "log")
    assert [r.id for r in log._records] == ["00000001", "00000002"]
    assert len(log.notes) == 1 and "2 unreadable line(s), first line 2" in log.notes[0], log.notes
    aside = list((tmp_path / "log").glob("damaged-*"))
    assert len(aside) == 1 and "{not json" in (aside[0] / "index.jsonl").read_text()
    # the third sample's files are no longer named by any line: moved aside with the damaged index (its
    # unreadable line may name them), so nothing is lost and the set has no orphans
    assert sorted(f.name for f in (tmp_path / "log" / "samples").iterdir()) == [
        "00000001.png", "00000001.wav", "00000002.png", "00000002.wav"]
    assert sorted(f.name for f in aside[0].iterdir()) == ["00000003.png", "00000003.wav", "index.jsonl"]
    log.start()
    log.record(*_sample(9), {"intent": "go_to"})
    log.stop()
    assert [r.id for r in read_set(tmp_path / "log").records] == ["00000001", "00000002", "00000003"]


def test_leftovers_of_a_crash_are_removed_when_the_log_opens(tmp_path):
    _write(tmp_path / "log", 2)
    samples = tmp_path / "log" / "samples"
    (samples / "00000003.png").write_bytes(b"written before a crash, never indexed")
    (samples / ".00000003.wav.abc.tmp").write_bytes(b"half")
    (tmp_path / "log" / ".index.jsonl.xyz.tmp").write_bytes(b"half")
    log = AuditLog(tmp_path / "log")
    assert log.notes == ["removed 3 leftover file(s) no index line named"]
    assert len(list(samples.iterdir())) == 4 and not list((tmp_path / "log").glob(".*.tmp"))
    index = tmp_path / "log" / "index.jsonl"
    text = index.read_text()
    (samples / "00000002.wav").unlink()  # an indexed sample whose file is gone: dropped from the index
    log = AuditLog(tmp_path / "log")
    assert [r.id for r in log._records] == ["00000001"] and "1 sample(s) whose files are gone" in log.notes[0]
    assert text != index.read_text()


def test_below_the_disk_reserve_it_records_nothing_and_says_so(tmp_path):
    free = {"bytes": 50 * 1024**2}
    log = AuditLog(tmp_path / "log", reserve_bytes=100 * 1024**2, disk_free=lambda: free["bytes"]).start()
    for i in range(3):
        log.record(*_sample(i), {"intent": "stop"})
    log.stop()
    assert log.unrecorded == {"queue_full": 0, "no_space": 3, "write_error": 0} and log.dropped == 3
    assert log.problem() == ("audit log paused: 50 MB free on its disk, below the 100 MB reserve; 3 decision(s) "
                             "not recorded (free space or lower --audit-reserve-mb)")
    assert not list((tmp_path / "log" / "samples").iterdir()) and len(log) == 0
    status = log.status()
    assert status["free_bytes"] == 50 * 1024**2 and status["reserve_bytes"] == 100 * 1024**2
    free["bytes"] = 500 * 1024**2
    log.start()
    log.record(*_sample(5), {"intent": "stop"})
    log.stop()
    assert len(log) == 1 and log.problem() is None and log.written == 1


def _tmpfs(path, size):
    import subprocess

    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")
    return path


@pytest.mark.parametrize("free_space_check", ["real", "fooled"])
def test_a_really_full_disk_counts_every_unrecorded_decision_and_leaves_no_orphans(tmp_path, free_space_check):
    """On a real 600 kB filesystem: the space check stops recording before the disk is full; when another
    writer fills the disk between the check and the write ("fooled"), ENOSPC is counted and cleaned up."""
    import subprocess

    disk = _tmpfs(tmp_path / "disk", "600k")  # room for a few samples (~70-130 kB each)
    try:
        fooled = (lambda: 10**12) if free_space_check == "fooled" else None
        log = AuditLog(disk / "log", reserve_bytes=0, disk_free=fooled).start()
        for i in range(12):
            log.record(*_sample(i), {"intent": "stop"})
            log.stop()  # one at a time: none dropped for a full queue
            log.start()
        log.stop()
        reason = "write_error" if fooled else "no_space"
        assert log.written >= 1 and log.unrecorded[reason] >= 1, log.status()
        assert log.written + log.dropped == 12 and log.unrecorded["queue_full"] == 0
        assert ("No space left on device" if fooled else "audit log paused") in log.problem()
        s = read_set(disk / "log")  # still a readable, consistent set
        assert len(s) == log.written
        named = {p for r in s.records for p in (r.image.split("/")[-1], r.audio.split("/")[-1])}
        assert {f.name for f in (disk / "log" / "samples").iterdir()} == named  # no orphan PNGs
        assert not list((disk / "log").rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
