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


# -- ONNX Runtime's GPU providers: their options (no GPU needed to check what the session is given) ----------


@pytest.mark.parametrize("precision, fp16, int8", [("fp32", False, False), ("fp16", True, False),
                                                   ("int8", False, True)])
def test_provider_options_follow_the_onnx_files_precision(bundle, precision, fp16, int8):
    from edge.runners.onnxruntime import provider_options

    (trt_name, trt), (cuda_name, cuda), (cpu_name, cpu) = provider_options(bundle, precision, device=1)
    assert (trt_name, cuda_name, cpu_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                               "CPUExecutionProvider")
    cache = str(bundle.path / "engines" / "ort-trt")
    assert trt == {"device_id": 1, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                   "trt_fp16_enable": fp16, "trt_int8_enable": int8, "trt_max_workspace_size": 1024 << 20}
    assert cuda == {"device_id": 1} and cpu == {}


def _record_sessions(monkeypatch, available=None) -> list:
    """Record what each session is given; run it on the CPU (there is no GPU here)."""
    import onnxruntime as ort

    import edge.runners.onnxruntime as module

    seen, real = [], module.make_session

    def make_session(path, providers=("CPUExecutionProvider",), intra_op_threads=0, emulate_qdq=False):
        seen.append((path.name, list(providers)))
        return real(path, ("CPUExecutionProvider",), intra_op_threads, emulate_qdq)

    monkeypatch.setattr(module, "make_session", make_session)
    if available is not None:
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))
    return seen


def test_the_cpu_session_gets_provider_names_only(bundle, monkeypatch):
    seen = _record_sessions(monkeypatch)
    with make_runner("onnxruntime", bundle) as runner:  # the default providers, on a machine without a GPU
        runner.infer(_feed())
    assert seen == [("model.fp32.onnx", ["CPUExecutionProvider"])]
    assert not (bundle.path / "engines" / "ort-trt").exists()


def test_gpu_providers_get_caches_precision_and_device(bundle, tmp_path, monkeypatch):
    legacy = _legacy_int8_bundle(bundle, tmp_path)
    seen = _record_sessions(monkeypatch, ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                          "CPUExecutionProvider"])
    with make_runner("onnxruntime", legacy, "int8", device=1) as runner:
        assert runner.precision == "int8"  # GPU providers take the full-range Q/DQ model
    ((model, providers),) = seen
    cache = legacy.path / "engines" / "ort-trt"
    assert model == "model.int8.qdq.onnx" and cache.is_dir()
    (trt_name, trt), cuda, cpu = providers
    assert trt_name == "TensorrtExecutionProvider" and trt["device_id"] == 1
    assert trt["trt_int8_enable"] and not trt["trt_fp16_enable"]
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(cache)
    assert cuda == ("CUDAExecutionProvider", {"device_id": 1}) and cpu == "CPUExecutionProvider"


def test_the_cuda_provider_alone_gets_its_device(bundle, monkeypatch):
    seen = _record_sessions(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with make_runner("onnxruntime", bundle, device=2):
        pass
    assert seen == [("model.fp32.onnx", [("CUDAExecutionProvider", {"device_id": 2}), "CPUExecutionProvider"])]
    assert not (bundle.path / "engines" / "ort-trt").exists()
