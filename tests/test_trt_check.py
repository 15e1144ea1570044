"""The static TensorRT check: each rule on a model that breaks only it, the fixed models clean, the
operator tables generated (and regenerated from the onnx-tensorrt mirror where there is one), and
``voxedge check-trt``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convert.trt_check import TABLE_DIR, load_table, table_versions, tensorrt_warnings
from convert.trt_ops_table import TableFormatError, dumps, parse_operators_md
from convert.trt_ops_table import main as table_main
from edge.cli import main

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path("/work/.mirror/onnx+onnx-tensorrt/repo")
F, I8, U8, I64 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT64


def _t(name: str, elem: int, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name: str, value, dtype) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _dq_weight(axis: int, shape=(4, 3, 1, 1), n_scales: int = 4):
    """A per-channel int8 weight behind DequantizeLinear, as our quantizer writes it."""
    return ([helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["w_dq"], name="w_dq", axis=axis)],
            [_init("w", np.ones(shape), np.int8), _init("w_s", np.full(n_scales, 0.01), np.float32),
             _init("w_z", np.zeros(n_scales), np.int8)])


def _conv(axis: int = 0, n_scales: int = 4):
    dq, inits = _dq_weight(axis, n_scales=n_scales)
    return _model(dq + [helper.make_node("Conv", ["x", "w_dq"], ["y"], name="conv")],
                  [_t("x", F, ["batch", 3, 8, 8])], [_t("y", F, None)], inits)


def _unary(op: str, elem: int = F, shape=("batch", 4), opset: int = 17, **attrs):
    return _model([helper.make_node(op, ["x"], ["y"], name="n", **attrs)], [_t("x", elem, list(shape))],
                  [_t("y", elem, None)], opset=opset)


def _reduce_sum(axes_constant: bool):
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum")]
    inputs, inits = [_t("x", F, ["batch", 4])], [_init("axes", [1], np.int64)]
    if not axes_constant:
        nodes.insert(0, helper.make_node("Abs", ["k"], ["axes"], name="abs"))
        inputs, inits = [*inputs, _t("k", I64, [1])], []
    return _model(nodes, inputs, [_t("y", F, None)], inits)


def _unsqueeze(axes_constant: bool):
    axes = helper.make_node("Constant", [], ["axes"], name="axes", value=_init("v", [1], np.int64))
    nodes = [axes] if axes_constant else []
    inputs = [_t("x", F, ["batch", 4])] + ([] if axes_constant else [_t("axes", I64, [1])])
    return _model(nodes + [helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsq")], inputs,
                  [_t("y", F, None)])


def _resize(opset: int = 17, **attrs):
    scales = _init("scales", [1, 1, 2, 2], np.float32)
    return _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)],
                  [_t("x", F, ["batch", 3, 8, 8])], [_t("y", F, None)], [scales], opset=opset)


def _topk(k=None, k_value: int = 2, **attrs):
    inputs, inits = [_t("x", F, ["batch", 5000])], [_init("k", [k_value], np.int64)]
    if k == "tensor":
        inputs, inits = [*inputs, _t("k", I64, [1])], []
    return _model([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top", **attrs)], inputs,
                  [_t("v", F, None), _t("i", I64, None)], inits)


def _quantize(zero_dtype=np.int8, zero: int = 0, scale: float = 0.1):
    out = U8 if zero_dtype == np.uint8 else I8
    return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q")],
                  [_t("x", F, ["batch", 4])], [_t("q", out, None)],
                  [_init("s", scale, np.float32), _init("z", zero, zero_dtype)])


def _matmul_weight(op: str, axis: int, **attrs):
    dq, inits = _dq_weight(axis, shape=(4, 6), n_scales=(4, 6)[axis])
    ins = ["x", "w_dq"] if op == "MatMul" else ["x", "w_dq", ""]
    shape = ["batch", 6] if attrs.get("transB") else ["batch", 4]
    return _model(dq + [helper.make_node(op, ins, ["y"], name="mm", **attrs)], [_t("x", F, shape)],
                  [_t("y", F, None)], inits)


def _einsum(equation: str, shapes):
    inputs = [_t(f"x{i}", F, list(s)) for i, s in enumerate(shapes)]
    node = helper.make_node("Einsum", [v.name for v in inputs], ["y"], name="ein", equation=equation)
    return _model([node], inputs, [_t("y", F, None)])


def _conv_transpose(weight_computed: bool):
    nodes = [helper.make_node("ConvTranspose", ["x", "w2" if weight_computed else "w"], ["y"], name="up")]
    if weight_computed:
        nodes.insert(0, helper.make_node("Mul", ["w", "gain"], ["w2"], name="gain"))
    return _model(nodes, [_t("x", F, ["batch", 3, 8, 8]), _t("gain", F, [1])], [_t("y", F, None)],
                  [_init("w", np.ones((3, 2, 2, 2)), np.float32)])


def _uint8_cast_chain():
    return _model([helper.make_node("Cast", ["x"], ["x8"], name="to_u8", to=U8),
                   helper.make_node("Cast", ["x8"], ["y"], name="to_f", to=F)],
                  [_t("x", F, ["batch", 4])], [_t("y", F, None)])


# (model, TensorRT version, the one finding it must give)
BROKEN = {
    "unsupported op": (
        _unary("Unique", shape=(4,)), "10.3",
        "node n (Unique): TensorRT's ONNX parser has no Unique operator (trt-10.1: Supported: N)"),
    "op not in the table": (
        _model([helper.make_node("CastLike", ["x", "x"], ["y"], name="n")], [_t("x", F, ["batch", 4])],
               [_t("y", F, None)], opset=15), "8.6",
        "node n (CastLike): TensorRT's ONNX parser has no CastLike operator (trt-8.6: not in the table)"),
    "plugin domain": (
        _model([helper.make_node("Inverse", ["x"], ["y"], name="inv", domain="com.microsoft")],
               [_t("x", F, ["batch", 3, 3])], [_t("y", F, None)]), "10.3",
        "node inv (Inverse): operator domain 'com.microsoft' needs a TensorRT plugin"),
    "opset too new": (
        _unary("Relu", opset=21), "10.3", "opset 21 is outside what TensorRT 10.3 parses (9..20, trt-10.1)"),
    "opset too new for 8.6": (
        _unary("Relu", opset=18), "8.6", "opset 18 is outside what TensorRT 8.6 parses (up to 17, trt-8.6)"),
    "dynamic non-batch dim": (
        _unary("Relu", shape=("batch", "T")), "10.3",
        "input x: dimension 1 is dynamic ('T'); build-engine's optimization profile varies only axis 0 "
        "(the batch), so give it a fixed size"),
    "-1 non-batch dim": (
        _unary("Relu", shape=("batch", -1)), "10.3",
        "input x: dimension 1 is dynamic (-1); build-engine's optimization profile varies only axis 0 "
        "(the batch), so give it a fixed size"),
    "uint8 between nodes": (
        _uint8_cast_chain(), "10.3",
        "node to_u8 (Cast): output 'x8' is uint8, which TensorRT takes only as a network input or output; "
        "cast to float first"),
    "int64 where the table has no INT64": (
        _unary("Clip", elem=I64), "10.3",
        "node n (Clip): input 'x' is INT64, which trt-10.1 does not list for Clip (FP32, FP16, BF16)"),
    "axes computed": (
        _reduce_sum(axes_constant=False), "10.3",
        "node sum (ReduceSum): input 1 (axes) must be a constant (initializer) for TensorRT, and 'axes' is "
        "not (trt-10.1: \"`axes` must be an initializer\")"),
    "unsqueeze axes an input": (
        _unsqueeze(axes_constant=False), "10.3",
        "node unsq (Unsqueeze): input 1 (axes) must be a constant (initializer) for TensorRT, and 'axes' is "
        "not (trt-10.1: \"`axes` must be a constant\")"),
    "resize cubic": (
        _resize(mode="cubic"), "10.3",
        "node up (Resize): mode 'cubic' is not among TensorRT's supported resize modes (nearest, linear; "
        "trt-10.1)"),
    "resize coordinate mode": (
        _resize(mode="linear", coordinate_transformation_mode="half_pixel_symmetric", opset=19), "10.3",
        "node up (Resize): coordinate_transformation_mode 'half_pixel_symmetric' is not among TensorRT's "
        "supported resize transformation modes (half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
        "asymmetric, align_corners; trt-10.1)"),
    "resize antialias": (
        _resize(opset=18, mode="linear", antialias=1), "10.3",
        "node up (Resize): antialias=1, but trt-10.1 says antialiasing is not supported"),
    "topk unsorted": (
        _topk(sorted=0), "10.3", "node top (TopK): attribute sorted=0, but trt-10.1 says `sorted` must be 1"),
    "topk k too large": (
        _topk(k_value=4000), "10.3",
        "node top (TopK): input K=4000, but trt-10.1 says `K` must be less than 3840"),
    "scatter reduction": (
        _model([helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="sc", reduction="add")],
               [_t("x", F, [4]), _t("u", F, [1])], [_t("y", F, None)], [_init("i", [[1]], np.int64)]), "10.3",
        "node sc (ScatterND): attribute reduction is set, which trt-10.1 says is not supported"),
    "int8 zero point not 0": (
        _quantize(zero=3), "10.3",
        "node q (QuantizeLinear): zero point must be 0 for TensorRT (use symmetric quantization)"),
    "uint8 zero point": (
        _quantize(zero_dtype=np.uint8), "10.3",
        "node q (QuantizeLinear): zero point 'z' is uint8; TensorRT quantizes to int8 only (use int8 with "
        "zero point 0, symmetric quantization)"),
    "uint8 dequantize input": (
        _model([helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq")],
               [_t("x", U8, ["batch", 4])], [_t("y", F, None)], [_init("s", 0.1, np.float32)]), "10.3",
        "node dq (DequantizeLinear): input 'x' is UINT8, which trt-10.1 does not list for DequantizeLinear "
        "(INT8, FP8, INT4)"),
    "zero scale": (
        _quantize(scale=0.0), "10.3",
        "node q (QuantizeLinear): scale 's' has 1 value(s) that are not positive and finite (e.g. 0.0)"),
    "nan scale": (
        _quantize(scale=float("nan")), "10.3",
        "node q (QuantizeLinear): scale 's' has 1 value(s) that are not positive and finite (e.g. nan)"),
    "per-channel axis out of range": (
        _conv(axis=4), "10.3",
        "node w_dq (DequantizeLinear): per-channel axis 4 is out of range for the rank-4 input 'w'"),
    "per-channel count": (
        _conv(axis=0, n_scales=3), "10.3",
        "node w_dq (DequantizeLinear): 3 per-channel scales, but dimension 0 of 'w' is 4"),
    "conv weight axis": (
        _conv(axis=1, n_scales=3), "10.3",
        "node w_dq (DequantizeLinear): per-channel axis 1 of the weight of Conv conv should be 0, "
        "its output-channel axis"),
    "matmul weight axis": (
        _matmul_weight("MatMul", axis=0), "10.3",
        "node w_dq (DequantizeLinear): per-channel axis 0 of the weight of MatMul mm should be 1, "
        "its output-channel axis"),
    "gemm transB weight axis": (
        _matmul_weight("Gemm", axis=1, transB=1), "10.3",
        "node w_dq (DequantizeLinear): per-channel axis 1 of the weight of Gemm mm should be 0, "
        "its output-channel axis"),
    "einsum diagonal": (
        _einsum("ii->i", [(3, 3)]), "10.3",
        "node ein (Einsum): TensorRT's Einsum takes no diagonal (repeated index) ('ii->i')"),
    "einsum ellipsis on 8.6": (
        _einsum("...i->...i", [(2, 3)]), "8.6",
        "node ein (Einsum): TensorRT's Einsum takes no ellipsis ('...i->...i')"),
    "einsum broadcast on 8.6": (
        _einsum("ij,kj->ik", [(2, 1), (3, 4)]), "8.6",
        "node ein (Einsum): TensorRT's Einsum takes no broadcasting between inputs (index 'j': 1 vs 4; "
        "trt-8.6) ('ij,kj->ik')"),
}

# Models TensorRT 10 takes, among them the false positives of the old hand-typed list.
FIXED = {
    "conv transpose with a computed weight": _conv_transpose(weight_computed=True),
    "conv transpose with an initializer weight": _conv_transpose(weight_computed=False),
    "topk with a tensor K": _topk(k="tensor"),
    "conv weight behind DequantizeLinear, axis 0, zero point 0": _conv(axis=0),
    "matmul weight per column": _matmul_weight("MatMul", axis=1),
    "gemm transB weight per row": _matmul_weight("Gemm", axis=0, transB=1),
    "quantize int8 zero point 0": _quantize(),
    "axes an initializer": _reduce_sum(axes_constant=True),
    "unsqueeze axes from a Constant node": _unsqueeze(axes_constant=True),
    "resize linear half_pixel": _resize(mode="linear", coordinate_transformation_mode="half_pixel"),
    "resize nearest default modes": _resize(),
    "int64 neg (native in TensorRT 10)": _unary("Neg", elem=I64),
    "double cast (the parser narrows DOUBLE)": _unary("Cast", elem=TensorProto.DOUBLE, to=F),
    "uint8 input cast first": _unary("Cast", elem=U8, shape=("batch", 8, 8, 3), to=F),
    "einsum matmul": _einsum("ij,jk->ik", [(2, 3), (3, 4)]),
    "einsum ellipsis (the 10.x parser rewrites it)": _einsum("...i->...i", [(2, 3)]),
    "einsum across operands is no diagonal": _einsum("i,i->i", [(4,), (4,)]),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_broken_model_gives_exactly_its_finding(case):
    model, version, expected = BROKEN[case]
    assert tensorrt_warnings(model, trt_version=version) == [expected]


@pytest.mark.parametrize("case", FIXED)
def test_the_fixed_models_give_no_finding(case):
    assert tensorrt_warnings(FIXED[case]) == []


def test_the_version_switch_changes_what_is_allowed():
    broadcast = _einsum("ij,kj->ik", [(2, 1), (3, 4)])
    assert tensorrt_warnings(broadcast, trt_version="10.3") == []
    assert len(tensorrt_warnings(broadcast, trt_version="8.6")) == 1
    # TensorRT 8.x narrows INT64 to INT32 (its table's note), so an int64 Neg checks as INT32: listed.
    assert tensorrt_warnings(_unary("Neg", elem=I64), trt_version="8.6") == []
    assert load_table("10.3").name == "trt-10.1" and load_table("10.1").name == "trt-10.1"
    assert load_table("9.3").name == "trt-8.6" and load_table("8.6.1").name == "trt-8.6"


COMMITTED_MODELS = ("edge/int8_probe.onnx", "reference_model/pretrained/speech_embedding.onnx")


@pytest.mark.parametrize("path", COMMITTED_MODELS)
def test_the_committed_models_pass(path):
    assert tensorrt_warnings(onnx.load(str(ROOT / path))) == []


@pytest.fixture(scope="module")
def reference_onnx(tmp_path_factory):
    """The reference model exported as ``voxedge convert`` exports it (no verification: ~1 min)."""
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.config import REFERENCE_CONFIG, ConvertConfig
    from convert.export import export_onnx, golden_inputs, load_model

    config = ConvertConfig.from_file(REFERENCE_CONFIG)
    model, _ = load_model(DEFAULT_CHECKPOINT, config.factory)
    path = tmp_path_factory.mktemp("ref") / "model.fp32.onnx"
    export_onnx(model, config.inputs, config.outputs, path, golden_inputs(config.inputs, batch=2))
    return path


@pytest.mark.slow
def test_the_reference_model_passes_and_the_cli_says_so(reference_onnx, capsys):
    assert tensorrt_warnings(onnx.load(str(reference_onnx))) == []
    assert main(["check-trt", str(reference_onnx)]) == 0
    expected = f"{reference_onnx}: no findings (TensorRT 10.3, table trt-10.1 from "
    assert capsys.readouterr().out.startswith(expected)


# --- the tables ------------------------------------------------------------------------------------------

SNIPPET = """# Supported ONNX Operators

TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20. More details below.

TensorRT supports the following ONNX data types: DOUBLE, FLOAT32, FLOAT16, INT64, UINT8, and BOOL

> Note: There is limited support for DOUBLE type. TensorRT will attempt to cast DOUBLE down to FLOAT.

| Operator | Supported  | Supported Types | Restrictions |
|----------|------------|-----------------|--------------|
| Abs      | Y          | FP32, FP16, INT32, INT64 |
| BitShift | N          |
| ConstantOfShape | Y   | FP32, INF64, BOOL, |
| CumSum   | Y          | FP32 | `axis` must be an initializer                 |
| NonZero  | Y          | FP32, FP16
"""


def test_the_generator_parses_a_table_snippet():
    table = parse_operators_md(SNIPPET, "10.0", "snippet")
    assert table["tensorrt"] == "10.0" and table["source"] == "snippet" and table["opset_range"] == [9, 20]
    assert table["data_types_note"].startswith("TensorRT supports the following ONNX data types: DOUBLE")
    assert table["casts_down"] == {"DOUBLE": "FP32"}
    assert table["ops"] == {
        "Abs": {"supported": True, "types": ["FP32", "FP16", "INT32", "INT64"], "restrictions": ""},
        "BitShift": {"supported": False, "types": [], "restrictions": ""},
        "ConstantOfShape": {"supported": True, "types": ["FP32", "INT64", "BOOL"], "restrictions": ""},
        "CumSum": {"supported": True, "types": ["FP32"], "restrictions": "`axis` must be an initializer"},
        "NonZero": {"supported": True, "types": ["FP32", "FP16"], "restrictions": ""},
    }
    older = SNIPPET.replace("in the inclusive range of opset 9 to opset 20", "up to Opset 17")
    assert parse_operators_md(older, "8.6", "snippet")["opset_range"] == [None, 17]
    with pytest.raises(TableFormatError, match="opset"):
        parse_operators_md("| Operator | Supported |\n|--|--|\n| Abs | Y |\n", "1", "x")


def test_the_generator_command_writes_the_json(tmp_path, capsys):
    md, out = tmp_path / "operators.md", tmp_path / "trt_ops" / "trt-10.0.json"
    md.write_text(SNIPPET)
    assert table_main([str(md), "--version", "10.0", "--source", "snippet", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == parse_operators_md(SNIPPET, "10.0", "snippet")
    assert out.read_text() == dumps(parse_operators_md(SNIPPET, "10.0", "snippet"))
    assert "5 operators (4 supported), opsets [9, 20]" in capsys.readouterr().out
    missing = str(tmp_path / "missing.md")
    assert table_main([missing, "--version", "1", "--source", "x", "--out", str(out)]) == 2


def test_the_committed_tables_include_the_10_1_and_8_6_releases():
    assert {"8.6", "10.1"} <= set(table_versions())
    for version in table_versions():
        table = json.loads((TABLE_DIR / f"trt-{version}.json").read_text())
        assert table["tensorrt"] == version and table["source"].startswith("onnx/onnx-tensorrt@")
        assert table["ops"]["Conv"]["supported"] and not table["ops"]["Unique"]["supported"]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(MIRROR), *args], capture_output=True, text=True)


@pytest.mark.skipif(not MIRROR.is_dir(), reason="no local mirror of onnx/onnx-tensorrt")
@pytest.mark.parametrize("version", table_versions())
def test_the_committed_tables_are_what_the_generator_makes_from_the_mirror(version):
    committed = (TABLE_DIR / f"trt-{version}.json").read_text()
    source = json.loads(committed)["source"]
    commit = source.split("@")[1].split()[0]
    markdown = _git("show", f"{commit}:docs/operators.md")
    if markdown.returncode != 0:
        pytest.skip(f"the mirror lacks {commit}")
    assert dumps(parse_operators_md(markdown.stdout, version, source)) == committed
    branch = _git("rev-parse", f"{version}-GA")
    if branch.returncode == 0:  # the table is the release branch's
        assert branch.stdout.strip() == commit


# --- voxedge check-trt -----------------------------------------------------------------------------------

def test_check_trt_exit_codes(tmp_path, capsys):
    good, bad, text = tmp_path / "good.onnx", tmp_path / "bad.onnx", tmp_path / "notes.onnx"
    onnx.save(FIXED["conv weight behind DequantizeLinear, axis 0, zero point 0"], str(good))
    onnx.save(BROKEN["topk unsorted"][0], str(bad))
    text.write_text("not a model\n")

    assert main(["check-trt", str(good)]) == 0
    out = capsys.readouterr().out
    assert out == (f"{good}: no findings (TensorRT 10.3, table trt-10.1 from onnx/onnx-tensorrt@"
                   "96e781103cfc4adf4a6bb557e94bac8e693f6f4c docs/operators.md)\n")

    assert main(["check-trt", str(good), str(bad), "--trt-version", "10.3"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"{bad}: 1 finding (TensorRT 10.3, table trt-10.1 ")
    assert lines[2] == f"{bad}: node top (TopK): attribute sorted=0, but trt-10.1 says `sorted` must be 1"

    assert main(["check-trt", str(good), "--trt-version", "8.6"]) == 0
    assert "(TensorRT 8.6, table trt-8.6 from onnx/onnx-tensorrt@ee0b139" in capsys.readouterr().out

    for args, message in (([str(tmp_path / "missing.onnx")], "missing.onnx: no such file"),
                          ([str(text)], "notes.onnx: not an ONNX model"),
                          ([str(tmp_path)], "is a directory"),
                          ([str(good), "--trt-version", "7.1"],
                           "no operator table for TensorRT 7.1 or older"),
                          ([str(good), "--trt-version", "ten"], "'ten' is not a version")):
        assert main(["check-trt", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("voxedge check-trt: error: ") and message in err and len(err.splitlines()) == 1


def test_check_trt_does_not_import_onnx_to_build_the_parser():
    code = ("import sys; from edge.cli import build_parser; build_parser(); "
            "print(any(m == 'onnx' or m.startswith('onnx.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out.strip() == "False"
