"""``--precision auto``: time the bundle's precisions on this device at start and run the fastest.

Which precision is fastest depends on the device, not on the model: on a 2-core x86 CPU
ONNX Runtime runs the reference bundle's FP32 model faster than its INT8 one at batch 1
(INT8 adds quantize/dequantize work that small convolutions do not win back), while
TensorRT on a Jetson runs INT8 fastest. Every model file in a bundle passed its accuracy
gate when it was converted (``voxedge convert`` refuses one that does not), so any of
them may run; the start-up timing picks by speed alone and says what it measured.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

AUTO = "auto"
PRECISIONS = ("fp32", "fp16", "int8")
CHOICES = (AUTO, *PRECISIONS)
WARMUP_RUNS = 3  # first runs allocate and tune; not timed
TIMED_RUNS = 10
MAX_TIMING_S = 0.25  # per precision; fewer timed runs where one run is slow


@dataclass(frozen=True)
class Timing:
    precision: str
    model: str  # the file (or engine source) that ran
    median_ms: float | None
    runs: int
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"{self.precision}: not usable ({self.error})"
        return f"{self.precision} {self.median_ms:.2f} ms"


def bundle_precisions(manifest) -> list[str]:
    """The precisions a bundle's manifest has a model file for, in ``PRECISIONS`` order."""
    have = {f.precision for f in manifest.files if f.precision}
    return [p for p in PRECISIONS if p in have]


def batch_one_feed(bundle) -> dict:
    """One real input (the first golden sample) where the bundle has one, else zeros of the declared shapes."""
    import numpy as np

    from edge.bundle import numpy_dtype

    stored = {}
    golden = bundle.path / "golden.npz"
    if golden.is_file():
        with np.load(golden) as saved:  # closed again: serve runs for days
            stored = {k: np.ascontiguousarray(saved[k][:1]) for k in saved.files if k.startswith("input.")}
    return {spec.name: stored.get(f"input.{spec.name}",
                                  np.zeros([1 if d == -1 else d for d in spec.shape], numpy_dtype(spec.dtype)))
            for spec in bundle.manifest.inputs}


def _time(runner, feed, clock) -> tuple[float, int]:
    for _ in range(WARMUP_RUNS):
        runner.infer(feed)
    times: list[float] = []
    start = clock()
    while len(times) < TIMED_RUNS and (len(times) < 3 or clock() - start < MAX_TIMING_S):
        t0 = clock()
        runner.infer(feed)
        times.append(clock() - t0)
    return statistics.median(times) * 1e3, len(times)


def pick_fastest(bundle, backend: str, options: dict | None = None, make_runner=None, clock=time.perf_counter):
    """Activate a runner of each of the bundle's precisions, time batch-1 inference, keep the fastest.

    Returns (the fastest runner, active; the timings of all). A precision whose runner
    cannot start (no engine built for it, a provider missing) is reported and skipped;
    if none starts, RunnerError lists why for each.
    """
    from edge.runners import RunnerError
    from edge.runners import make_runner as default_make

    make_runner = make_runner or default_make
    feed = batch_one_feed(bundle)
    timings: list[Timing] = []
    best, best_ms, tried = None, float("inf"), set()
    for precision in bundle_precisions(bundle.manifest):
        try:
            runner = make_runner(backend, bundle, precision, **(options or {}))
        except Exception as exc:  # a bundle without this file for the backend: say so, try the next
            timings.append(Timing(precision, "", None, 0, str(exc)))
            continue
        if runner.model_path in tried and runner.precision != precision:
            # e.g. int8 falls back to the FP32 file on a CPU that saturates: the same model, timed once
            timings.append(Timing(precision, runner.model_path.name, None, 0, f"runs {runner.model_note}"))
            continue
        tried.add(runner.model_path)
        try:
            runner.activate()
            median_ms, runs = _time(runner, feed, clock)
        except Exception as exc:  # RunnerError, EngineError: this precision cannot run here
            runner.deactivate()
            timings.append(Timing(precision, runner.model_path.name, None, 0, str(exc).splitlines()[0]))
            continue
        timings.append(Timing(runner.precision, runner.model_path.name, median_ms, runs))
        if median_ms < best_ms:
            if best is not None:
                best.deactivate()
            best, best_ms = runner, median_ms
        else:
            runner.deactivate()
    if best is None:
        raise RunnerError("--precision auto: no model of the bundle runs here: "
                          + "; ".join(t.describe() for t in timings))
    measured = ", ".join(t.describe() for t in timings)
    best.model_note = f"{best.model_note} [--precision auto: fastest here, median batch-1 time: {measured}]"
    return best, timings
