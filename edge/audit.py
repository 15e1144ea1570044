"""The audit log: every decision with the frame and audio it was made from, in a bounded on-disk ring.

Written in the sample-set format (``edge.samples``), so a recorded session is
a calibration set as it is (``voxedge calibrate BUNDLE --data LOG``) and,
once labelled, an evaluation set. Writing happens in its own thread behind a
small bounded queue: a slow disk drops audit entries (counted), never
decisions. Each sample's files are written before the index names them and
the index is replaced atomically, so a crash leaves a readable set; when the
ring is full the oldest sample is dropped from the index, then deleted.

The set format is model-independent: each frame is stored as RGB, H x W x 3 at
the model's input size (``sample_frame``), whatever layout and colour order the
model takes; calibration turns it into the model's input the way the runtime
does (``calibration.sampleset.model_feed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections import deque
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.samples import INDEX_NAME, SAMPLE_DIR, SET_META_NAME, SampleRecord, encode_png, encode_wav

DEFAULT_MAX_SAMPLES = 2000  # about 2000 x 70 kB = 140 MB at the reference model's sizes
QUEUE_DEPTH = 8  # entries waiting for the disk; more are dropped (counted)


class AuditError(Exception):
    """The audit log directory cannot be used."""


def sample_frame(image: np.ndarray, pre) -> np.ndarray:
    """A camera frame as a sample set stores it: RGB, H x W x 3 uint8 at the model's input size.

    The resize is the runtime's own (``edge.fusion.prepare_image``, INTER_AREA),
    but not the model's colour order or layout, so that for every model
    ``prepare_image(frame, pre) == model_feed([sample_frame(frame, pre)], ...)``
    and a recorded session calibrates exactly what the model was fed.
    """
    from edge.fusion import prepare_image

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


class AuditLog:
    """A bounded ring of (frame, audio window, decision) samples on disk; ``record`` never blocks."""

    def __init__(self, path: str | Path, max_samples: int = DEFAULT_MAX_SAMPLES, sample_rate: int = 16000) -> None:
        if max_samples < 1:
            raise AuditError(f"max_samples must be >= 1, got {max_samples!r}")
        self.path = Path(path)
        self.max_samples = max_samples
        self.sample_rate = sample_rate
        try:
            (self.path / SAMPLE_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"cannot create the audit log at {self.path}: {exc}") from exc
        self._records: deque[SampleRecord] = deque(self._load())
        self._next = 1 + max((int(r.id) for r in self._records), default=0)
        self._queue: deque[tuple] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.written = self.dropped = self.errors = 0
        self.last_error: str | None = None

    def _load(self) -> list[SampleRecord]:
        index = self.path / INDEX_NAME
        if not index.is_file():
            return []
        records = []
        for n, line in enumerate(index.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    records.append(SampleRecord(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as exc:
                    raise AuditError(f"{index}:{n} is not a sample record ({exc}); move the log aside") from exc
        return records

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
                self.dropped += 1
                return False
            self._queue.append((np.array(image, copy=True), np.array(audio, np.float32, copy=True), decision, t))
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if not self._queue:
                    return
                item = self._queue.popleft()
            try:
                self._write(*item)
                self.written += 1
            except Exception as exc:  # a full disk must not stop the robot; the count shows it
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"

    def _write(self, image, audio, decision, t) -> None:
        sid = f"{self._next:08d}"
        self._next += 1
        png, wav = encode_png(image), encode_wav(audio, self.sample_rate)
        rec = SampleRecord(id=sid, image=f"{SAMPLE_DIR}/{sid}.png", audio=f"{SAMPLE_DIR}/{sid}.wav",
                           sha256={"image": hashlib.sha256(png).hexdigest(), "audio": hashlib.sha256(wav).hexdigest()},
                           decision=decision, t=t)
        _atomic_write(self.path / rec.image, png)
        _atomic_write(self.path / rec.audio, wav)
        with self._cond:
            self._records.append(rec)
            dropped = []
            while len(self._records) > self.max_samples:
                dropped.append(self._records.popleft())
            records = list(self._records)
        index = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records).encode()
        _atomic_write(self.path / INDEX_NAME, index)
        per_intent: dict[str, int] = {}
        for r in records:
            key = (r.decision or {}).get("intent", "unknown")
            per_intent[key] = per_intent.get(key, 0) + 1
        meta = {"id": f"audit-{self.path.name}", "index_sha256": hashlib.sha256(index).hexdigest(),
                "n_samples": len(records), "per_intent": {}, "decided_intent": per_intent, "warnings": [],
                "source": "voxedge audit log (unlabelled; 'decision' is the robot's own output)"}
        _atomic_write(self.path / SET_META_NAME, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        for r in dropped:  # after the index no longer names them
            (self.path / r.image).unlink(missing_ok=True)
            (self.path / r.audio).unlink(missing_ok=True)
