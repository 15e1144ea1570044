"""What TensorRT's ONNX parser will refuse on the robot, checked on any machine.

TensorRT cannot run on the workstation, so ``voxedge convert`` (and ``voxedge
check-trt``) check the graph statically and say which node would fail and why,
long before ``voxedge build-engine`` runs on a Jetson. A finding stops ``convert``
and ``calibrate`` (``findings_error``) unless the user passes ``--allow-trt-findings``:
ONNX Runtime still runs a model TensorRT cannot. The caller loads the model
(``onnx`` is a workstation package, imported only inside the check).

What the parser takes comes from ONNX-TensorRT's own ``docs/operators.md``,
turned into ``convert/trt_ops/trt-X.json`` by ``convert.trt_ops_table`` (never typed by
hand): which operators exist, their supported input types, and the restriction
text, which the rules below parse where they act on it (inputs that must be
initializers, attributes that must take one value, Resize's mode lists). A
requested TensorRT version uses the newest table at or below it; TensorRT 10.3
(JetPack 6.1) uses the 10.1 GA table, the newest the project could obtain (see
``convert/trt_ops/README.md``). The few rules the table does not state cite what
they rely on. Only the top-level graph is checked (not If/Loop/Scan bodies).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

DEFAULT_TRT_VERSION = "10.3"  # JetPack 6.1, the robot's TensorRT
TABLE_DIR = Path(__file__).with_name("trt_ops")
DEFAULT_DOMAINS = ("", "ai.onnx")
UINT8 = 2  # onnx.TensorProto.UINT8
# ONNX element type names that the tables spell differently (the rest, INT64, BOOL, ..., are spelled alike).
TABLE_TYPE_NAMES = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "FLOAT8E4M3FN": "FP8"}
# The type rule reads each node's first input, except where that input is only a shape, a condition or a
# trip count and the table's types describe the data: skipped, or the input the types describe.
SHAPE_ONLY_INPUT = frozenset({"Shape", "Size", "ConstantOfShape", "EyeLike", "RandomNormalLike",
                              "RandomUniformLike", "If", "Loop", "Scan"})
TYPED_INPUT = {"Where": 1}
# Inputs that the hand-typed list this check replaced demanded as constants, but TensorRT 10's parser takes
# as tensors (onnx-tensorrt 10.1-GA onnxOpImporters.cpp calls convertToTensor on them): ConvTranspose's
# kernel (computed, or behind a DequantizeLinear) and TopK's K (set with ITopKLayer::setInput). Conv weights
# behind a DequantizeLinear are how every Q/DQ model is written. Never flagged, whatever a table's text says.
TENSOR_INPUTS_OK = {"ConvTranspose": {"W"}, "TopK": {"K"}, "Conv": {"W"}}
# Per-channel Q/DQ of a weight must run along the consumer's output-channel axis (the parser assumes
# "weight-quantization with dimensions KCRS (K is # output channels)", QuantDequantLinearHelper, 10.1-GA).
# For MatMul the weight's last axis; for Gemm 0 when transB=1, else 1.
WEIGHT_AXIS = {"Conv": lambda node, rank: 0, "ConvTranspose": lambda node, rank: 1,
               "MatMul": lambda node, rank: rank - 1,
               "Gemm": lambda node, rank: 0 if _attr(node, "transB", 0) else 1}
# Resize restriction lines ("Supported resize modes: `nearest`, `linear`.") and the attribute each governs,
# with the ONNX default used when the node does not set it.
RESIZE_LISTS = {"resize transformation modes": ("coordinate_transformation_mode", "half_pixel"),
                "resize modes": ("mode", "nearest"),
                "nearest modes": ("nearest_mode", "round_prefer_floor"),
                "aspect ratio policy": ("keep_aspect_ratio_policy", "stretch")}

_NAMES = r"((?:`\w+`(?:,\s*(?:and\s+)?|\s+and\s+)?)+)"
_MUST_BE_CONSTANT = re.compile(_NAMES + r"\s+must be (?:an initializer|initializers|a constant)")
_MUST_EQUAL = re.compile(r"`(\w+)`(?: attribute)? must be (-?\d+)\b")
_LESS_THAN = re.compile(r"`(\w+)` input must be less than (\d+)")
_UNSUPPORTED_ATTRS = re.compile(_NAMES + r"\s*(?:attributes?\s+)?(?:is|are)\s+(?:not supported|unsupported)")
_SUPPORTED_LIST = re.compile(r"Supported ([\w ]+?):\s*((?:`\w+`(?:,\s*(?:and\s+)?|\s+and\s+)?)+)")


class TrtCheckError(ValueError):
    """A check that cannot run: no table for the requested TensorRT version, or a file that is not ONNX."""


@dataclass(frozen=True)
class OpTable:
    """One TensorRT release's ONNX operator table (``convert/trt_ops/trt-X.json``)."""

    tensorrt: str
    source: str
    opset_range: tuple[int | None, int]
    casts_down: dict[str, str]
    ops: dict[str, dict]

    @property
    def name(self) -> str:
        return f"trt-{self.tensorrt}"

    def describe(self) -> str:
        return f"table {self.name} from {self.source}"


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split("."))
    except ValueError:
        raise TrtCheckError(f"TensorRT version {text!r} is not a version such as 10.3") from None


def table_versions() -> list[str]:
    """The TensorRT versions that have a committed table, oldest first."""
    found = [p.stem.removeprefix("trt-") for p in TABLE_DIR.glob("trt-*.json")]
    return sorted(found, key=_version)


@lru_cache(maxsize=None)
def load_table(trt_version: str = DEFAULT_TRT_VERSION) -> OpTable:
    """The newest committed table for a TensorRT version at or below ``trt_version``.

    Raises:
        TrtCheckError: ``trt_version`` is malformed or older than every table.
    """
    wanted = _version(trt_version)
    fitting = [v for v in table_versions() if _version(v) <= wanted]
    if not fitting:
        raise TrtCheckError(f"no operator table for TensorRT {trt_version} or older (tables: "
                            f"{', '.join(table_versions()) or 'none'}); "
                            "generate one with python -m convert.trt_ops_table")
    raw = json.loads((TABLE_DIR / f"trt-{fitting[-1]}.json").read_text(encoding="utf-8"))
    low, high = raw["opset_range"]
    return OpTable(raw["tensorrt"], raw["source"], (low, high), dict(raw.get("casts_down", {})), raw["ops"])


def _value(attribute):
    from onnx import helper

    value = helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


def _attr(node, name: str, default=None):
    return next((_value(a) for a in node.attribute if a.name == name), default)


def _names(text: str) -> list[str]:
    return re.findall(r"`(\w+)`", text)


def _inferred(model):
    """``model`` with ONNX shape inference's types and shapes; as it is where inference fails.

    Inference stops at a domain the model uses without importing it (a plugin op); importing those
    domains in a copy lets it pass over them and type the rest.
    """
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    imported = {o.domain for o in copy.opset_import}
    for domain in sorted({n.domain for n in copy.graph.node} - imported - set(DEFAULT_DOMAINS)):
        copy.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    try:
        return onnx.shape_inference.infer_shapes(copy)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return model


class _Graph:
    """The model with inferred types and shapes, and where each tensor comes from and goes."""

    def __init__(self, model) -> None:
        self.model = _inferred(model)
        graph = self.model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list[tuple[object, int]]] = {}
        for n in graph.node:
            for i, name in enumerate(n.input):
                self.consumers.setdefault(name, []).append((n, i))
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int | str | None]] = {}
        for v in (*graph.value_info, *graph.input, *graph.output):
            t = v.type.tensor_type
            self.types[v.name] = t.elem_type
            if t.HasField("shape"):
                self.shapes[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                       for d in t.shape.dim]
        for i in graph.initializer:
            self.types[i.name] = i.data_type
            self.shapes[i.name] = list(i.dims)

    def value(self, name: str):
        """The constant value of ``name`` (an initializer or a Constant node's output), else None."""
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            t = next((a.t for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(t) if t is not None else None
        return None

    def is_constant(self, name: str) -> bool:
        """An initializer or a Constant node's output, possibly behind DequantizeLinear or Identity."""
        if name in self.inits:
            return True
        node = self.producer.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        return node.op_type in ("DequantizeLinear", "Identity") and self.is_constant(node.input[0])

    def type_name(self, name: str) -> str | None:
        from onnx import TensorProto

        elem = self.types.get(name, 0)
        if not elem:
            return None
        onnx_name = TensorProto.DataType.Name(elem)
        return TABLE_TYPE_NAMES.get(onnx_name, onnx_name)

    def schema(self, node):
        from onnx import defs

        try:
            domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
            return defs.get_schema(node.op_type, self.opset or defs.onnx_opset_version(), domain)
        except defs.SchemaError:
            return None


# --- graph-level rules -----------------------------------------------------------------------------------

def _opset_rule(g: _Graph, table: OpTable, trt_version: str) -> Iterator[str]:
    low, high = table.opset_range
    if g.opset is not None and not ((low is None or g.opset >= low) and g.opset <= high):
        span = f"{low}..{high}" if low is not None else f"up to {high}"
        yield f"opset {g.opset} is outside what TensorRT {trt_version} parses ({span}, {table.name})"


def _dynamic_inputs(g: _Graph) -> Iterator[str]:
    """``voxedge build-engine`` makes optimization profiles for the batch (axis 0) only (edge/engine.py), so a
    dynamic dimension elsewhere on an input has no profile and the build stops."""
    for v in g.model.graph.input:
        if v.name in g.inits:
            continue
        for axis, dim in enumerate(g.shapes.get(v.name, [])[1:], start=1):
            if dim is None or isinstance(dim, str) or dim < 0:
                shown = "unknown size" if dim is None else repr(dim)
                yield (f"input {v.name}: dimension {axis} is dynamic ({shown}); build-engine's optimization "
                       "profile varies only axis 0 (the batch), so give it a fixed size")


def _uint8_intermediates(g: _Graph) -> Iterator[str]:
    """uint8 tensors between nodes: the parser takes uint8 only as a network input or output
    ("UINT8 is only supported as network input or output tensor types", the tables' data-type note;
    ``convert.graph.cast_inputs_first`` removes the usual cause, a layout op ahead of the Cast)."""
    graph = g.model.graph
    io = {v.name for v in (*graph.input, *graph.output)}
    for node in graph.node:
        for name in node.output:
            if name and name not in io and g.types.get(name) == UINT8:
                yield (f"node {node.name or '(unnamed)'} ({node.op_type}): output {name!r} is uint8, which "
                       "TensorRT takes only as a network input or output; cast to float first")


# --- node rules: each yields the text after "node NAME (OP): " --------------------------------------------

def _input_type(g: _Graph, node, row: dict, table: OpTable) -> Iterator[str]:
    """The typed input's element type must be among the table's Supported Types for the operator (types
    the parser narrows itself, DOUBLE to FP32 and on 8.x INT64 to INT32, count as their narrow type)."""
    index = TYPED_INPUT.get(node.op_type, 0)
    name = node.input[index] if len(node.input) > index else ""
    if not row["types"] or node.op_type in SHAPE_ONLY_INPUT or not name:
        return
    found = g.type_name(name)
    if found is None or found in row["types"] or table.casts_down.get(found) in row["types"]:
        return
    yield (f"input {name!r} is {found}, which {table.name} does not list for {node.op_type} "
           f"({', '.join(row['types'])})")


def _constant_inputs(g: _Graph, node, row: dict, table: OpTable) -> Iterator[str]:
    """Inputs the restriction text names as "must be an initializer" / "must be a constant" (tensor)."""
    schema = g.schema(node)
    if schema is None:
        return
    params = [p.name for p in schema.inputs]
    for m in _MUST_BE_CONSTANT.finditer(row["restrictions"]):
        for param in _names(m.group(1)):
            if param not in params or param in TENSOR_INPUTS_OK.get(node.op_type, ()):
                continue  # an attribute at this opset, or a name the table misspells (Dropout's `is_traning`)
            index = params.index(param)
            if index < len(node.input) and node.input[index] and not g.is_constant(node.input[index]):
                yield (f"input {index} ({param}) must be a constant (initializer) for TensorRT, and "
                       f"{node.input[index]!r} is not ({table.name}: \"{m.group(0)}\")")


def _attribute_values(g: _Graph, node, row: dict, table: OpTable) -> Iterator[str]:
    """Attributes the restriction text pins ("`sorted` must be 1", "`layout` attribute must be 0"),
    unsupported attributes ("`reduction` is not supported"), and inputs with a ceiling ("`K` input must
    be less than 3840")."""
    schema = g.schema(node)
    attrs = schema.attributes if schema is not None else {}
    text = row["restrictions"]

    def default(name: str):
        return _value(attrs[name].default_value) if attrs[name].default_value.type else None

    for name, want in _MUST_EQUAL.findall(text):
        if name in attrs:
            value = _attr(node, name, default(name))
            if value is not None and value != int(want):
                yield f"attribute {name}={value}, but {table.name} says `{name}` must be {want}"
    for m in _UNSUPPORTED_ATTRS.finditer(text):
        for name in _names(m.group(1)):
            set_value = _attr(node, name)
            if name in attrs and set_value is not None and set_value != default(name):
                yield f"attribute {name} is set, which {table.name} says is not supported"
    for name, limit in _LESS_THAN.findall(text):
        params = [p.name for p in schema.inputs] if schema is not None else []
        if name in params and params.index(name) < len(node.input):
            value = g.value(node.input[params.index(name)])
            if value is not None and value.size and int(value.max()) >= int(limit):
                yield (f"input {name}={int(value.max())}, but {table.name} says `{name}` must be less than "
                       f"{limit}")


def _resize(g: _Graph, node, row: dict, table: OpTable) -> Iterator[str]:
    """Resize modes within the lists the restriction text gives ("Supported resize modes: ...")."""
    if node.op_type != "Resize":
        return
    text = row["restrictions"]
    mode = _attr(node, "mode", "nearest")
    for m in _SUPPORTED_LIST.finditer(text):
        label = m.group(1).strip().lower()
        if label not in RESIZE_LISTS:
            continue
        attr, onnx_default = RESIZE_LISTS[label]
        if attr == "nearest_mode" and mode != "nearest":
            continue  # read only in nearest mode
        value, allowed = _attr(node, attr, onnx_default), _names(m.group(2))
        if value not in allowed:
            yield (f"{attr} {value!r} is not among TensorRT's supported {label} "
                   f"({', '.join(allowed)}; {table.name})")
    if "Antialiasing is not supported" in text and _attr(node, "antialias", 0):
        yield f"antialias=1, but {table.name} says antialiasing is not supported"


def _qdq(g: _Graph, node, row: dict, table: OpTable) -> Iterator[str]:
    """Q/DQ as the parser takes them (QuantDequantLinearHelper, onnx-tensorrt 10.1-GA): zero points all 0
    (the tables' "`y_zero_point` must be 0") and never uint8 for QuantizeLinear (``notInvalidType(...,
    {"UINT8"})``; DequantizeLinear's uint8 input is the type rule's), scales positive ("Scale coefficients
    must all be positive"; non-finite ones are refused here too: they poison every value they touch), and
    per-channel scales along a valid axis that, for a weight, is the consumer's output-channel axis."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
        return
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp is not None:
        if node.op_type == "QuantizeLinear" and g.types.get(zp) == UINT8:
            yield (f"zero point {zp!r} is uint8; TensorRT quantizes to int8 only "
                   "(use int8 with zero point 0, symmetric quantization)")
        value = g.value(zp)
        if value is not None and value.astype(float).any():
            yield "zero point must be 0 for TensorRT (use symmetric quantization)"
    scale = g.value(node.input[1])
    if scale is not None:
        bad = [float(s) for s in scale.astype(float).ravel() if not (math.isfinite(s) and s > 0)]
        if bad:
            yield (f"scale {node.input[1]!r} has {len(bad)} value(s) that are not positive and finite "
                   f"(e.g. {bad[0]})")
    if scale is None or scale.size <= 1 or scale.ndim != 1:
        return  # per-tensor (TensorRT ignores the axis), a computed scale, or block quantization
    x_shape = g.shapes.get(node.input[0])
    if x_shape is None:
        return
    rank, axis = len(x_shape), _attr(node, "axis", 1)
    if not -rank <= axis < rank:
        yield f"per-channel axis {axis} is out of range for the rank-{rank} input {node.input[0]!r}"
        return
    axis %= rank
    if isinstance(x_shape[axis], int) and x_shape[axis] > 0 and x_shape[axis] != scale.size:
        yield f"{scale.size} per-channel scales, but dimension {axis} of {node.input[0]!r} is {x_shape[axis]}"
    if node.op_type != "DequantizeLinear":
        return
    for consumer, index in g.consumers.get(node.output[0], []):
        expected = WEIGHT_AXIS.get(consumer.op_type)
        if index == 1 and expected is not None and axis != expected(consumer, rank):
            yield (f"per-channel axis {axis} of the weight of {consumer.op_type} "
                   f"{consumer.name or '(unnamed)'} should be {expected(consumer, rank)}, "
                   "its output-channel axis")


def _einsum(g: _Graph, node, row: dict, table: OpTable) -> Iterator[str]:
    """No repeated index within one operand (a diagonal): TensorRT's IEinsumLayer documents "TensorRT does
    not support ellipsis or diagonal operations"; the 9.x+ parser rewrites an ellipsis into letters
    (processEllipsisAndImplicitOutput, 10.1-GA importerUtils.cpp) but no diagonal. Ellipsis and
    broadcasting between inputs only where the table's text refuses them (8.x)."""
    if node.op_type != "Einsum":
        return
    equation = str(_attr(node, "equation", "")).replace(" ", "")
    operands = equation.split("->")[0].split(",")
    text = row["restrictions"]
    if "..." in equation and "Ellipsis" in text:
        yield f"TensorRT's Einsum takes no ellipsis ({equation!r})"
    elif any(len(set(t.replace("...", ""))) != len(t.replace("...", "")) for t in operands):
        yield f"TensorRT's Einsum takes no diagonal (repeated index) ({equation!r})"
    if "Broadcasting between inputs is not supported" in text and "..." not in equation:
        sizes: dict[str, set[int]] = {}
        for term, name in zip(operands, node.input):
            shape = g.shapes.get(name) or []
            for letter, dim in zip(term, shape if len(shape) == len(term) else []):
                if isinstance(dim, int) and dim > 0:
                    sizes.setdefault(letter, set()).add(dim)
        for letter, seen in sorted(sizes.items()):
            if len(seen) > 1:
                yield (f"TensorRT's Einsum takes no broadcasting between inputs (index {letter!r}: "
                       f"{' vs '.join(map(str, sorted(seen)))}; {table.name}) ({equation!r})")


NODE_RULES = (_input_type, _constant_inputs, _attribute_values, _resize, _qdq, _einsum)


def check(model, table: OpTable, trt_version: str = DEFAULT_TRT_VERSION) -> list[str]:
    """Every finding for ``model`` against ``table``, one line each; empty if TensorRT should parse it."""
    g = _Graph(model)
    out = [*_opset_rule(g, table, trt_version), *_dynamic_inputs(g), *_uint8_intermediates(g)]
    for node in g.model.graph.node:
        where = f"node {node.name or '(unnamed)'} ({node.op_type})"
        if node.domain not in DEFAULT_DOMAINS:
            out.append(f"{where}: operator domain {node.domain!r} needs a TensorRT plugin")
            continue
        row = table.ops.get(node.op_type)
        if row is None or not row["supported"]:
            why = "not in the table" if row is None else "Supported: N"
            out.append(f"{where}: TensorRT's ONNX parser has no {node.op_type} operator "
                       f"({table.name}: {why})")
            continue
        out.extend(f"{where}: {text}" for rule in NODE_RULES for text in rule(g, node, row, table))
    return out


def tensorrt_warnings(model, trt_version: str = DEFAULT_TRT_VERSION) -> list[str]:
    """What in ``model`` TensorRT ``trt_version``'s ONNX parser is documented to reject; empty if nothing."""
    return check(model, load_table(trt_version), trt_version)


def findings_error(findings: dict[str, list[str]]) -> str | None:
    """The message ``convert`` and ``calibrate`` stop with when a model of the bundle has findings
    (``{precision: findings}``); None when there are none."""
    lines = [f"  {precision} model: {finding}" for precision, found in findings.items() for finding in found]
    if not lines:
        return None
    return (f"TensorRT's ONNX parser would refuse this bundle's models, so the robot could not build an engine "
            f"({len(lines)} finding(s); `voxedge check-trt MODEL.onnx` checks any ONNX file):\n" + "\n".join(lines)
            + "\nchange the model (docs/own-model.md), or pass --allow-trt-findings to write the bundle anyway "
            "(ONNX Runtime still runs it)")
