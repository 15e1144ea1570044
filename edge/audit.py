"""The audit log: every decision with the frame and audio it was made from, in a bounded on-disk ring.

Written in the sample-set format (``edge.samples``), so a recorded session is
a calibration set as it is (``voxedge calibrate BUNDLE --data LOG``) and,
once labelled, an evaluation set. Writing happens in its own thread behind a
small bounded queue: a slow disk drops audit entries (counted), never
decisions. Each sample's files are written before the index names them and
the index is replaced atomically, so a crash leaves a readable set; when the
ring is full the oldest sample is dropped from the index, then deleted.

It says when it cannot write: every unrecorded decision is counted by reason
(queue full, disk below the reserve, write error) and ``problem()`` words the
current trouble for the runtime's health alerts. Before each sample it checks
that the disk keeps ``reserve_bytes`` free (the robot's other writers, its
logs and engine caches, need room too). A damaged index is moved aside and its
readable lines kept; files no index line names (a crash mid-write) are removed
when the log opens, and a failed write removes what it had written.

The set format is model-independent: each frame is stored as RGB, H x W x 3 at
the model's input size (``sample_frame``), whatever layout and colour order the
model takes; calibration turns it into the model's input the way the runtime
does (``calibration.sampleset.model_feed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ
from edge.samples import INDEX_NAME, SAMPLE_DIR, SET_META_NAME, SampleRecord, encode_png, encode_wav

DEFAULT_MAX_SAMPLES = 2000  # about 2000 x 70 kB = 140 MB at the reference model's sizes
DEFAULT_RESERVE_MB = 100  # keep this much free on the audit log's disk; decisions are not recorded below it
QUEUE_DEPTH = 8  # entries waiting for the disk; more are dropped (counted)
ERROR_MEMORY_S = 30.0  # a write error is the current problem for this long after it happened
DROP_REASONS = ("queue_full", "no_space", "write_error")

log = logging.getLogger(__name__)


class AuditError(Exception):
    """The audit log directory cannot be used."""


def sample_frame(image: np.ndarray, pre) -> np.ndarray:
    """A camera frame as a sample set stores it: RGB, H x W x 3 uint8 at the model's input size.

    The resize is the runtime's own (``edge.contract.image.prepare_image``, INTER_AREA),
    but not the model's colour order or layout, so that for every model
    ``prepare_image(frame, pre) == model_feed([sample_frame(frame, pre)], ...)``
    and a recorded session calibrates exactly what the model was fed.
    """
    from edge.contract.image import prepare_image

    return prepare_image(image, dataclasses.replace(pre, image_layout="NHWC", color_order="RGB"))[0]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _human(exc: BaseException) -> str:
    """An OS error as people read it ("No space left on device: /robot/audit/index.jsonl")."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


class AuditLog:
    """A bounded ring of (frame, audio window, decision) samples on disk; ``record`` never blocks.

    Raises ``AuditError`` when the directory cannot be created or written; what
    it found and repaired while opening (a damaged index, leftovers of a crash)
    is in ``notes``.
    """

    def __init__(self, path: str | Path, max_samples: int = DEFAULT_MAX_SAMPLES, sample_rate: int = SAMPLE_RATE_HZ,
                 reserve_bytes: int = DEFAULT_RESERVE_MB * 1024**2, disk_free=None) -> None:
        if max_samples < 1:
            raise AuditError(f"max_samples must be >= 1, got {max_samples!r}")
        if reserve_bytes < 0:
            raise AuditError(f"the disk reserve must be >= 0 bytes, got {reserve_bytes!r}")
        self.path = Path(path)
        self.max_samples = max_samples
        self.sample_rate = sample_rate
        self.reserve_bytes = int(reserve_bytes)
        self._disk_free = disk_free or (lambda: shutil.disk_usage(self.path).free)
        self.notes: list[str] = []
        self._aside: Path | None = None  # where a damaged index was moved
        try:
            (self.path / SAMPLE_DIR).mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=".probe.", delete=True)
            probe.close()
        except OSError as exc:
            raise AuditError(f"cannot write the audit log at {self.path}: {exc.strerror or exc}; give a writable "
                             "directory (--audit-log DIR) or fix its permissions") from exc
        self._records: deque[SampleRecord] = deque(self._load())
        self._remove_leftovers()
        self._next = 1 + max((int(r.id) for r in self._records if r.id.isdigit()), default=0)
        self._queue: deque[tuple] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.written = self.errors = 0
        self.unrecorded = dict.fromkeys(DROP_REASONS, 0)
        self.last_error: str | None = None
        self._last_error_t: float | None = None
        self._low_space: str | None = None

    @property
    def dropped(self) -> int:
        """Decisions not recorded, for any reason."""
        return sum(self.unrecorded.values())

    # -- opening: repair what a crash or a damaged disk left ---------------------------------
    def _load(self) -> list[SampleRecord]:
        index = self.path / INDEX_NAME
        if not index.is_file():
            return []
        records, bad = [], []
        try:
            text = index.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise AuditError(f"cannot read {index}: {_human(exc)}") from exc
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rec = SampleRecord(**json.loads(line))
                    if not (isinstance(rec.id, str) and rec.image == f"{SAMPLE_DIR}/{rec.id}.png"
                            and rec.audio == f"{SAMPLE_DIR}/{rec.id}.wav"):
                        raise ValueError("file names do not match the id")
                    records.append(rec)
                except (json.JSONDecodeError, TypeError, ValueError) as exc:
                    bad.append(f"line {n} ({exc})")
        kept = [r for r in records if (self.path / r.image).is_file() and (self.path / r.audio).is_file()]
        missing = len(records) - len(kept)
        if bad or missing:
            self._aside = self.path / f"damaged-{time.strftime('%Y%m%dT%H%M%S')}"
            aside = self._aside / INDEX_NAME
            try:
                self._aside.mkdir(exist_ok=True)
                os.replace(index, aside)
                data = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in kept).encode()
                _atomic_write(index, data)
            except OSError as exc:
                raise AuditError(f"{index} is damaged and cannot be replaced: {_human(exc)}") from exc
            what = ([f"{len(bad)} unreadable line(s), first {bad[0]}"] if bad else []) + \
                ([f"{missing} sample(s) whose files are gone"] if missing else [])
            self.notes.append(f"the audit index was damaged ({'; '.join(what)}); moved aside to "
                              f"{self._aside.name}/ with the files no readable line names, {len(kept)} sample(s) kept")
        return kept[-self.max_samples:] if len(kept) > self.max_samples else kept

    def _remove_leftovers(self) -> None:
        """Delete temp files and sample files no index line names (a crash between writing and indexing).

        After a damaged index, unnamed sample files go with it into its ``damaged-*`` folder instead: they
        may be the samples of its unreadable lines.
        """
        named = {p for r in self._records for p in (r.image, r.audio)}
        removed = 0
        for f in list((self.path / SAMPLE_DIR).iterdir()) + list(self.path.glob(".*.tmp")):
            if f"{SAMPLE_DIR}/{f.name}" not in named and f.is_file():
                try:
                    if self._aside is not None and not f.name.startswith("."):
                        os.replace(f, self._aside / f.name)
                    else:
                        f.unlink()
                        removed += 1
                except OSError as exc:
                    self.notes.append(f"could not remove the leftover {f}: {_human(exc)}")
        if removed:
            self.notes.append(f"removed {removed} leftover file(s) no index line named")

    def __len__(self) -> int:
        with self._cond:
            return len(self._records)

    def start(self) -> AuditLog:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="voxedge-audit", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise AuditError(f"audit writer did not finish within {timeout_s} s")
            self._thread = None

    def record(self, image: np.ndarray, audio: np.ndarray, decision: dict, t: float | None = None) -> bool:
        """Queue one sample (model-size RGB frame, audio window, the decision's summary); False if dropped."""
        with self._cond:
            if len(self._queue) >= QUEUE_DEPTH:
                self.unrecorded["queue_full"] += 1
                return False
            self._queue.append((np.array(image, copy=True), np.array(audio, np.float32, copy=True), decision, t))
            self._cond.notify_all()
            return True

    # -- what the runtime shows ------------------------------------------------------------
    def problem(self, now: float | None = None) -> str | None:
        """The audit log's current trouble in words, or None while it records every decision."""
        now = time.monotonic() if now is None else now
        if self._low_space:
            return self._low_space
        if self._last_error_t is not None and now - self._last_error_t < ERROR_MEMORY_S:
            return f"audit log cannot write ({self.last_error}); {self.dropped} decision(s) not recorded"
        return None

    def status(self) -> dict:
        try:
            free = int(self._disk_free())
        except OSError:
            free = None
        return {"samples": len(self), "written": self.written, "dropped": self.dropped,
                "unrecorded": dict(self.unrecorded), "errors": self.errors, "last_error": self.last_error,
                "free_bytes": free, "reserve_bytes": self.reserve_bytes, "path": str(self.path)}

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if not self._queue:
                    return
                item = self._queue.popleft()
            try:
                if self._write(*item):
                    self.written += 1
            except Exception as exc:  # a full disk must not stop the robot; counts and problem() show it
                self.errors += 1
                self.unrecorded["write_error"] += 1
                self.last_error = _human(exc)
                self._last_error_t = time.monotonic()
                log.warning("audit log: could not record a decision", exc_info=True)

    def _write(self, image, audio, decision, t) -> bool:
        """Write one sample; False when the disk is below the reserve (nothing written)."""
        png, wav = encode_png(image), encode_wav(audio, self.sample_rate)
        with self._cond:
            records = list(self._records)
        sid = f"{self._next:08d}"
        rec = SampleRecord(id=sid, image=f"{SAMPLE_DIR}/{sid}.png", audio=f"{SAMPLE_DIR}/{sid}.wav",
                           sha256={"image": hashlib.sha256(png).hexdigest(), "audio": hashlib.sha256(wav).hexdigest()},
                           decision=decision, t=t)
        records.append(rec)
        dropped, records = records[:-self.max_samples], records[-self.max_samples:]
        index = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records).encode()
        need = len(png) + len(wav) + 2 * len(index) + 4096
        free = int(self._disk_free())
        if free - need < self.reserve_bytes:
            self.unrecorded["no_space"] += 1
            self._low_space = (f"audit log paused: {free / 1024**2:.0f} MB free on its disk, below the "
                               f"{self.reserve_bytes / 1024**2:.0f} MB reserve; {self.unrecorded['no_space']} "
                               "decision(s) not recorded (free space or lower --audit-reserve-mb)")
            return False
        self._low_space = None
        written: list[Path] = []
        try:
            for name, data in ((rec.image, png), (rec.audio, wav)):
                _atomic_write(self.path / name, data)
                written.append(self.path / name)
            _atomic_write(self.path / INDEX_NAME, index)
        except BaseException:
            for f in written:  # no orphans: the index never named them
                f.unlink(missing_ok=True)
            raise
        self._next += 1
        with self._cond:
            self._records = deque(records)
        per_intent: dict[str, int] = {}
        for r in records:
            key = (r.decision or {}).get("intent", "unknown")
            per_intent[key] = per_intent.get(key, 0) + 1
        meta = {"id": f"audit-{self.path.name}", "index_sha256": hashlib.sha256(index).hexdigest(),
                "n_samples": len(records), "per_intent": {}, "decided_intent": per_intent, "warnings": [],
                "source": "voxedge audit log (unlabelled; 'decision' is the robot's own output)"}
        for r in dropped:  # after the index no longer names them
            (self.path / r.image).unlink(missing_ok=True)
            (self.path / r.audio).unlink(missing_ok=True)
        try:  # last: a failure here leaves the sample recorded and a stale summary that the next write redoes
            _atomic_write(self.path / SET_META_NAME, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            self.errors += 1
            self.last_error = _human(exc)
            self._last_error_t = time.monotonic()
            log.warning("audit log: could not update %s", SET_META_NAME, exc_info=True)
        return True
