"""Mixed precision: when INT8 fails the accuracy gate, keep the most sensitive layers in floating point.

Sensitivity of a layer is how far its INT8 output strays from its FP32 output
on calibration samples (relative mean squared error, both models run whole
with ONNX Runtime, so a layer's figure includes what it inherits from the
layers before it). The search keeps the 1, 2, 4, 8, ... most sensitive layers
in float, re-quantizes and re-gates, and stops at the first model that passes:
few float layers, so most of the INT8 speed stays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from calibration.gate import DEFAULT_LIMITS, GateLimits, GateResult, accuracy_gate
from calibration.quantize import quantizable_nodes, quantize_int8

SENSITIVITY_SAMPLES = 64  # calibration samples used to rank layers


@dataclass(frozen=True)
class SearchResult:
    gate: GateResult
    summary: dict  # quantize_int8's summary of the model that passed
    kept_float_for_accuracy: tuple[str, ...]
    tried: tuple[tuple[int, bool], ...]  # (layers kept float, passed) per attempt


def _with_outputs(path: str | Path, names: list[str]) -> bytes:
    """The model at ``path`` with the tensors ``names`` added as float outputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return model.SerializeToString()


def layer_sensitivity(fp32_path: str | Path, int8_path: str | Path, summary: dict,
                      batches: Iterable[dict[str, np.ndarray]], max_samples: int = SENSITIVITY_SAMPLES
                      ) -> list[tuple[str, float]]:
    """(layer name, relative MSE of its INT8 output against FP32), most sensitive first."""
    import onnx
    import onnxruntime as ort

    fp32 = onnx.load(str(fp32_path))
    layers = quantizable_nodes(fp32, summary)
    tensor = {n.name: n.output[0] for n in fp32.graph.node if n.name in layers}
    names = [tensor[n] for n in layers]
    # Plain sessions: the extra outputs only make sense on the unfused graph.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [ort.InferenceSession(_with_outputs(p, names), options, providers=["CPUExecutionProvider"])
                for p in (fp32_path, int8_path)]
    err = np.zeros(len(names))
    power = np.zeros(len(names))
    seen = 0
    for batch in batches:
        a, b = (s.run(names, batch) for s in sessions)
        for i, (x, y) in enumerate(zip(a, b)):
            err[i] += float(np.mean((x.astype(np.float64) - y) ** 2))
            power[i] += float(np.mean(x.astype(np.float64) ** 2))
        seen += len(next(iter(batch.values())))
        if seen >= max_samples:
            break
    if seen == 0:
        raise CalibrationError("no calibration samples to rank the layers' sensitivity with")
    rel = err / np.maximum(power, 1e-12)
    order = np.argsort(-rel)
    return [(layers[i], float(rel[i])) for i in order]


def search_mixed_precision(fp32_path: Path, out_path: Path, batches: Callable[[], Iterable[dict[str, np.ndarray]]],
                           eval_set, manifest, quant_kwargs: dict, failed: GateResult, failed_summary: dict,
                           limits: GateLimits = DEFAULT_LIMITS, log=print, emulate_qdq: bool = False
                           ) -> SearchResult:
    """Keep the most sensitive layers in float until the model at ``out_path`` passes the gate.

    ``batches`` returns a fresh iterable of calibration batches on every call: the
    model's own feeds (``calibration.sampleset.SampleSet.feeds``), keyed by its input names.
    ``emulate_qdq`` is the gate's arithmetic (``calibration.gate.score``).

    Raises:
        CalibrationError: no split of the layers passes (the message lists what was tried).
    """
    ranking = layer_sensitivity(fp32_path, out_path, failed_summary, batches())
    log("      most sensitive layers (relative error of their INT8 output): " +
        ", ".join(f"{n} {e:.2e}" for n, e in ranking[:5]))
    reference = failed.reference
    tried = []
    k = 1
    while True:
        k = min(k, len(ranking))
        keep = tuple(n for n, _ in ranking[:k])
        summary = quantize_int8(fp32_path, out_path, batches(), **{
            **quant_kwargs, "keep_float_nodes": tuple(quant_kwargs.get("keep_float_nodes", ())) + keep})
        gate = accuracy_gate(fp32_path, out_path, eval_set, manifest, limits, reference=reference,
                             emulate_qdq=emulate_qdq)
        tried.append((k, gate.passed))
        log(f"      {k} layer(s) kept float: {gate.describe()}")
        if gate.passed:
            return SearchResult(gate, summary, keep, tuple(tried))
        if k == len(ranking):
            break
        k *= 2
    raise CalibrationError(
        f"no mixed-precision model passes the accuracy gate: even with all {len(ranking)} quantized layers kept "
        f"in floating point, {gate.describe()}. The evaluation set may not match the FP32 model's own behaviour; "
        "keep the FP32 model")

