"""The INT8 step shared by ``voxedge convert`` and ``voxedge calibrate``:
calibrate a Q/DQ model from the FP32 one, then gate it against FP32."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from calibration.errors import CalibrationError
from calibration.gate import DEFAULT_LIMITS, GateLimits, accuracy_gate, pseudo_labelled
from calibration.mixed import search_mixed_precision
from calibration.quantize import QuantSettings, quantize_int8
from calibration.sampleset import SampleSet, read_set
from edge.bundle import PRECISIONS, Bundle, Manifest, ModelFile, load_bundle, write_bundle

INT8_ONNX = "model.int8.qdq.onnx"
CALIBRATION_BATCH = 32


def calibration_warnings(calib: SampleSet, manifest: Manifest) -> list[str]:
    """The coverage warnings of a calibration set, recomputed from its samples whatever wrote it
    (make-set, import-set or the robot's audit log): too few samples, an intent missing, clipped audio."""
    return calib.coverage(manifest.heads.intent_labels)["warnings"]


def make_int8(fp32_path: Path, out_path: Path, manifest: Manifest, calibration: str | Path,
              eval_set: str | Path | None, log=print, settings: QuantSettings | None = None,
              limits: GateLimits = DEFAULT_LIMITS, search: bool = True) -> tuple[dict, dict]:
    """Write ``out_path`` (INT8 Q/DQ) from ``fp32_path``; returns (calibration provenance, gate result).

    If the INT8 model fails the accuracy gate and ``search`` is on, the most
    sensitive layers are kept in floating point until it passes
    (``calibration.mixed``); the layers kept are reported.

    Raises:
        CalibrationError: unusable sets, or no model that passes the accuracy gate.
    """
    settings = settings or QuantSettings()
    calib = read_set(calibration)
    for w in calibration_warnings(calib, manifest):
        log(f"      warning (calibration set): {w}")
    if eval_set is None:  # an unlabelled set (e.g. the robot's audit log): gate on agreement with FP32
        evaluation = pseudo_labelled(calib, fp32_path, manifest)
        log(f"      no evaluation set: gating on agreement with the FP32 model over {len(calib)} samples")
    else:
        evaluation = read_set(eval_set)

    def batches():  # the model's own inputs (names, layout, colour order), as the robot feeds it
        return calib.feeds(manifest, CALIBRATION_BATCH)

    log(f"      calibrating INT8 Q/DQ on {len(calib)} samples of {calib.path}")
    quant_kwargs = settings.quantize_kwargs()
    summary = quantize_int8(fp32_path, out_path, batches(), **quant_kwargs)
    log(f"      accuracy gate on {len(evaluation)} samples of {evaluation.path} (ONNX Runtime, CPU)")
    gate = accuracy_gate(fp32_path, out_path, evaluation, manifest, limits)
    log(f"      {gate.describe()}")
    kept_for_accuracy: tuple[str, ...] = ()
    if not gate.passed:
        if not search:
            raise CalibrationError(f"INT8 model rejected: {gate.describe()}. Use a larger or more representative "
                                   "calibration set, or keep the FP32 model")
        log("      searching for a mixed-precision model that passes")
        found = search_mixed_precision(fp32_path, out_path, batches, evaluation, manifest, quant_kwargs, gate,
                                       summary, limits, log)
        gate, summary, kept_for_accuracy = found.gate, found.summary, found.kept_float_for_accuracy
        log(f"      kept in floating point for accuracy: {', '.join(kept_for_accuracy)}")
    info = {"id": calib.meta.get("id"), "index_sha256": calib.meta.get("index_sha256"), "n_samples": len(calib),
            "quantizer": summary, "settings": settings.to_dict(), "kept_float_for_accuracy": list(kept_for_accuracy),
            "eval_set": {"id": evaluation.meta.get("id"), "index_sha256": evaluation.meta.get("index_sha256"),
                         "labels": evaluation.meta.get("labels", "labelled")}}
    return info, {**gate.to_dict(), "kept_float_for_accuracy": list(kept_for_accuracy)}


def _refresh_report(tmp: Path, manifest: Manifest, files: list[ModelFile], gate: dict, log) -> None:
    """Bring the copied report up to date with the new INT8 model, as ``voxedge convert`` writes it:
    the gate and TensorRT check in ``report.json``, and ``report.png`` with the latency figures
    redrawn by ``convert.report.write_report`` from the bundle's golden inputs and PyTorch outputs."""
    import numpy as np
    import onnx

    from edge.trt_check import tensorrt_warnings

    path = tmp / manifest.reports["json"]
    report = json.loads(path.read_text())
    report["accuracy_gate"] = gate
    report.setdefault("tensorrt_check", {})["int8"] = tensorrt_warnings(onnx.load(str(tmp / INT8_ONNX)))
    golden_name = manifest.reports.get("golden")
    if golden_name and (tmp / golden_name).is_file():
        from convert.report import REPORT_PNG, write_report

        with np.load(tmp / golden_name) as saved:
            golden = {k.removeprefix("input."): saved[k] for k in saved.files if k.startswith("input.")}
            reference = {k.removeprefix("output."): saved[k] for k in saved.files if k.startswith("output.")}
        by_precision = {f.precision: tmp / f.path for f in files if f.precision}
        models = {p: by_precision[p] for p in PRECISIONS if p in by_precision}  # the conversion's order
        log("      redrawing the report (error histograms, confusion matrices, latency)")
        report.update(write_report(tmp, models, golden, reference, manifest.heads.intent_labels, gate))
        if manifest.reports.get("plots", REPORT_PNG) != REPORT_PNG:  # write_report draws REPORT_PNG
            os.replace(tmp / REPORT_PNG, tmp / manifest.reports["plots"])
    else:
        log(f"      warning: the bundle has no golden inputs ({golden_name or 'reports.golden'}); its plots and "
            "latency figures still show the INT8 model of the conversion")
    path.write_text(json.dumps(report, indent=2) + "\n")


def calibrate_bundle(bundle_path: str | Path, calibration: str | Path, eval_set: str | Path | None = None, log=print,
                     quantizer: str | None = None, search: bool = True) -> Bundle:
    """Re-quantize an existing bundle with a new calibration set (e.g. recorded on the robot).

    The bundle is rewritten atomically: if calibration or the gate fails, the old
    bundle stays exactly as it was.
    """
    t0 = time.monotonic()
    old = load_bundle(bundle_path)
    fp32 = old.model_path("fp32")

    def populate(tmp: Path) -> Manifest:
        for f in old.manifest.files:
            if f.path != INT8_ONNX:
                (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(old.path / f.path, tmp / f.path)
        previous = (old.manifest.provenance.get("calibration") or {}).get("settings")
        settings = QuantSettings.from_dict(previous) if previous else QuantSettings()
        if quantizer:
            settings = dataclasses.replace(settings, quantizer=quantizer)
        info, gate = make_int8(fp32, tmp / INT8_ONNX, old.manifest, calibration, eval_set, log, settings,
                               search=search)
        files = [f for f in old.manifest.files if f.path != INT8_ONNX] + [ModelFile(INT8_ONNX, "", "int8")]
        report_name = old.manifest.reports.get("json")
        if report_name:
            _refresh_report(tmp, old.manifest, files, gate, log)
        provenance = {**old.manifest.provenance, "calibration": info}
        return Manifest(**{**vars(old.manifest), "files": tuple(files), "provenance": provenance})

    bundle = write_bundle(old.path, populate)
    log(f"rewrote bundle {bundle.path} with a new INT8 model in {time.monotonic() - t0:.1f} s")
    return bundle
