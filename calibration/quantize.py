"""INT8 post-training quantization to explicit Q/DQ ONNX with ONNX Runtime's ``quantize_static``.

Q/DQ (QuantizeLinear/DequantizeLinear pairs around each quantized op) is the
only INT8 form TensorRT 10 and 11 both accept; TensorRT also requires zero
points of 0, hence signed int8, symmetric activations and weights, with
per-channel weight scales. Scales come from a calibration set: quantizing
without one is refused, never done with random or default scales. Nodes whose
name starts with one of ``keep_float_prefixes`` (by default the audio front end:
the DFT Conv1d, power, mel projection and log, whose dynamic range int8 cannot
hold) stay in floating point.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from edge.int8_numerics import SATURATION_FREE_WEIGHT_MAX_ABS

# The log-mel front end and the per-utterance level normalisation that follows it.
DEFAULT_KEEP_FLOAT_PREFIXES = ("/audio_encoder/frontend/", "/audio_encoder/Sub")
QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")  # where int8 pays off; the rest stays float
QUANTIZERS = ("onnxruntime", "modelopt")
NO_SAMPLES = "no calibration samples were given; quantizing needs a calibration set (scales are never guessed)"
MODELOPT_CALIBRATION_BATCH = 16  # per calibration step; ModelOpt would otherwise calibrate at batch 1


@dataclass(frozen=True)
class QuantSettings:
    """What to keep in floating point; from the conversion config's ``quantization`` table, kept in the manifest."""

    keep_float_prefixes: tuple[str, ...] = DEFAULT_KEEP_FLOAT_PREFIXES
    keep_output_layers_float: bool = True
    quantizer: str = "onnxruntime"  # or "modelopt"

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise CalibrationError(f"unknown quantizer {self.quantizer!r}; choose one of {list(QUANTIZERS)}")
        if isinstance(self.keep_float_prefixes, str) or not all(isinstance(p, str) for p in self.keep_float_prefixes):
            raise CalibrationError(f"keep_float must be a list of node-name prefixes, got {self.keep_float_prefixes!r}")
        object.__setattr__(self, "keep_float_prefixes", tuple(self.keep_float_prefixes))

    @classmethod
    def from_dict(cls, data: dict) -> QuantSettings:
        unknown = set(data) - {"keep_float_prefixes", "keep_output_layers_float", "quantizer"}
        if unknown:
            raise CalibrationError(f"quantization settings: unknown keys {sorted(unknown)}; known are "
                                   "keep_float_prefixes, keep_output_layers_float, quantizer")
        return cls(**data)

    def to_dict(self) -> dict:
        return {"keep_float_prefixes": list(self.keep_float_prefixes),
                "keep_output_layers_float": self.keep_output_layers_float, "quantizer": self.quantizer}

    def quantize_kwargs(self) -> dict:
        return {"keep_float_prefixes": self.keep_float_prefixes,
                "keep_output_layers_float": self.keep_output_layers_float, "quantizer": self.quantizer}


class _Reader:
    """Adapts an iterable of input dicts to ONNX Runtime's CalibrationDataReader protocol."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]], input_names: list[str]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)
        self._names = input_names
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        missing = [n for n in self._names if n not in batch]
        if missing:
            raise CalibrationError(f"calibration batch lacks model inputs {missing}; it has {sorted(batch)} (the "
                                   "bundle's manifest must name the ONNX model's inputs)")
        self.count += len(next(iter(batch.values())))
        return {n: batch[n] for n in self._names}


def output_layers(model) -> list[str]:
    """Names of the quantizable layers (Conv, Gemm, MatMul) whose results reach a model output
    without passing through another quantizable layer: the model's heads."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found, seen = [], set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in QUANTIZED_OP_TYPES:
            found.append(node.name)
        elif node.op_type not in ("Shape", "Size"):  # a tensor's shape carries none of its values
            stack.extend(node.input)
    return sorted(found)


def quantizable_nodes(model, summary: dict) -> list[str]:
    """The quantizable layers of ``model`` that a quantization with ``summary`` left in int8."""
    kept = set(summary.get("kept_float", ()))
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in kept]


def dedicate_qdq_pairs(model) -> int:
    """Give every consumer of a shared DequantizeLinear its own Q/DQ pair, in place; returns pairs added.

    ``quantize_static`` lets one Q -> DQ feed several nodes (a residual input
    read by a convolution and an Add). ONNX Runtime fuses DQ -> Conv -> Q into
    QLinearConv only where each DQ has one consumer, and converts int8
    activations to the uint8 its x86 kernels use only for single Q -> DQ pairs,
    so shared pairs leave convolutions in float. The copies are identical
    (same scale, zero point 0): TensorRT reads them exactly as before.
    """
    from onnx import helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    nodes, added = [], 0
    for node in graph.node:
        nodes.append(node)
        readers = consumers.get(node.output[0], []) if node.op_type == "DequantizeLinear" else []
        if len(readers) < 2 or node.output[0] in graph_outputs:
            continue
        q = producer.get(node.input[0])
        own_q = q is not None and q.op_type == "QuantizeLinear" and len(consumers[q.output[0]]) == 1
        for k, reader in enumerate(readers[1:], start=1):
            source = node.input[0]
            if own_q:
                source = f"{q.output[0]}__{k}"
                copy_q = helper.make_node("QuantizeLinear", list(q.input), [source], name=f"{q.name}__{k}")
                copy_q.attribute.extend(q.attribute)
                nodes.append(copy_q)
            out = f"{node.output[0]}__{k}"
            copy_dq = helper.make_node("DequantizeLinear", [source, *node.input[1:]], [out], name=f"{node.name}__{k}")
            copy_dq.attribute.extend(node.attribute)
            nodes.append(copy_dq)
            for j, name in enumerate(reader.input):
                if name == node.output[0]:
                    reader.input[j] = out
            added += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return added


def weight_max_abs(model) -> int:
    """The largest |value| of the int8 weights the model's DequantizeLinear nodes read (0 if none)."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    largest = 0
    for node in model.graph.node:
        init = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if init is not None and init.data_type == TensorProto.INT8:
            values = numpy_helper.to_array(init)
            if values.size:
                largest = max(largest, int(np.abs(values.astype(np.int16)).max()))
    return largest


def quantize_int8(fp32_path: str | Path, out_path: str | Path, batches: Iterable[dict[str, np.ndarray]],
                  keep_float_prefixes: tuple[str, ...] = DEFAULT_KEEP_FLOAT_PREFIXES,
                  keep_float_nodes: tuple[str, ...] = (), keep_output_layers_float: bool = True,
                  quantizer: str = "onnxruntime", reduced_range_weights: bool = False) -> dict:
    """Write an INT8 Q/DQ model calibrated on ``batches``; returns a summary (samples, nodes kept float).

    Nodes kept in floating point: those named by ``keep_float_prefixes`` and
    ``keep_float_nodes``, and with ``keep_output_layers_float`` the layers that
    produce the model's outputs (the heads: tiny, and where rounding shows most).
    ``quantizer`` is ONNX Runtime's ``quantize_static`` (the default) or NVIDIA
    ModelOpt's ONNX PTQ (the ``modelopt`` extra), which places Q/DQ by
    TensorRT's own fusion rules. ``reduced_range_weights`` quantizes weights to
    7 bits ([-64, 64]) so that no CPU's int8 kernels can saturate
    (``edge.int8_numerics``); it needs the onnxruntime quantizer.

    Raises:
        CalibrationError: no calibration samples, batches that do not fit the model, or an unknown quantizer.
    """
    import onnx

    if quantizer not in QUANTIZERS:
        raise CalibrationError(f"unknown quantizer {quantizer!r}; choose one of {list(QUANTIZERS)}")
    if reduced_range_weights and quantizer != "onnxruntime":
        raise CalibrationError("7-bit weights (the CPU INT8 model) are made by the onnxruntime quantizer only")
    model = onnx.load(str(fp32_path))
    input_names = [i.name for i in model.graph.input]
    keep = {n.name for n in model.graph.node if n.name.startswith(tuple(keep_float_prefixes))} | set(keep_float_nodes)
    if keep_output_layers_float:
        keep |= set(output_layers(model))
    keep = sorted(keep)
    reader = _Reader(batches, input_names)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "int8.onnx"
        if quantizer == "onnxruntime":
            details = _quantize_onnxruntime(Path(fp32_path), staged, reader, keep, Path(tmp), reduced_range_weights)
        else:
            details = _quantize_modelopt(Path(fp32_path), staged, reader, keep)
        quantized = onnx.load(str(staged))
        n_pairs = dedicate_qdq_pairs(quantized)
        largest = weight_max_abs(quantized)
        if reduced_range_weights and largest > SATURATION_FREE_WEIGHT_MAX_ABS:
            raise CalibrationError(f"the quantizer wrote int8 weights up to {largest}, beyond the 7-bit range "
                                   f"(|w| <= {SATURATION_FREE_WEIGHT_MAX_ABS}) asked for")
        onnx.save(quantized, str(staged))
        Path(out_path).write_bytes(staged.read_bytes())
    weights = "int8 symmetric per-channel, " + ("7-bit range [-64, 64]" if reduced_range_weights else "full range")
    return {"calibration_samples": reader.count, "kept_float": keep, "dedicated_qdq_pairs": n_pairs,
            "format": "QDQ", "activations": "int8 symmetric", "weights": weights, "weight_max_abs": largest,
            "biases": "float", **details}


def _quantize_onnxruntime(fp32_path: Path, staged: Path, reader: _Reader, keep: list[str], tmp: Path,
                          reduced_range_weights: bool = False) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    # Shape inference and constant folding first, as ONNX Runtime recommends.
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(pre), str(staged), reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduced_range_weights,  # weights only: activations keep their calibrated int8 range
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            nodes_to_exclude=keep,
            calibrate_method=CalibrationMethod.MinMax,
            # Biases stay float: TensorRT fuses them itself and takes no int32 Q/DQ.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "DedicatedQDQPair": True},
        )
    except CalibrationError:
        raise
    except Exception as exc:
        if reader.count == 0:
            raise CalibrationError(NO_SAMPLES) from exc
        raise CalibrationError(f"ONNX Runtime quantization failed: {exc}") from exc
    if reader.count == 0:
        raise CalibrationError(NO_SAMPLES)
    import onnxruntime

    return {"method": "onnxruntime.quantize_static (MinMax)", "quantizer_version": onnxruntime.__version__}


def _quantize_modelopt(fp32_path: Path, staged: Path, reader: _Reader, keep: list[str]) -> dict:
    """NVIDIA ModelOpt ONNX PTQ, calibrated on the CPU execution provider (no GPU needed)."""
    import re

    try:
        import modelopt
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise CalibrationError("the modelopt quantizer needs NVIDIA ModelOpt: pip install 'voxedge[modelopt]' "
                               "(it brings onnxruntime-gpu and cupy; use a separate environment), or use "
                               "--quantizer onnxruntime") from exc
    # ModelOpt takes the whole calibration set as arrays; 512 samples are ~100 MB.
    parts: dict[str, list[np.ndarray]] = {}
    while (batch := reader.get_next()) is not None:
        for name, value in batch.items():
            parts.setdefault(name, []).append(value)
    if reader.count == 0:
        raise CalibrationError(NO_SAMPLES)
    data = {name: np.concatenate(values) for name, values in parts.items()}
    step = min(MODELOPT_CALIBRATION_BATCH, reader.count)
    shapes = ",".join(f"{n}:{'x'.join(str(d) for d in (step, *v.shape[1:]))}" for n, v in data.items())
    try:
        quantize(onnx_path=str(fp32_path), quantize_mode="int8", calibration_data=data,
                 calibration_method="entropy", calibration_eps=["cpu"], calibration_shapes=shapes,
                 # anchored regexes (ModelOpt uses re.match): exactly these nodes
                 nodes_to_exclude=[re.escape(n) + "$" for n in keep],
                 high_precision_dtype="fp32", output_path=str(staged))
    except Exception as exc:
        raise CalibrationError(f"ModelOpt quantization failed: {exc}") from exc
    return {"method": "modelopt.onnx.quantization (entropy)", "quantizer_version": modelopt.__version__}
