"""Fusion: an utterance and the camera frame from its speech interval -> the model -> a Decision.

One inference worker thread owns the runner (and with TensorRT, the CUDA
context). It takes the newest utterance from a one-item slot (an utterance
that arrives while another is being decided replaces the waiting one, and is
counted), matches it with the frame captured at the end of the speech (by
timestamp, from the camera's history; not whatever frame is newest when
inference runs), cuts the model's audio window around the speech from the
microphone ring, runs the model and publishes a Decision.

While the policy drives to an object it asks the worker to *track*: re-run
the model on fresh frames with the same audio window, at ``TRACK_HZ`` or
faster, so the target point follows the object as the robot moves. A new
utterance always goes first.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from edge.contract.image import prepare_image
from edge.contract.outputs import decode_outputs
from edge.listening import Utterance
from edge.slots import LatestSlot

TRACK_HZ = 8.0  # servoing updates per second while driving to an object (>= 5 Hz required)
DEFAULT_MAX_FRAME_AGE_S = 0.5  # a frame older than this is not "the view now" for tracking
MIN_FRAME_MATCH_S = 0.25  # the frame used for an utterance must lie within this of the speech's end
REQUEST_QUEUE_MAX = 8  # HTTP inference requests waiting (one per waitress worker thread); more get 429
REQUEST_TIMEOUT_S = 5.0
# API requests waiting together run as one batch (the models take a dynamic batch): ONNX Runtime INT8 costs
# ~0.98 ms a sample at batch 8 against ~1.29 ms at batch 1 on this project's 2-core CPU (bench_backends.py),
# and a TensorRT engine gains more. Capped by the runner's own maximum (a TensorRT profile's).
REQUEST_BATCH_MAX = 8


class FusionError(Exception):
    """The pipeline cannot decide: no frame from the speech interval, bad model outputs."""


class WorkerBusyError(FusionError):
    """Too many API inference requests are waiting for the worker."""


@dataclass(frozen=True)
class Decision:
    """What the model decided for one utterance (or one tracking update), with the timings of each stage."""

    id: int
    kind: str  # "utterance" or "track"
    utterance_id: int
    intent: str  # the label acted on ("none" below the command threshold)
    confidence: float  # softmax probability of the most likely intent
    accepted: bool  # a command to act on: not "none", at or above the command threshold
    probabilities: dict[str, float]
    target_xy: tuple[float, float] | None  # normalised image coordinates (x right, y down)
    presence: float | None  # probability the named object is in view
    attention: np.ndarray | None = field(repr=False)  # [h, w]
    t_speech_start: float = 0.0
    t_speech_end: float = 0.0
    t_frame: float = 0.0
    frame_seq: int = -1
    t_decided: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready fields (no arrays)."""
        return {"id": self.id, "kind": self.kind, "utterance_id": self.utterance_id, "intent": self.intent,
                "confidence": self.confidence, "accepted": self.accepted, "target_xy": self.target_xy,
                "presence": self.presence, "frame_seq": self.frame_seq, "latency_ms": self.latency_ms}


def audio_window(ring, utterance: Utterance, window_samples: int) -> np.ndarray:
    """The model's audio window cut from the microphone ring around the utterance.

    Real audio, not zero padding: the model was trained on speech inside a
    window of background noise. The speech is centred where the ring allows; a
    window that would reach past the newest sample slides back, one that would
    reach before the oldest kept sample is zero-filled there. Speech longer
    than the window keeps its start (commands carry their meaning up front).
    """
    n = utterance.end_index - utterance.start_index
    if n >= window_samples:
        start = utterance.start_index
    else:
        start = utterance.start_index - (window_samples - n) // 2  # centred
        start = min(start, ring.end_index - window_samples)  # no audio from the future
        start = max(start, utterance.end_index - window_samples)  # but the whole utterance stays inside
    out = np.zeros(window_samples, np.float32)
    lo, hi = max(start, 0), min(start + window_samples, ring.end_index)
    if hi > lo:
        try:
            out[lo - start : hi - start] = ring.read(lo, hi)
        except Exception as exc:  # the ring's own error says which samples are gone
            raise FusionError(f"the audio around the utterance is no longer in the microphone ring: {exc}") from exc
    return out


def _batch_size(feed: dict) -> int:
    """The batch size of a request's feed (its first input's first axis; 1 for anything odd, which the
    runner then refuses with a reason)."""
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if isinstance(first, np.ndarray) and first.ndim >= 1 else 1


def _stackable(feeds: list[dict]) -> bool:
    """Whether requests can run as one batch: the same inputs, dtypes and per-sample shapes, and each one's
    inputs agreeing on its batch size."""
    ref = feeds[0]
    for feed in feeds:
        if feed.keys() != ref.keys():
            return False
        sizes = set()
        for name, a in feed.items():
            r = ref[name]
            if not (isinstance(a, np.ndarray) and a.ndim >= 1 and a.dtype == r.dtype and a.shape[1:] == r.shape[1:]):
                return False
            sizes.add(a.shape[0])
        if len(sizes) != 1:
            return False
    return True


class InferenceWorker:
    """The thread that owns the runner: utterances -> Decisions, plus tracking updates for servoing."""

    def __init__(self, runner, frames, ring, on_decision: Callable[[Decision], object],
                 max_frame_age_s: float = DEFAULT_MAX_FRAME_AGE_S, track_hz: float = TRACK_HZ,
                 on_error: Callable[[BaseException], object] | None = None) -> None:
        self.runner = runner
        self.manifest = runner.bundle.manifest
        self.frames = frames
        self.ring = ring
        self.utterances: LatestSlot[Utterance] = LatestSlot()
        self._on_decision = on_decision
        self._on_error = on_error or (lambda message: None)
        self.max_frame_age_s = max_frame_age_s
        self.track_period_s = 1.0 / track_hz
        self._ids = itertools.count(1)
        self._utterance_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._tracking: tuple[int, np.ndarray] | None = None  # (utterance id, audio window)
        self._windows: dict[int, np.ndarray] = {}
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._requests: deque[tuple[dict, Future]] = deque()
        self._thread: threading.Thread | None = None
        self.busy_since: float | None = None  # monotonic start of the inference now running
        self.errors = 0
        self.decisions = 0
        self.api_requests = 0  # answered HTTP inference requests
        self.api_batches = 0  # model runs that served them (fewer when requests were batched)
        self.last_error: str | None = None

    # -- control from other threads ------------------------------------------------
    def submit(self, utterance: Utterance) -> None:
        """Hand over a new utterance (from the listener thread); replaces one still waiting."""
        self.utterances.put(utterance)
        with self._wake:
            self._wake.notify_all()

    def track(self, utterance_id: int) -> None:
        """Re-run the model on fresh frames with this utterance's audio until ``stop_tracking``."""
        with self._lock:
            window = self._windows.get(utterance_id)
            if window is None:
                raise FusionError(f"utterance {utterance_id} is not known to the inference worker")
            self._tracking = (utterance_id, window)
        with self._wake:
            self._wake.notify_all()

    def window(self, utterance_id: int) -> np.ndarray | None:
        """The audio window the model was fed for an utterance (kept while it is the newest or tracked)."""
        with self._lock:
            return self._windows.get(utterance_id)

    def stop_tracking(self) -> None:
        with self._lock:
            self._tracking = None

    @property
    def tracking(self) -> int | None:
        with self._lock:
            return self._tracking[0] if self._tracking else None

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds the current inference has been running (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else (now if now is not None else time.monotonic()) - since

    def start(self) -> None:
        if self._thread is not None:
            raise FusionError("inference worker already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="voxedge-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise FusionError(f"inference worker did not stop within {timeout_s} s")
            self._thread = None

    # -- the worker thread ---------------------------------------------------------
    def _run(self) -> None:
        if not self.runner.is_active:
            self.runner.activate()  # in this thread: a TensorRT runner's CUDA context belongs to it
        next_track = 0.0
        while not self._stop.is_set():
            with self._wake:
                self._wake.wait_for(lambda: self._stop.is_set() or bool(self.utterances) or bool(self._requests)
                                    or (self.tracking is not None and time.monotonic() >= next_track),
                                    timeout=max(0.0, next_track - time.monotonic()) if self.tracking else 0.2)
                requests = self._take_requests() if self._requests and not self.utterances else []
            if self._stop.is_set():
                break
            try:
                utterance = self.utterances.take(timeout_s=0)
                if utterance is not None:
                    self._decide_utterance(utterance)
                elif self.tracking is not None and time.monotonic() >= next_track:
                    next_track = time.monotonic() + self.track_period_s
                    self._decide_track()
                if requests:
                    self._serve_batch(requests)
            except Exception as exc:  # one bad frame or utterance must not kill the worker: report it
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._on_error(exc)
        for _, future in self._drain_requests():
            future.set_exception(FusionError("the inference worker stopped"))

    def _drain_requests(self):
        with self._wake:
            items, self._requests = list(self._requests), deque()
        return items

    def _take_requests(self) -> list[tuple[dict, Future]]:
        """Waiting requests to run together, oldest first, up to ``REQUEST_BATCH_MAX`` samples (under _wake)."""
        limit = max(1, min(REQUEST_BATCH_MAX, getattr(self.runner, "max_batch", REQUEST_BATCH_MAX)))
        taken, samples = [], 0
        while self._requests:
            n = _batch_size(self._requests[0][0])
            if taken and samples + n > limit:
                break
            taken.append(self._requests.popleft())
            samples += n
        return taken

    def _serve_batch(self, items: list[tuple[dict, Future]]) -> None:
        live = [(feed, future) for feed, future in items if future.set_running_or_notify_cancel()]
        if len(live) > 1 and _stackable([feed for feed, _ in live]):
            feeds = [feed for feed, _ in live]
            batch = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
            t0 = time.monotonic()
            self.busy_since = t0
            try:
                out = self.runner.infer(batch)
            except Exception:  # noqa: BLE001 - one bad request must not fail the others: run each alone
                out = None
            finally:
                self.busy_since = None
            if out is not None:
                ms = 1e3 * (time.monotonic() - t0)
                self.api_batches += 1
                start = 0
                for feed, future in live:
                    n = _batch_size(feed)
                    future.set_result(({k: v[start : start + n] for k, v in out.items()}, ms))
                    start += n
                self.api_requests += len(live)
                return
        for feed, future in live:
            self._serve(feed, future)

    def _serve(self, feed: dict, future: Future) -> None:
        t0 = time.monotonic()
        self.busy_since = t0
        self.api_batches += 1
        try:
            out = self.runner.infer(feed)
        except Exception as exc:  # the caller gets it (bad tensors are a 400 there, not a worker error)
            future.set_exception(exc)
            return
        finally:
            self.busy_since = None
        self.api_requests += 1
        future.set_result((out, 1e3 * (time.monotonic() - t0)))

    def request(self, feed: dict, timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[dict, float]:
        """Run the model on ``feed`` in the worker thread (for the HTTP API); returns (outputs, inference ms).

        Utterances and tracking go first. Raises WorkerBusyError when ``REQUEST_QUEUE_MAX``
        requests already wait, and FusionError on a timeout.
        """
        future: Future = Future()
        with self._wake:
            if self._thread is None:
                raise FusionError("the inference worker is not running")
            if len(self._requests) >= REQUEST_QUEUE_MAX:
                raise WorkerBusyError(f"{REQUEST_QUEUE_MAX} inference requests are already waiting; retry shortly")
            self._requests.append((feed, future))
            self._wake.notify_all()
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as exc:
            future.cancel()
            raise FusionError(f"inference did not finish within {timeout_s} s (the robot's own commands go "
                              "first)") from exc

    def _frame_at(self, t: float):
        """The frame nearest ``t``. A camera that lags (a loaded machine delays its reader thread) has no frame
        at or after ``t`` yet: wait up to ``MIN_FRAME_MATCH_S`` for one rather than drop the command."""
        deadline = time.monotonic() + MIN_FRAME_MATCH_S
        try:
            latest = self.frames.latest()
            while latest.t < t and (left := deadline - time.monotonic()) > 0:
                latest = self.frames.wait_for(after_seq=latest.seq, timeout_s=left)
        except Exception:  # no frame yet, or none in time: at() says which
            pass
        return self.frames.at(t)

    def decide_utterance(self, utterance: Utterance) -> Decision:
        """Decide one utterance now, in the caller's thread (the worker thread, or a test)."""
        t0 = time.monotonic()
        try:
            frame = self._frame_at(utterance.t_end)
        except Exception as exc:
            raise FusionError(f"no camera frame from the speech interval (ended at {utterance.t_end:.3f}): "
                              f"{exc}") from exc
        if abs(frame.t - utterance.t_end) > MIN_FRAME_MATCH_S:
            raise FusionError(f"the nearest camera frame is {abs(frame.t - utterance.t_end):.2f} s from the end of "
                              "the speech; the camera is not delivering frames (check it in the panel)")
        if frame.content_t is not None and frame.t - frame.content_t > self.max_frame_age_s:
            raise FusionError(f"the camera is frozen: its picture had not changed for {frame.t - frame.content_t:.1f} s "
                              "when the command was spoken; not acting on an old view (replug or restart the camera)")
        t1 = time.monotonic()
        window = audio_window(self.ring, utterance, self.manifest.preprocessing.audio_window_samples)
        uid = next(self._utterance_ids)
        with self._lock:
            self._windows = {k: v for k, v in self._windows.items() if self._tracking and k == self._tracking[0]}
            self._windows[uid] = window
        return self._infer("utterance", uid, frame, window, utterance, {"frame_match": t1 - t0}, t0)

    def _decide_utterance(self, utterance: Utterance) -> None:
        decision = self.decide_utterance(utterance)
        self.decisions += 1
        self._on_decision(decision)

    def _decide_track(self) -> None:
        with self._lock:
            if self._tracking is None:
                return
            uid, window = self._tracking
        t0 = time.monotonic()
        frame = self.frames.latest(max_age_s=self.max_frame_age_s)
        decision = self._infer("track", uid, frame, window, None, {"frame_match": time.monotonic() - t0}, t0)
        self._on_decision(decision)

    def _infer(self, kind: str, uid: int, frame, window: np.ndarray, utterance: Utterance | None,
               timings: dict[str, float], t0: float) -> Decision:
        pre, heads = self.manifest.preprocessing, self.manifest.heads
        t1 = time.monotonic()
        feed = {self.manifest.inputs[0].name: prepare_image(frame.image, pre),
                self.manifest.inputs[1].name: window[None]}
        t2 = time.monotonic()
        self.busy_since = t2
        try:
            out = self.runner.infer(feed)
        finally:
            self.busy_since = None
        t3 = time.monotonic()
        d = decode_outputs(out, heads)
        attention = np.asarray(out[heads.attention_output][0]) if heads.attention_output else None
        now = time.monotonic()
        latency = {**timings, "preprocess": t2 - t1, "inference": t3 - t2, "total": now - t0}
        if utterance is not None:
            latency["speech_end_to_decision"] = now - (utterance.t_speech_end or utterance.t_end)
        return Decision(
            id=next(self._ids), kind=kind, utterance_id=uid, intent=d.intent, confidence=d.confidence,
            accepted=d.accepted, probabilities=d.probabilities, target_xy=d.target_xy, presence=d.presence,
            attention=attention,
            t_speech_start=utterance.t_start if utterance else 0.0,
            t_speech_end=(utterance.t_speech_end or utterance.t_end) if utterance else 0.0,
            t_frame=frame.t, frame_seq=frame.seq, t_decided=now,
            latency_ms={k: 1e3 * v for k, v in latency.items()})
