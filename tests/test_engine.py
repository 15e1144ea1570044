"""Engine keys and device checks (no GPU needed); the TensorRT build itself behind requires_tensorrt."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bundle import Manifest, load_bundle, write_bundle
from edge.engine import EngineError, EngineKey, find_engine

ROOT = Path(__file__).resolve().parents[1]
KEY = EngineKey("ab" * 32, "10.3.0", "8.7", "fp16", (1, 1, 8), ("FP16",))


@pytest.fixture
def bundle_with_engine(tmp_path):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    base = convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None)

    def populate(tmp):
        for f in base.manifest.files:
            (tmp / f.path).write_bytes((base.path / f.path).read_bytes())
        (tmp / "engines").mkdir()
        (tmp / KEY.plan_name).write_bytes(b"plan")
        entry = {"path": KEY.plan_name, "key": dataclasses.asdict(KEY), "build_s": 1.0}
        return Manifest(**{**vars(base.manifest), "engines": (entry,)})

    write_bundle(base.path, populate)
    return load_bundle(base.path)


def test_key_digest_is_stable_and_names_the_plan():
    again = EngineKey.from_dict(dataclasses.asdict(KEY))
    assert again == KEY and again.digest() == KEY.digest()
    assert KEY.plan_name == f"engines/fp16-{KEY.digest()}.plan"
    assert dataclasses.replace(KEY, compute_capability="8.6").digest() != KEY.digest()


def test_matching_engine_is_found_and_registered_in_the_manifest(bundle_with_engine):
    assert find_engine(bundle_with_engine, KEY).read_bytes() == b"plan"
    smaller = dataclasses.replace(KEY, batch_profile=(1, 1, 4))
    assert find_engine(bundle_with_engine, smaller).name == Path(KEY.plan_name).name


def test_mismatched_engine_is_refused_with_the_rebuild_command(bundle_with_engine):
    other_gpu = dataclasses.replace(KEY, compute_capability="7.2", tensorrt_version="10.7.0")
    with pytest.raises(EngineError, match="compute_capability: engine '8.7', here '7.2'") as err:
        find_engine(bundle_with_engine, other_gpu)
    assert "tensorrt_version" in str(err.value)
    assert f"voxedge build-engine {bundle_with_engine.path} --precision fp16" in str(err.value)
    with pytest.raises(EngineError, match="max batch: engine 8, needed 16"):
        find_engine(bundle_with_engine, dataclasses.replace(KEY, batch_profile=(1, 1, 16)))
    with pytest.raises(EngineError, match="no usable int8 engine"):
        find_engine(bundle_with_engine, dataclasses.replace(KEY, precision="int8"))


def test_build_engine_without_tensorrt_says_where_engines_are_built(tmp_path):
    pytest.importorskip("onnx")
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None)
    result = subprocess.run([sys.executable, "-m", "edge.cli", "build-engine", str(tmp_path / "b")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "TensorRT is not installed" in result.stderr and "JetPack" in result.stderr


@pytest.mark.requires_tensorrt
@pytest.mark.requires_cuda
def test_build_reference_fp16_engine(tmp_path):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from edge.engine import build_engine, device_key

    convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None)
    plan = build_engine(tmp_path / "b", "fp16", max_batch=4, log=lambda *_: None)
    bundle = load_bundle(tmp_path / "b")
    assert plan.is_file() and plan.stat().st_size > 100_000
    assert find_engine(bundle, device_key(bundle, "fp16", (1, 1, 4), ("FP16",))) == plan
    assert list((tmp_path / "b" / "engines").glob("timing-*.cache"))


def test_tensorrt_runner_without_tensorrt_points_to_the_onnxruntime_runner(tmp_path):
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from edge.runners import RunnerError, make_runner

    bundle = convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None)
    runner = make_runner("tensorrt", bundle, "fp16")
    assert runner.model_path.name == "model.fp32.onnx"  # fp16 engines are built from the FP32 model
    with pytest.raises(RunnerError, match="needs tensorrt and pycuda.*use the onnxruntime runner"):
        runner.activate()
    assert not runner.is_active


@pytest.mark.requires_tensorrt
@pytest.mark.requires_cuda
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_runner_agrees_with_onnxruntime(tmp_path, precision):
    import numpy as np

    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from edge.engine import build_engine
    from edge.runners import make_runner
    from reference_model.sets import write_sim_set

    write_sim_set(tmp_path / "calib", split="val", n=64)
    write_sim_set(tmp_path / "eval", split="test", n=64)
    convert(DEFAULT_CHECKPOINT, tmp_path / "b", calibration=tmp_path / "calib", eval_set=tmp_path / "eval",
            log=lambda *_: None)
    build_engine(tmp_path / "b", precision, max_batch=4, log=lambda *_: None)
    bundle = load_bundle(tmp_path / "b")
    golden = np.load(bundle.path / "golden.npz")
    feed = {"image": golden["input.image"], "audio": golden["input.audio"]}
    with make_runner("tensorrt", bundle, precision, max_batch=4) as trt_runner:
        got = trt_runner.infer(feed)
        one = trt_runner.infer({k: v[:1] for k, v in feed.items()})  # a smaller batch on the same buffers
    assert list(got) == ["intent_logits", "target_xy", "target_logit", "attention"]
    assert (got["intent_logits"].argmax(1) == golden["output.intent_logits"].argmax(1)).all()
    assert np.abs(got["target_xy"] - golden["output.target_xy"]).max() < 0.05
    np.testing.assert_allclose(one["target_xy"], got["target_xy"][:1], atol=1e-3)
