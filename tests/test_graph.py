"""Exact ONNX rewrites (convert.graph) and the Q/DQ layout ONNX Runtime can fuse."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from calibration.quantize import dedicate_qdq_pairs, quantize_int8
from convert.graph import conv1d_as_conv2d, prepare_for_runtimes
from edge.runners.onnxruntime import make_session


class _Temporal(nn.Module):
    """1-D convolutions with stride, dilation, groups, bias and a residual, as audio encoders use."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(8, 16, 5, stride=2, padding=2)
        self.a2 = nn.Conv1d(16, 16, 1)  # reads a's output directly
        self.b = nn.Conv1d(16, 16, 3, padding=2, dilation=2, groups=4, bias=False)
        self.skip = nn.Conv1d(8, 16, 1, stride=2)

    def forward(self, x):
        y = torch.relu(self.a2(self.a(x)))
        y = torch.relu(self.b(y) + y + self.skip(x))  # y is read by a Conv and by the Add
        return y.amax(-1)


def _export(tmp_path, model, shape):
    path = tmp_path / "m.onnx"
    torch.onnx.export(model.eval(), (torch.randn(*shape),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load(str(path))


def _run(model, feed):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_conv1d_rewrite_is_exact_and_leaves_no_squeeze_between_convolutions(tmp_path):
    torch.manual_seed(0)
    model = _export(tmp_path, _Temporal(), (2, 8, 40))
    rewritten, counts = prepare_for_runtimes(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(rewritten, full_check=True)
    assert counts["conv1d_as_conv2d"] == 4 and counts["squeezes_sunk"] >= 2
    inits = {i.name: i for i in rewritten.graph.initializer}
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert all(len(inits[n.input[1]].dims) == 4 for n in convs)
    producer = {o: n for n in rewritten.graph.node for o in n.output}
    # the second convolution reads the first one's (Relu'd) 4-D output directly
    b = next(n for n in convs if "/b/" in n.name)
    assert producer[b.input[0]].op_type == "Relu"
    ops = collections.Counter(n.op_type for n in rewritten.graph.node)
    assert ops["Squeeze"] == 1 and ops["Unsqueeze"] == 1  # once in, once out
    x = np.random.default_rng(0).standard_normal((3, 8, 40)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, {"x": x}), _run(model, {"x": x}), atol=1e-5)


def test_models_without_1d_convolutions_are_untouched(tmp_path):
    model = _export(tmp_path, nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (1, 3, 8, 8))
    before = model.SerializeToString()
    rewritten, count = conv1d_as_conv2d(model)
    assert count == 0 and rewritten.SerializeToString() == before


class _Camera(nn.Module):
    """uint8 NHWC image in, as the camera contract has it: PyTorch exports the permute before the cast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image):
        return self.conv(image.permute(0, 3, 1, 2).float() / 255.0)


def _uint8_between_nodes(model) -> list[str]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    io = {v.name for v in (*graph.input, *graph.output)}
    return [v.name for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8
            and v.name not in io]


def test_the_cast_of_a_uint8_input_moves_ahead_of_its_layout_ops_exactly(tmp_path):
    from convert.trt_check import tensorrt_warnings

    path = tmp_path / "cam.onnx"
    image = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    torch.onnx.export(_Camera().eval(), (image,), str(path), input_names=["image"], output_names=["y"],
                      opset_version=17, dynamo=False, dynamic_axes={"image": {0: "batch"}, "y": {0: "batch"}})
    exported = onnx.load(str(path))
    assert _uint8_between_nodes(exported)  # what TensorRT's parser refuses
    assert any("is uint8, which TensorRT takes only as a network input or output" in w
               for w in tensorrt_warnings(exported))
    rewritten, counts = prepare_for_runtimes(onnx.load_from_string(exported.SerializeToString()))
    onnx.checker.check_model(rewritten, full_check=True)
    assert counts["casts_moved_to_inputs"] == 1 and not _uint8_between_nodes(rewritten)
    assert tensorrt_warnings(rewritten) == []
    assert [n.op_type for n in rewritten.graph.node][:2] == ["Cast", "Transpose"]
    feed = {"image": np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)}
    np.testing.assert_array_equal(_run(rewritten, feed), _run(exported, feed))


def _uint8_graph(nodes, outputs):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4, 6])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [helper.make_tensor("shape", TensorProto.INT64, [2], [8, 6]),
                               helper.make_tensor("starts", TensorProto.INT64, [1], [1]),
                               helper.make_tensor("ends", TensorProto.INT64, [1], [5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_chain_of_layout_ops_and_two_casts_is_rewritten_and_anything_else_is_left_alone():
    from onnx import TensorProto, helper

    chain = _uint8_graph([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                          helper.make_node("Slice", ["r", "starts", "ends"], ["s"]),
                          helper.make_node("Cast", ["s"], ["a"], to=TensorProto.FLOAT),
                          helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
                          helper.make_node("Cast", ["t"], ["b"], to=TensorProto.FLOAT)], ["a", "b"])
    rewritten, counts = prepare_for_runtimes(onnx.load_from_string(chain.SerializeToString()))
    assert counts["casts_moved_to_inputs"] == 1 and not _uint8_between_nodes(rewritten)
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(1).integers(0, 256, (2, 4, 6), dtype=np.uint8)
    import onnxruntime as ort

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    for got, want in zip(run(rewritten), run(chain)):
        np.testing.assert_array_equal(got, want)
    # an op that computes on the uint8 values (Add) or casts to two types: no exact single move, left as it is
    for nodes in ([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]), helper.make_node("Add", ["t", "t"], ["u"]),
                   helper.make_node("Cast", ["u"], ["a"], to=TensorProto.FLOAT)],
                  [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                   helper.make_node("Cast", ["t"], ["a"], to=TensorProto.FLOAT),
                   helper.make_node("Cast", ["t"], ["b"], to=TensorProto.FLOAT16)]):
        outputs = [n.output[0] for n in nodes if n.op_type == "Cast"]
        model = _uint8_graph(nodes, outputs)
        before = model.SerializeToString()
        again, counts = prepare_for_runtimes(model)
        assert counts["casts_moved_to_inputs"] == 0 and again.SerializeToString() == before


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The small model quantized both ways: full-range weights (TensorRT's model) and 7-bit weights (the CPU model)."""
    tmp = tmp_path_factory.mktemp("g")
    torch.manual_seed(1)
    model, _ = prepare_for_runtimes(_export(tmp, _Temporal(), (2, 8, 40)))
    fp32 = tmp / "fp32.onnx"
    onnx.save(model, str(fp32))
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((4, 8, 40)).astype(np.float32)} for _ in range(4)]
    out, out_cpu = tmp / "int8.onnx", tmp / "int8.cpu.onnx"
    summary = quantize_int8(fp32, out, batches, keep_float_prefixes=(), keep_output_layers_float=False)
    summary_cpu = quantize_int8(fp32, out_cpu, batches, keep_float_prefixes=(), keep_output_layers_float=False,
                                reduced_range_weights=True)
    return fp32, out, summary, out_cpu, summary_cpu


def test_every_dequantize_feeds_one_node_so_onnxruntime_fuses_every_convolution(quantized, tmp_path):
    fp32, int8, summary, int8_cpu, summary_cpu = quantized
    import onnxruntime as ort

    for path, info in ((int8, summary), (int8_cpu, summary_cpu)):
        model = onnx.load(str(path))
        consumers = collections.Counter(i for n in model.graph.node for i in n.input)
        dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        assert dqs and all(consumers[n.output[0]] == 1 for n in dqs)
        assert info["dedicated_qdq_pairs"] >= 1  # the residual y is read by conv b and by the Add
        assert dedicate_qdq_pairs(model) == 0  # idempotent
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["CommonSubexpressionElimination"])
        optimized = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
        assert optimized["QLinearConv"] == 4 and optimized["Conv"] == 0
    assert summary["weight_max_abs"] == 127 and summary_cpu["weight_max_abs"] == 64
    # On any CPU: the full-range model in TensorRT's arithmetic (Q/DQ emulated in float), and the 7-bit model
    # on ONNX Runtime's int8 kernels, whose pair sums cannot saturate, stay close to FP32.
    x = np.random.default_rng(2).standard_normal((2, 8, 40)).astype(np.float32)
    a = make_session(fp32).run(None, {"x": x})[0]
    for path, emulate in ((int8, True), (int8_cpu, False), (int8_cpu, True)):
        b = make_session(path, emulate_qdq=emulate).run(None, {"x": x})[0]
        assert np.abs(a - b).max() < 0.05 * np.abs(a).max(), (path.name, emulate)
