"""INT8 Q/DQ quantization of the reference model with real calibration samples."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.errors import CalibrationError
from calibration.quantize import quantize_int8
from convert.cli import DEFAULT_CHECKPOINT
from convert.pipeline import convert
from edge.runners.onnxruntime import make_session
from reference_model.dataset import DataConfig, SplitSize, _counts, collate, evaluation_samples, load_split

SMALL = DataConfig(seed=11, val=SplitSize(80, _counts(4, 12, 12), babble_sources=6, noise_clips=6))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    bundle = convert(DEFAULT_CHECKPOINT, tmp / "bundle", log=lambda *_: None)
    data = load_split(SMALL, "val", tmp / "data")
    samples = evaluation_samples(data, 0, 10.0, 0.85)
    batches = [collate(data, samples[i : i + 16]) for i in range(0, len(samples), 16)]
    return tmp, bundle.model_path("fp32"), batches


def test_int8_qdq_model_follows_tensorrt_rules_and_matches_fp32(setup):
    tmp, fp32, batches = setup
    out = tmp / "model.int8.qdq.onnx"
    summary = quantize_int8(fp32, out, batches[:4])
    assert summary["calibration_samples"] == 64
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = numpy_helper.to_array(inits[node.input[2]])
            assert zp.dtype == np.int8 and not zp.any(), node.name  # signed, zero point 0
    # the audio front end stays in floating point
    frontend_conv = next(n for n in model.graph.node if n.name == "/audio_encoder/frontend/Conv")
    producers = {o: n for n in model.graph.node for o in n.output}
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in frontend_conv.input)
    assert summary["weight_max_abs"] == 127
    # INT8 decisions agree with FP32 on held-out batches, on any CPU: the full-range model in TensorRT's
    # arithmetic (Q/DQ emulated in float), the 7-bit CPU model on ONNX Runtime's int8 kernels.
    cpu_model = tmp / "model.int8.cpu.qdq.onnx"
    assert quantize_int8(fp32, cpu_model, batches[:4], reduced_range_weights=True)["weight_max_abs"] == 64
    s32 = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    for s8 in (make_session(out, emulate_qdq=True), make_session(cpu_model)):
        agree, n = 0, 0
        for b in batches[4:]:
            feed = {"image": b["image"], "audio": b["audio"]}
            a, c = s32.run(None, feed), s8.run(None, feed)
            agree += int((a[0].argmax(1) == c[0].argmax(1)).sum())
            n += len(b["image"])
            assert np.abs(a[1] - c[1]).max() < 0.05  # target point within 5 % of the image
        assert agree / n >= 0.95


def test_quantizing_without_calibration_data_is_refused(setup):
    tmp, fp32, _ = setup
    with pytest.raises(CalibrationError, match="needs a calibration set"):
        quantize_int8(fp32, tmp / "none.onnx", [])
    assert not (tmp / "none.onnx").exists()


def test_calibration_batches_must_fit_the_model(setup):
    tmp, fp32, _ = setup
    with pytest.raises(CalibrationError, match="lacks model inputs"):
        quantize_int8(fp32, tmp / "bad.onnx", [{"image": np.zeros((1, 120, 160, 3), np.uint8)}])
    assert not (tmp / "bad.onnx").exists()


def test_modelopt_quantizer_without_modelopt_says_how_to_install_it(setup):
    tmp, fp32, batches = setup
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        with pytest.raises(CalibrationError, match=r"pip install 'voxedge\[modelopt\]'"):
            quantize_int8(fp32, tmp / "mo.onnx", batches[:2], quantizer="modelopt")
        assert not (tmp / "mo.onnx").exists()
        return
    # Where ModelOpt is installed (its own venv: it brings onnxruntime-gpu), quantize for real.
    summary = quantize_int8(fp32, tmp / "mo.onnx", batches[:4], quantizer="modelopt")
    assert summary["method"].startswith("modelopt") and summary["calibration_samples"] == 64
    model = onnx.load(str(tmp / "mo.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def test_unknown_quantizer_is_refused(setup):
    tmp, fp32, batches = setup
    with pytest.raises(CalibrationError, match="7-bit weights .* onnxruntime quantizer only"):
        quantize_int8(fp32, tmp / "x.onnx", batches[:1], quantizer="modelopt", reduced_range_weights=True)
    with pytest.raises(CalibrationError, match="unknown quantizer 'tflite'"):
        quantize_int8(fp32, tmp / "x.onnx", batches[:1], quantizer="tflite")
