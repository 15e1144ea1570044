"""A bundle's INT8 models: calibrate Q/DQ models from the FP32 one, then gate each against FP32.

What the INT8 step of ``voxedge convert`` and ``voxedge calibrate`` runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationError
from calibration.gate import DEFAULT_LIMITS, GateLimits, ModelScore, accuracy_gate, pseudo_labelled, score
from calibration.mixed import search_mixed_precision
from calibration.quantize import QuantSettings, quantize_int8
from calibration.sampleset import GATE_RESOLVING_SAMPLES, SampleSet, read_set
from edge.bundle import Manifest, ModelFile
from edge.int8_numerics import ONNXRUNTIME_CPU, cpu_int8

INT8_ONNX = "model.int8.qdq.onnx"
INT8_CPU_ONNX = "model.int8.cpu.qdq.onnx"
CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class Int8Target:
    """One INT8 model of a bundle: which runtime it is for, its weights, and the arithmetic its gate runs."""

    key: str  # its entry in the manifest's provenance.calibration.models
    path: str
    runtime: str | None  # edge.bundle.ModelFile.runtime
    reduced_range_weights: bool
    emulate_qdq: bool  # gate with the Q/DQ arithmetic in float (TensorRT's), else with ONNX Runtime's int8 kernels
    purpose: str

    def numerics(self) -> dict:
        """The arithmetic the gate ran, with the CPU it ran on."""
        import onnxruntime

        cpu = cpu_int8()
        kind = ("Q/DQ emulated in float (ONNX Runtime CPU, session.disable_quant_qdq): TensorRT's int8 arithmetic, "
                "the same on every CPU" if self.emulate_qdq else
                "ONNX Runtime's int8 CPU kernels; 7-bit weights, so no CPU's sums saturate and the result holds "
                "on every CPU")
        return {"kind": kind, "emulate_qdq": self.emulate_qdq, "onnxruntime": onnxruntime.__version__,
                "cpu": cpu.to_dict(), "cpu_description": cpu.describe()}


TENSORRT_INT8 = Int8Target("tensorrt", INT8_ONNX, None, reduced_range_weights=False, emulate_qdq=True,
                           purpose="TensorRT and other int32-accumulating runtimes: full-range int8 weights")
CPU_INT8 = Int8Target(ONNXRUNTIME_CPU, INT8_CPU_ONNX, ONNXRUNTIME_CPU, reduced_range_weights=True,
                      emulate_qdq=False, purpose="ONNX Runtime's CPU kernels: 7-bit weights, no int16 saturation")
INT8_TARGETS = (TENSORRT_INT8, CPU_INT8)


def calibration_warnings(calib: SampleSet, manifest: Manifest) -> list[str]:
    """The coverage warnings of a calibration set, recomputed from its samples whatever wrote it
    (make-set, import-set or the robot's audit log): too few samples, an intent missing, clipped audio."""
    return calib.coverage(manifest.heads.intent_labels, purpose="calibration")["warnings"]


def make_int8(fp32_path: Path, out_path: Path, manifest: Manifest, calibration: str | Path,
              eval_set: str | Path | None, log=print, settings: QuantSettings | None = None,
              limits: GateLimits = DEFAULT_LIMITS, search: bool = True,
              target: Int8Target = TENSORRT_INT8) -> tuple[dict, dict]:
    """Write ``out_path`` (INT8 Q/DQ for ``target``) from ``fp32_path``; returns (calibration provenance,
    gate result). ``make_int8_models`` writes both of a bundle's INT8 models.

    If the INT8 model fails the accuracy gate and ``search`` is on, the most
    sensitive layers are kept in floating point until it passes
    (``calibration.mixed``); the layers kept are reported.

    Raises:
        CalibrationError: unusable sets, or no model that passes the accuracy gate.
    """
    calib, evaluation = _read_sets(fp32_path, manifest, calibration, eval_set, log)
    return _make_one(fp32_path, out_path, manifest, calib, evaluation, log, settings or QuantSettings(), limits,
                     search, target, reference=None)


def _read_sets(fp32_path: Path, manifest: Manifest, calibration, eval_set, log) -> tuple[SampleSet, SampleSet]:
    calib = read_set(calibration)
    for w in calibration_warnings(calib, manifest):
        log(f"      warning (calibration set): {w}")
    if eval_set is None:  # an unlabelled set (e.g. the robot's audit log): gate on agreement with FP32
        evaluation = pseudo_labelled(calib, fp32_path, manifest)
        log(f"      no evaluation set: gating on agreement with the FP32 model over {len(calib)} samples")
    else:
        evaluation = read_set(eval_set)
    if len(evaluation) < GATE_RESOLVING_SAMPLES:
        log(f"      WARNING: the accuracy gate runs on {len(evaluation)} samples: one sample is worth "
            f"{100 / len(evaluation):.2f} points, more than the gate's 0.5-point limit, so its verdict cannot "
            f"resolve it; use {GATE_RESOLVING_SAMPLES} or more labelled samples")
    return calib, evaluation


def _make_one(fp32_path: Path, out_path: Path, manifest: Manifest, calib: SampleSet, evaluation: SampleSet, log,
              settings: QuantSettings, limits: GateLimits, search: bool, target: Int8Target,
              reference: ModelScore | None) -> tuple[dict, dict]:
    def batches():  # the model's own inputs (names, layout, colour order), as the robot feeds it
        return calib.feeds(manifest, CALIBRATION_BATCH)

    if target.reduced_range_weights:  # ONNX Runtime's quantizer makes the model for ONNX Runtime's kernels
        settings = dataclasses.replace(settings, quantizer="onnxruntime")
    log(f"      {target.path} ({target.purpose}): calibrating on {len(calib)} samples of {calib.path}")
    quant_kwargs = {**settings.quantize_kwargs(), "reduced_range_weights": target.reduced_range_weights}
    summary = quantize_int8(fp32_path, out_path, batches(), **quant_kwargs)
    arithmetic = "Q/DQ emulated in float" if target.emulate_qdq else "ONNX Runtime's int8 kernels"
    log(f"      accuracy gate on {len(evaluation)} samples of {evaluation.path} ({arithmetic}, CPU)")
    gate = accuracy_gate(fp32_path, out_path, evaluation, manifest, limits, reference=reference,
                         emulate_qdq=target.emulate_qdq)
    log(f"      {gate.describe()}")
    kept_for_accuracy: tuple[str, ...] = ()
    if not gate.passed:
        if not search:
            raise CalibrationError(f"INT8 model rejected: {gate.describe()}. Use a larger or more representative "
                                   "calibration set, or keep the FP32 model")
        log("      searching for a mixed-precision model that passes")
        found = search_mixed_precision(fp32_path, out_path, batches, evaluation, manifest, quant_kwargs, gate,
                                       summary, limits, log, emulate_qdq=target.emulate_qdq)
        gate, summary, kept_for_accuracy = found.gate, found.summary, found.kept_float_for_accuracy
        log(f"      kept in floating point for accuracy: {', '.join(kept_for_accuracy)}")
    numerics = target.numerics()
    info = {"id": calib.meta.get("id"), "index_sha256": calib.meta.get("index_sha256"), "n_samples": len(calib),
            "quantizer": summary, "settings": settings.to_dict(), "kept_float_for_accuracy": list(kept_for_accuracy),
            "eval_set": {"id": evaluation.meta.get("id"), "index_sha256": evaluation.meta.get("index_sha256"),
                         "labels": evaluation.meta.get("labels", "labelled")}}
    return info, {**gate.to_dict(), "kept_float_for_accuracy": list(kept_for_accuracy), "numerics": numerics}


def make_int8_models(fp32_path: Path, out_dir: Path, manifest: Manifest, calibration: str | Path,
                     eval_set: str | Path | None, log=print, settings: QuantSettings | None = None,
                     limits: GateLimits = DEFAULT_LIMITS, search: bool = True
                     ) -> tuple[dict, dict[str, dict], list[ModelFile]]:
    """Write a bundle's two INT8 models into ``out_dir`` (``edge.int8_numerics`` says why two), each gated
    against FP32 on the same evaluation set. Returns (calibration provenance, gate per target key, files).

    The provenance is the TensorRT model's, with ``models`` holding each model's quantizer summary, kept
    layers, and the arithmetic and CPU its gate ran on.
    """
    settings = settings or QuantSettings()
    calib, evaluation = _read_sets(fp32_path, manifest, calibration, eval_set, log)
    reference = score(fp32_path, evaluation, manifest)
    info, gates, models, files = None, {}, {}, []
    for target in INT8_TARGETS:
        one, gate = _make_one(fp32_path, out_dir / target.path, manifest, calib, evaluation, log, settings, limits,
                              search, target, reference)
        info = info or one
        gates[target.key] = gate
        models[target.key] = {"path": target.path, "purpose": target.purpose, "quantizer": one["quantizer"],
                              "kept_float_for_accuracy": one["kept_float_for_accuracy"],
                              "gate_passed": gate["passed"], "gate_numerics": gate["numerics"]["kind"],
                              "gate_cpu": {k: gate["numerics"]["cpu"][k] for k in ("model", "isa", "saturates")}}
        files.append(ModelFile(target.path, "", "int8", target.runtime))
    return {**info, "models": models}, gates, files
