"""voxedge convert: the reference model to a verified FP32 ONNX bundle, and every kind of bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from convert.cli import DEFAULT_CHECKPOINT
from convert.config import REFERENCE_CONFIG, ConvertConfig
from convert.errors import ConvertError, VerificationError
from convert.pipeline import convert
from edge.bundle import load_bundle, sha256_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("b") / "bundle", log=lambda *_: None, fp16=True)


def test_reference_bundle_is_verified_and_self_describing(bundle):
    loaded = load_bundle(bundle.path)
    m = loaded.manifest
    assert [i.name for i in m.inputs] == ["image", "audio"]
    assert m.heads.intent_labels[-1] == "none" and m.heads.command_threshold == pytest.approx(0.7)
    assert m.provenance["checkpoint_sha256"] == sha256_file(DEFAULT_CHECKPOINT)
    assert m.provenance["versions"]["opset"] == "17"
    assert m.provenance["keep_float_prefixes"]  # the audio front end: build-engine pins it to FP32
    report = json.loads((bundle.path / "report.json").read_text())
    for row in report["verification"]["fp32"]:
        assert row["max_abs"] < 1e-3 and row["cosine"] > 0.9999


def test_fp16_variant_keeps_the_front_end_and_io_in_fp32_and_matches_pytorch(bundle):
    import onnx

    m = load_bundle(bundle.path).manifest
    assert m.file("fp16").path == "model.fp16.onnx"
    model = onnx.load(str(bundle.model_path("fp16")))
    f16 = onnx.TensorProto.FLOAT16
    assert sum(i.data_type == f16 for i in model.graph.initializer) > 20  # the weights are half precision
    assert all(t.type.tensor_type.elem_type != f16 for t in (*model.graph.input, *model.graph.output))
    report = json.loads((bundle.path / "report.json").read_text())
    assert "/audio_encoder/frontend/Conv" in report["fp16"]["kept_fp32"]
    for row in report["verification"]["fp16"]:
        assert row["cosine"] > 0.999
    assert set(report["latency_ms_batch1"]) == {"fp32", "fp16"}
    golden = np.load(bundle.path / "golden.npz")
    out = ort.InferenceSession(str(bundle.model_path("fp16")), providers=["CPUExecutionProvider"]).run(
        ["intent_logits"], {"image": golden["input.image"], "audio": golden["input.audio"]})[0]
    assert (out.argmax(1) == golden["output.intent_logits"].argmax(1)).all()


def test_onnx_has_dynamic_batch_and_reproduces_golden_outputs(bundle):
    session = ort.InferenceSession(str(bundle.model_path("fp32")), providers=["CPUExecutionProvider"])
    golden = np.load(bundle.path / "golden.npz")
    feed = {"image": golden["input.image"], "audio": golden["input.audio"]}
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for name in ("intent_logits", "target_xy", "target_logit", "attention"):
        np.testing.assert_allclose(out[name], golden[f"output.{name}"], atol=1e-4)
    for batch in (1, 8):
        rng = np.random.default_rng(batch)
        res = session.run(None, {"image": rng.integers(0, 256, (batch, 120, 160, 3), dtype=np.uint8),
                                 "audio": (rng.standard_normal((batch, 32000)) * 0.1).astype(np.float32)})
        assert res[0].shape == (batch, 9) and res[3].shape == (batch, 15, 20)


def _config(tmp_path, **changes):
    raw = json.loads(REFERENCE_CONFIG.read_text())
    raw.update(changes)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    return path


def test_damaged_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(ConvertError, match="unreadable"):
        convert(bad, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_wrong_factory(tmp_path):
    with pytest.raises(ConvertError, match="cannot import"):
        convert(DEFAULT_CHECKPOINT, tmp_path / "out", factory="no_such_pkg.model:build", log=lambda *_: None)
    with pytest.raises(ConvertError, match="package.module:function"):
        convert(DEFAULT_CHECKPOINT, tmp_path / "out", factory="reference_model.model", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_outputs_that_do_not_match_the_config(tmp_path):
    raw = json.loads(REFERENCE_CONFIG.read_text())
    cfg = _config(tmp_path, outputs=raw["outputs"][:3], heads={**raw["heads"], "attention_output": None})
    with pytest.raises(ConvertError, match="returns 4 outputs but the config declares 3"):
        convert(DEFAULT_CHECKPOINT, tmp_path / "out", config_path=cfg, log=lambda *_: None)
    outputs = raw["outputs"]
    outputs[3] = {**outputs[3], "shape": [-1, 30, 40]}
    cfg = _config(tmp_path, outputs=outputs)
    with pytest.raises(ConvertError, match="attention"):
        convert(DEFAULT_CHECKPOINT, tmp_path / "out", config_path=cfg, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (lambda r: r["inputs"].pop(), "exactly two inputs"),
    (lambda r: r["inputs"].reverse(), "the first input ('audio') is the camera image"),
    (lambda r: r["inputs"][0].update(shape=[-1, 3, 120, 160]), "uint8 of shape [-1, 120, 160, 3] (NHWC"),
    (lambda r: r["inputs"][1].update(shape=[-1, 16000]), "float32 of shape [-1, 32000]"),
    (lambda r: r["preprocessing"].update(audio_sample_rate_hz=48000), "delivers 16000 Hz"),
    (lambda r: r["heads"]["intent_labels"].pop(), "9 classes but 8 intent labels"),
    (lambda r: r["heads"].update(presence_output="seen"), "heads name outputs ['seen']"),
    (lambda r: r.update(tolerance={"max_abs": 1e-3, "cosine": 0.9}), "unknown keys ['cosine']"),
])
def test_configs_the_robot_could_not_run_are_refused_before_export(tmp_path, change, message):
    raw = json.loads(REFERENCE_CONFIG.read_text())
    change(raw)
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(raw))
    with pytest.raises(ConvertError, match=re.escape(message)):
        ConvertConfig.from_file(cfg)


def test_verification_over_tolerance_leaves_no_bundle(tmp_path):
    cfg = _config(tmp_path, tolerance={"max_abs": 0.0})
    with pytest.raises(VerificationError, match="disagrees with PyTorch"):
        convert(DEFAULT_CHECKPOINT, tmp_path / "out", config_path=cfg, log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"]


def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edge.cli", "convert", "--out", str(tmp_path / "b"),
                             "--factory", "reference_model.model:nothing"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "no callable 'nothing'" in result.stderr and "Traceback" not in result.stderr


def test_tensorrt_check_names_what_the_robot_parser_would_refuse(bundle):
    from onnx import TensorProto, helper
    from onnx import load as onnx_load

    from convert.trt_check import tensorrt_warnings

    report = json.loads((bundle.path / "report.json").read_text())
    assert report["tensorrt_check"] == {"fp32": [], "fp16": []}  # the reference model builds as it is
    # no model in the bundle (the CPU INT8 one included) has a uint8 tensor between nodes
    models = sorted(bundle.path.glob("*.onnx"))
    assert len(models) >= 2
    for path in models:
        assert not [w for w in tensorrt_warnings(onnx_load(path)) if "uint8" in w], path.name
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    graph = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["u"], name="dedupe"),
         helper.make_node("Einsum", ["x", "x"], ["d"], name="diag", equation="i,i->i"),
         helper.make_node("Einsum", ["x"], ["e"], name="ell", equation="...->..."),
         helper.make_node("Inverse", ["x"], ["inv"], name="contrib", domain="com.microsoft"),
         helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="asym")],
        "g", [x], [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("u", "d", "e", "inv", "q")],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("zp", TensorProto.INT8, [], [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    warnings = "\n".join(tensorrt_warnings(model))
    assert "opset 21 is outside what TensorRT 10.3 parses" in warnings
    assert "node dedupe (Unique): TensorRT's ONNX parser has no Unique operator" in warnings
    assert "node ell" not in warnings  # TensorRT 10's parser expands an ellipsis itself; 8.6's refused it
    assert "node ell (Einsum): TensorRT's Einsum takes no ellipsis" in "\n".join(
        tensorrt_warnings(model, trt_version="8.6"))
    assert "node contrib (Inverse): operator domain 'com.microsoft' needs a TensorRT plugin" in warnings
    assert "node asym (QuantizeLinear): zero point must be 0" in warnings
    assert "node diag" not in warnings  # i,i->i repeats an index across operands, not within one: fine


def test_a_model_tensorrt_would_refuse_stops_the_conversion_unless_allowed(tmp_path, monkeypatch):
    import convert.steps as steps

    finding = "node /Cast (Cast): output 'x' is uint8, which TensorRT takes only as a network input or output"
    monkeypatch.setattr(steps, "tensorrt_warnings", lambda model: [finding])
    out = tmp_path / "bundle"
    with pytest.raises(ConvertError, match="TensorRT's ONNX parser would refuse") as err:
        convert(DEFAULT_CHECKPOINT, out, log=lambda *_: None)
    assert f"  fp32 model: {finding}" in str(err.value) and "--allow-trt-findings" in str(err.value)
    assert not out.exists()  # nothing half-written
    convert(DEFAULT_CHECKPOINT, out, log=lambda *_: None, allow_trt_findings=True)
    assert json.loads((out / "report.json").read_text())["tensorrt_check"] == {"fp32": [finding]}
