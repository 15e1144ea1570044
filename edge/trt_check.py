"""What TensorRT 10's ONNX parser will refuse on the robot, checked on any machine.

TensorRT cannot run on the workstation, so ``voxedge convert`` checks the
graph statically against the parser's documented limits (ONNX-TensorRT
``docs/operators.md`` for TensorRT 10.x) and says which node would fail and
why, long before ``voxedge build-engine`` runs on a Jetson. The check warns and
never blocks: ONNX Runtime still runs a model TensorRT cannot. The caller
loads the model (``onnx`` is a workstation package).
"""

from __future__ import annotations

import re

# TensorRT 10.3 (JetPack 6.1) parses ONNX opsets 9..20.
MIN_OPSET, MAX_OPSET = 9, 20
# Operators the TensorRT 10 ONNX parser has no importer for (sequence, string,
# integer-arithmetic and training ops, and the spectral ops: TensorRT has no DFT).
UNSUPPORTED_OPS = frozenset({
    "BitShift", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "Det", "DFT", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SoftmaxCrossEntropyLoss", "SplitToSequence", "STFT", "StringConcat",
    "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})
# Inputs that must be constants (initializers, possibly behind a DequantizeLinear).
CONSTANT_INPUTS = {"ConvTranspose": (1,), "CumSum": (1,), "TopK": (1,)}


def tensorrt_warnings(model) -> list[str]:
    """What in ``model`` the TensorRT 10.x ONNX parser is documented to reject; empty if nothing."""
    from onnx import numpy_helper

    out = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        out.append(f"opset {opset} is outside what TensorRT 10.3 parses ({MIN_OPSET}..{MAX_OPSET})")
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def constant(name: str) -> bool:
        node = producer.get(name)
        if name in inits or (node is not None and node.op_type == "Constant"):
            return True
        return node is not None and node.op_type == "DequantizeLinear" and constant(node.input[0])

    for node in model.graph.node:
        where = f"node {node.name or '(unnamed)'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            out.append(f"{where}: operator domain {node.domain!r} needs a TensorRT plugin")
        elif node.op_type in UNSUPPORTED_OPS:
            out.append(f"{where}: TensorRT's ONNX parser has no {node.op_type} operator")
        for index in CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and not constant(node.input[index]):
                out.append(f"{where}: input {index} must be a constant (initializer) for TensorRT")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = inits.get(node.input[2])
            if zp is not None and numpy_helper.to_array(zp).any():
                out.append(f"{where}: zero point must be 0 for TensorRT (use symmetric quantization)")
        if node.op_type == "Einsum":
            equation = next((a.s.decode() for a in node.attribute if a.name == "equation"), "")
            terms = re.split(r",|->", equation.replace(" ", ""))
            if "..." in equation:
                out.append(f"{where}: TensorRT's Einsum takes no ellipsis ({equation!r})")
            elif any(len(set(t)) != len(t) for t in terms[:-1]):
                out.append(f"{where}: TensorRT's Einsum takes no diagonal (repeated index) ({equation!r})")
    return out
