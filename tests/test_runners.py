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
