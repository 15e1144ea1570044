"""The runner contract on the real reference bundle with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from convert.cli import DEFAULT_CHECKPOINT
from convert.pipeline import convert
from edge.runners import RunnerError, make_runner


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("r") / "bundle", log=lambda *_: None)


def _feed(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (batch, 120, 160, 3), dtype=np.uint8),
            "audio": (rng.standard_normal((batch, 32000)) * 0.1).astype(np.float32)}


def test_onnxruntime_runner_reproduces_golden_outputs(bundle):
    golden = np.load(bundle.path / "golden.npz")
    with make_runner("onnxruntime", bundle, providers=("CPUExecutionProvider",)) as runner:
        assert runner.is_active and runner.providers == ["CPUExecutionProvider"]
        out = runner.infer({"image": golden["input.image"], "audio": golden["input.audio"]})
        assert list(out) == ["intent_logits", "target_xy", "target_logit", "attention"]
        for name, value in out.items():
            np.testing.assert_allclose(value, golden[f"output.{name}"], atol=1e-4)
        assert runner.last_latency_s > 0
    assert not runner.is_active


@pytest.mark.parametrize(
    "feed, message",
    [
        ({"image": _feed()["image"]}, "missing \\['audio'\\]"),
        ({**_feed(), "extra": np.zeros(1)}, "unexpected \\['extra'\\]"),
        ({**_feed(), "image": _feed()["image"].astype(np.float32)}, "must be a uint8 array"),
        ({**_feed(), "image": np.zeros((2, 240, 320, 3), np.uint8)}, "the model takes \\[-1, 120, 160, 3\\]"),
        ({**_feed(), "audio": _feed(batch=3)["audio"]}, "disagree on the batch size"),
    ],
)
def test_bad_inputs_are_refused_with_what_the_model_takes(bundle, feed, message):
    with make_runner("onnxruntime", bundle, providers=("CPUExecutionProvider",)) as runner:
        with pytest.raises(RunnerError, match=message):
            runner.infer(feed)


def test_wrong_state_and_unknown_backend(bundle):
    runner = make_runner("onnxruntime", bundle, providers=("CPUExecutionProvider",))
    with pytest.raises(RunnerError, match="not active"):
        runner.infer(_feed())
    runner.activate()
    with pytest.raises(RunnerError, match="already active"):
        runner.activate()
    runner.deactivate()
    with pytest.raises(RunnerError, match="unknown runner backend"):
        make_runner("tflite", bundle)
    with pytest.raises(RunnerError, match="none of the providers"):
        make_runner("onnxruntime", bundle, providers=("NoSuchExecutionProvider",)).activate()


@pytest.mark.requires_cuda
def test_onnxruntime_cuda_provider_matches_cpu(bundle):
    feed = _feed(batch=4)
    with make_runner("onnxruntime", bundle, providers=("CPUExecutionProvider",)) as cpu:
        ref = cpu.infer(feed)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA execution provider")
    with make_runner("onnxruntime", bundle, providers=("CUDAExecutionProvider",)) as gpu:
        assert gpu.providers[0] == "CUDAExecutionProvider"
        out = gpu.infer(feed)
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-3)


def _legacy_int8_bundle(bundle, tmp_path):
    """A bundle as voxedge made it before the CPU INT8 model: one full-range ``int8`` file, its gate's CPU
    unrecorded. (Its int8 file is a copy of the FP32 model here; what is checked is which file is chosen.)"""
    import dataclasses
    import shutil

    from edge.bundle import ModelFile, load_bundle, write_bundle

    def populate(tmp):
        for f in bundle.manifest.files:
            shutil.copy2(bundle.path / f.path, tmp / f.path)
        shutil.copy2(bundle.path / "model.fp32.onnx", tmp / "model.int8.qdq.onnx")
        files = (*bundle.manifest.files, ModelFile("model.int8.qdq.onnx", "", "int8"))
        return dataclasses.replace(bundle.manifest, files=files)

    write_bundle(tmp_path / "legacy", populate)
    return load_bundle(tmp_path / "legacy")


@pytest.mark.parametrize("saturates", [True, False])
def test_an_old_int8_bundle_runs_fp32_on_a_cpu_whose_int8_sums_saturate(bundle, tmp_path, monkeypatch, saturates):
    import edge.int8_numerics as numerics

    legacy = _legacy_int8_bundle(bundle, tmp_path)
    cpu = numerics.CpuInt8("x86_64", "test CPU", "AVX2" if saturates else "AVX-512 VNNI", (), saturates, saturates)
    monkeypatch.setattr(numerics, "cpu_int8", lambda: cpu)
    with make_runner("onnxruntime", legacy, "int8", providers=("CPUExecutionProvider",)) as runner:
        assert runner.requested_precision == "int8"
        if saturates:
            assert runner.precision == "fp32" and runner.model_path.name == "model.fp32.onnx"
            assert "saturating int16" in runner.model_note and "instead of int8" in runner.model_note
        else:
            assert runner.precision == "int8" and runner.model_path.name == "model.int8.qdq.onnx"
        runner.infer(_feed())
