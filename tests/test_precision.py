"""``--precision auto``: the bundle's models are timed at start and the fastest one runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.precision import AUTO, CHOICES, bundle_precisions, pick_fastest


class _FakeRunner:
    """Stands in for a runner: each infer() advances a fake clock by the precision's latency."""

    def __init__(self, clock, precision, latency_s, fails=False, runs_as=None):
        self.clock, self.latency_s, self.fails = clock, latency_s, fails
        self.precision = runs_as or precision
        self.model_path = Path(f"model.{self.precision}.onnx")
        self.model_note = f"{self.precision}: {self.model_path.name}"
        self.is_active = False

    def activate(self):
        if self.fails:
            raise RuntimeError("the bundle has no usable int8 engine for this device\nsecond line")
        self.is_active = True
        return self

    def deactivate(self):
        self.is_active = False

    def infer(self, feed):
        assert self.is_active and set(feed) == {"image", "audio"}
        self.clock.now += self.latency_s
        return {}


class _Clock:
    now = 0.0

    def __call__(self):
        return self.now


def _bundle(tmp_path, precisions):
    spec = [SimpleNamespace(name="image", shape=(-1, 4, 4, 3), dtype="uint8"),
            SimpleNamespace(name="audio", shape=(-1, 16), dtype="float32")]
    files = [SimpleNamespace(precision=p) for p in precisions]
    return SimpleNamespace(path=tmp_path, manifest=SimpleNamespace(files=files, inputs=spec))


def test_the_fastest_model_runs_and_the_others_are_closed(tmp_path):
    clock, made = _Clock(), []
    latency = {"fp32": 0.004, "fp16": 0.009, "int8": 0.005}

    def make(backend, bundle, precision, **options):
        made.append(_FakeRunner(clock, precision, latency[precision]))
        return made[-1]

    runner, timings = pick_fastest(_bundle(tmp_path, ["int8", "fp32", "fp16"]), "onnxruntime", make_runner=make,
                                   clock=clock)
    assert runner.precision == "fp32" and runner.is_active
    assert [r.is_active for r in made] == [True, False, False]
    assert [(t.precision, round(t.median_ms, 3)) for t in timings] == [("fp32", 4.0), ("fp16", 9.0), ("int8", 5.0)]
    assert "--precision auto: fastest here" in runner.model_note and "int8 5.00 ms" in runner.model_note


def test_a_model_that_cannot_start_is_skipped_and_said_and_none_at_all_is_an_error(tmp_path):
    from edge.runners import RunnerError

    clock = _Clock()

    def make(backend, bundle, precision, **options):
        return _FakeRunner(clock, precision, 0.001, fails=precision == "int8")

    runner, timings = pick_fastest(_bundle(tmp_path, ["fp32", "int8"]), "tensorrt", make_runner=make, clock=clock)
    assert runner.precision == "fp32"
    assert timings[1].error == "the bundle has no usable int8 engine for this device"
    assert "int8: not usable (the bundle has no usable int8 engine" in runner.model_note

    def broken(backend, bundle, precision, **options):
        return _FakeRunner(clock, precision, 0.001, fails=True)

    with pytest.raises(RunnerError, match="--precision auto: no model of the bundle runs here"):
        pick_fastest(_bundle(tmp_path, ["int8"]), "tensorrt", make_runner=broken, clock=clock)


def test_an_int8_request_that_runs_the_fp32_file_is_not_timed_twice(tmp_path):
    clock, made = _Clock(), []

    def make(backend, bundle, precision, **options):  # a CPU that saturates: int8 runs the FP32 file
        made.append(_FakeRunner(clock, precision, 0.002, runs_as="fp32"))
        return made[-1]

    runner, timings = pick_fastest(_bundle(tmp_path, ["fp32", "int8"]), "onnxruntime", make_runner=make, clock=clock)
    assert len([t for t in timings if t.median_ms is not None]) == 1 and not made[1].is_active
    assert timings[1].error.startswith("runs fp32")


def test_timing_stays_within_its_budget_when_a_model_is_slow(tmp_path):
    clock = _Clock()

    def make(backend, bundle, precision, **options):
        return _FakeRunner(clock, precision, 0.2)  # 200 ms a run

    _, timings = pick_fastest(_bundle(tmp_path, ["fp32"]), "onnxruntime", make_runner=make, clock=clock)
    assert timings[0].runs == 3  # the minimum, not TIMED_RUNS


@pytest.fixture(scope="module")
def two_precision_bundle(tmp_path_factory):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("auto") / "bundle", log=lambda *_: None, fp16=True)


def test_auto_times_the_real_models_of_a_bundle_with_onnx_runtime(two_precision_bundle):
    assert bundle_precisions(two_precision_bundle.manifest) == ["fp32", "fp16"]
    runner, timings = pick_fastest(two_precision_bundle, "onnxruntime", {"intra_op_threads": 1})
    try:
        assert {t.precision for t in timings} == {"fp32", "fp16"} and all(t.median_ms > 0 for t in timings)
        fastest = min(timings, key=lambda t: t.median_ms)
        assert runner.is_active and runner.precision == fastest.precision
    finally:
        runner.deactivate()


def test_serve_and_doctor_take_auto_by_default_and_refuse_an_unknown_precision(two_precision_bundle, tmp_path):
    from edge.cli import main
    from edge.settings import SERVE_SETTINGS

    assert SERVE_SETTINGS["precision"][0] == AUTO and AUTO in CHOICES
    cfg = tmp_path / "serve.json"
    cfg.write_text('{"precision": "int4"}')
    assert main(["serve", str(two_precision_bundle.path), "--sim", "--config", str(cfg)]) == 2
    from edge.doctor import check_cpu
    from edge.settings import load

    check = check_cpu(load({"bundle": str(two_precision_bundle.path), "precision": AUTO}, environ={}))
    assert check.status == "OK" and "runs the fastest: fp32: model.fp32.onnx; fp16: model.fp16.onnx" in check.detail

