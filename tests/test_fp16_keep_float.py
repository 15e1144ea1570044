"""make_fp16: what is kept in FP32 is computed in FP32, with no FP16 rounding between kept nodes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from convert.cli import DEFAULT_CHECKPOINT
from convert.errors import ConvertError
from convert.fp16 import FP16_MAX_ABS_OF_RANGE, drop_fp16_round_trips, make_fp16, verify_fp16
from convert.pipeline import convert

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
FRONT = "/front/"


def _run(model, feed, outputs=None):
    data = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return dict(zip(outputs or [o.name for o in session.get_outputs()], session.run(outputs, feed)))


def _round_trips(graph) -> list[tuple[str, str]]:
    """(Cast to FP16, Cast to FP32) pairs where the second reads the first, in ``graph`` and its subgraphs."""
    from convert.fp16 import _all_nodes, _cast_to

    nodes = list(_all_nodes(graph))
    producer = {o: n for n in nodes for o in n.output}
    return [(producer[n.input[0]].name, n.name) for n in nodes
            if _cast_to(n) == F32 and n.input[0] in producer and _cast_to(producer[n.input[0]]) == F16]


def _synthetic(tmp_path):
    """x -> *1e5 -> *1e-8 -> +1e-8 -> log (all kept; log also an output) -> *0.5 (FP16) -> y."""
    consts = {"big": 1e5, "tiny": 1e-8, "eps": 1e-8, "half": 0.5}
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "big"], ["a"], name=f"{FRONT}Scale"),
         helper.make_node("Mul", ["a", "tiny"], ["b"], name=f"{FRONT}Shrink"),
         helper.make_node("Add", ["b", "eps"], ["c"], name=f"{FRONT}Eps"),
         helper.make_node("Log", ["c"], ["logp"], name=f"{FRONT}Log"),
         helper.make_node("Mul", ["logp", "half"], ["y"], name="/tail/Mul")],
        "synthetic", [helper.make_tensor_value_info("x", F32, ["n"])],
        [helper.make_tensor_value_info("logp", F32, ["n"]), helper.make_tensor_value_info("y", F32, ["n"])],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "synthetic.fp32.onnx"
    onnx.save(model, str(path))
    return path


# 1.0 -> 1e5 overflows FP16; 1e-9 (and 1e-12, 1e-8) are below FP16's smallest subnormal 6e-8.
X = np.array([1.0, 0.5, 1e-9, 1e-3, 0.3], np.float32)


def _numpy_fp32(x):
    f = np.float32
    return np.log(x * f(1e5) * f(1e-8) + f(1e-8))


def test_fp16_kept_region_is_exact_fp32_on_a_synthetic_model(tmp_path):
    src = _synthetic(tmp_path)
    keep = [f"{FRONT}{n}" for n in ("Scale", "Shrink", "Eps", "Log")]
    expected = _numpy_fp32(X)
    fp32 = _run(str(src), {"x": X})
    np.testing.assert_allclose(fp32["logp"], expected, rtol=1e-6)

    # The converter alone rounds every edge of the kept region (and the input) to FP16: inf, -inf.
    raw = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, node_block_list=keep)
    assert len(_round_trips(raw.graph)) == 5  # x -> Scale -> Shrink -> Eps -> Log -> output `logp`
    before = _run(raw, {"x": X})
    assert not np.isfinite(before["logp"]).all()
    assert np.nanmax(np.abs(before["logp"] - expected)) > 1  # inf, in fact

    out = tmp_path / "synthetic.fp16.onnx"
    summary = make_fp16(src, out, (FRONT,))
    assert summary["kept_fp32"] == sorted(keep) and summary["fp16_round_trips_removed"] == 5  # 4 + output `logp`
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert _round_trips(model.graph) == []
    assert all(t.type.tensor_type.elem_type == F32 for t in (*model.graph.input, *model.graph.output))
    names = {v.name for v in model.graph.value_info}
    assert names <= {o for n in model.graph.node for o in n.output}  # no value_info for removed tensors
    after = _run(model, {"x": X})
    np.testing.assert_array_equal(after["logp"], fp32["logp"])  # bit for bit the FP32 model's kept region
    np.testing.assert_allclose(after["logp"], expected, rtol=1e-6)
    np.testing.assert_allclose(after["y"], 0.5 * expected, rtol=2e-3)  # only the tail is FP16
    # `logp` is a graph output made by a kept node: an Identity of the FP32 tensor, not Cast -> Cast.
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer["logp"].op_type == "Identity" and producer[producer["logp"].input[0]].name == f"{FRONT}Log"


def test_fp16_leaves_the_models_own_casts_and_fp16_to_fp32_to_fp16_alone(tmp_path):
    """A round trip the model itself asks for (Casts of the FP32 model) is its arithmetic, not the converter's."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "big"], ["a"], name=f"{FRONT}Scale"),
         helper.make_node("Cast", ["a"], ["a16"], name=f"{FRONT}ToHalf", to=F16),
         helper.make_node("Cast", ["a16"], ["a32"], name=f"{FRONT}ToFloat", to=F32),
         helper.make_node("Mul", ["a32", "tiny"], ["y"], name=f"{FRONT}Shrink")],
        "own", [helper.make_tensor_value_info("x", F32, ["n"])], [helper.make_tensor_value_info("y", F32, ["n"])],
        [numpy_helper.from_array(np.array(1e5, np.float32), "big"),
         numpy_helper.from_array(np.array(1e-8, np.float32), "tiny")])
    src = tmp_path / "own.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    summary = make_fp16(src, tmp_path / "own.fp16.onnx", (FRONT,))
    model = onnx.load(str(tmp_path / "own.fp16.onnx"))
    assert (f"{FRONT}ToHalf", f"{FRONT}ToFloat") in _round_trips(model.graph)
    assert summary["fp16_round_trips_removed"] == 4  # x -> Scale -> ToHalf, ToFloat -> Shrink -> output y
    got = _run(model, {"x": X})["y"]
    np.testing.assert_array_equal(got, _run(str(src), {"x": X})["y"])  # inf at 1.0 in both, as the model says

    # FP16 -> FP32 -> FP16 is lossless, and not what this pass is for: untouched.
    h = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["up"], name="up", to=F32),
         helper.make_node("Cast", ["up"], ["y"], name="down", to=F16)],
        "h", [helper.make_tensor_value_info("x", F16, [2])], [helper.make_tensor_value_info("y", F16, [2])])
    assert drop_fp16_round_trips(h, set()) == 0 and [n.name for n in h.node] == ["up", "down"]


def test_fp16_round_trips_read_in_subgraphs_and_inside_subgraphs():
    """An If branch reading the FP32 side of a round trip (outer scope), and a round trip inside a branch."""
    vi = helper.make_tensor_value_info
    then_g = helper.make_graph(  # reads the outer Cast(to=FLOAT) output, and has a round trip of its own
        [helper.make_node("Neg", ["a32"], ["t"], name="t_neg"),
         helper.make_node("Cast", ["t"], ["t16"], name="t_to16", to=F16),
         helper.make_node("Cast", ["t16"], ["t32"], name="t_to32", to=F32),
         helper.make_node("Abs", ["t32"], ["t_out"], name="t_abs")],
        "then", [], [vi("t_out", F32, [3])], value_info=[vi("t", F32, [3]), vi("t16", F16, [3]), vi("t32", F32, [3])])
    else_g = helper.make_graph([helper.make_node("Abs", ["a32"], ["e_out"], name="e_abs")],
                               "else", [], [vi("e_out", F32, [3])])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["a16"], name="x_to16", to=F16),
         helper.make_node("Cast", ["a16"], ["a32"], name="x_to32", to=F32),
         helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
        "g", [vi("cond", TensorProto.BOOL, []), vi("x", F32, [3])], [vi("y", F32, [3])],
        value_info=[vi("a16", F16, [3]), vi("a32", F32, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([1e5, 1e-9, -2.0], np.float32)
    before = [_run(model, {"cond": np.array(c), "x": x})["y"] for c in (True, False)]
    assert np.isinf(before[0][0]) and before[1][1] == 0  # rounded to FP16
    assert drop_fp16_round_trips(model.graph, set()) == 2
    onnx.checker.check_model(model, full_check=True)
    assert _round_trips(model.graph) == [] and [n.name for n in model.graph.node] == ["branch"]
    then_after = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")  # a copy of then_g
    assert [v.name for v in model.graph.value_info] == [] and [v.name for v in then_after.value_info] == ["t"]
    for c in (True, False):
        np.testing.assert_array_equal(_run(model, {"cond": np.array(c), "x": x})["y"], np.abs(x))


def _with_if(tmp_path):
    """The synthetic front end, then an If whose FP16 branches read its output ``logp`` from the outer scope."""
    vi = helper.make_tensor_value_info
    branch = {k: helper.make_graph([helper.make_node("Mul", ["logp", k], [f"{k}_out"], name=f"/{k}/Mul")],
                                   k, [], [vi(f"{k}_out", F32, ["n"])]) for k in ("two", "three")}
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "big"], ["a"], name=f"{FRONT}Scale"),
         helper.make_node("Mul", ["a", "tiny"], ["b"], name=f"{FRONT}Shrink"),
         helper.make_node("Add", ["b", "eps"], ["c"], name=f"{FRONT}Eps"),
         helper.make_node("Log", ["c"], ["logp"], name=f"{FRONT}Log"),
         helper.make_node("If", ["cond"], ["y"], name="/pick", then_branch=branch["two"],
                          else_branch=branch["three"])],
        "withif", [vi("cond", TensorProto.BOOL, []), vi("x", F32, ["n"])], [vi("y", F32, ["n"])],
        [numpy_helper.from_array(np.array(v, np.float32), k)
         for k, v in {"big": 1e5, "tiny": 1e-8, "eps": 1e-8, "two": 2.0, "three": 3.0}.items()])
    src = tmp_path / "withif.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    return src


def test_fp16_round_trips_go_in_a_converted_model_with_an_if(tmp_path):
    src = _with_if(tmp_path)
    original = onnx.load(str(src))
    keep = [n.name for n in original.graph.node if n.name.startswith(FRONT)]
    half = convert_float_to_float16(original, keep_io_types=True, node_block_list=keep)
    assert drop_fp16_round_trips(half.graph, {n.name for n in original.graph.node}) == 4
    assert _round_trips(half.graph) == []
    for cond, k in ((True, 2.0), (False, 3.0)):  # ONNX Runtime orders the nodes itself
        got = _run(half, {"cond": np.array(cond), "x": X})["y"]
        # the kept region's FP32 log, rounded once to FP16 where the If reads it, times k in FP16
        np.testing.assert_allclose(got, k * _numpy_fp32(X), rtol=2e-3)


def test_fp16_make_fp16_of_a_model_with_an_if(tmp_path):
    # convert.graph.toposort counts what an If's branches read from the outer graph as its inputs, so the
    # If stays after the converter's Casts it reads
    summary = make_fp16(_with_if(tmp_path), tmp_path / "withif.fp16.onnx", (FRONT,))
    assert summary["fp16_round_trips_removed"] == 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    # As tests/test_convert.py's fixture (not imported from there: a test module is not a library).
    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("b") / "bundle", log=lambda *_: None, fp16=True)


def _node_output(model, node_name: str, feed) -> np.ndarray:
    """The first output of the node named ``node_name`` (made a graph output for the run)."""
    model = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    name = next(n.output[0] for n in model.graph.node if n.name == node_name)
    model.graph.output.append(helper.make_tensor_value_info(name, F32, None))
    return _run(model, feed)[name]


def test_fp16_reference_model_has_no_round_trips_in_the_front_end(bundle):
    fp32_path, fp16_path = bundle.model_path("fp32"), bundle.model_path("fp16")
    report = json.loads((bundle.path / "report.json").read_text())
    keep = report["fp16"]["kept_fp32"]
    raw = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True, node_block_list=keep)
    found = len(_round_trips(raw.graph))
    assert found >= 10  # the converter's own output: one per edge into the front end
    assert report["fp16"]["fp16_round_trips_removed"] == found

    model = onnx.load(str(fp16_path))
    onnx.checker.check_model(model, full_check=True)
    assert _round_trips(model.graph) == []

    golden = np.load(bundle.path / "golden.npz")
    inputs = {k[len("input."):]: v for k, v in golden.items() if k.startswith("input.")}
    reference = {k[len("output."):]: v for k, v in golden.items() if k.startswith("output.")}
    for row in verify_fp16(fp16_path, inputs, reference):  # raises beyond the FP16 tolerance
        assert row.max_abs <= FP16_MAX_ABS_OF_RANGE * np.ptp(reference[row.name])

    # The front end's log power is the FP32 model's, bit for bit, on loud tones and on near-silence.
    t = np.arange(32000, dtype=np.float32) / 16000
    audio = np.stack([np.sin(2 * np.pi * 1000 * t), 0.9 * np.sin(2 * np.pi * 3000 * t),
                      1e-6 * np.sin(2 * np.pi * 300 * t)]).astype(np.float32)
    feed = {"image": inputs["image"][:3], "audio": audio}
    want = _node_output(fp32_path, "/audio_encoder/frontend/Log", feed)
    assert np.isfinite(want).all()
    before = _node_output(raw, "/audio_encoder/frontend/Log", feed)
    assert np.abs(before - want).max() > 1  # a pure tone's quiet bands flushed to 0 on FP16 edges: log(eps)
    np.testing.assert_array_equal(_node_output(fp16_path, "/audio_encoder/frontend/Log", feed), want)
