"""``voxedge calibrate``: the conversion re-entered at its INT8 step, on an existing bundle.

Both INT8 models are made anew from the bundle's FP32 model with a new calibration set (e.g. recorded
on the robot) by ``convert.steps.int8_step``, then checked and reported by ``check_and_report``, as
``voxedge convert`` ends; every other file of the bundle is kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from calibration.errors import CalibrationError
from calibration.quantize import QuantSettings
from convert.steps import check_and_report, int8_step, merge
from edge.bundle import Bundle, Manifest, load_bundle, write_bundle


def _settings(manifest: Manifest, quantizer: str | None) -> QuantSettings:
    """The INT8 settings the bundle was made with (the defaults for a bundle without INT8), ``quantizer`` over them."""
    previous = (manifest.provenance.get("calibration") or {}).get("settings")
    settings = QuantSettings.from_dict(previous) if previous else QuantSettings()
    return dataclasses.replace(settings, quantizer=quantizer) if quantizer else settings


def calibrate_bundle(bundle_path: str | Path, calibration: str | Path, eval_set: str | Path | None = None, log=print,
                     quantizer: str | None = None, search: bool = True, allow_trt_findings: bool = False) -> Bundle:
    """Re-quantize an existing bundle with a new calibration set (e.g. recorded on the robot): both INT8
    models are made anew (a bundle from before the CPU model gains one).

    The bundle is rewritten atomically: if calibration or the gate fails, or TensorRT's ONNX
    parser would refuse the new INT8 model (unless ``allow_trt_findings``), the old bundle
    stays exactly as it was.

    Raises:
        CalibrationError: unusable sets, no model that passes the gate, or a TensorRT finding.
    """
    t0 = time.monotonic()
    old = load_bundle(bundle_path)
    fp32 = old.model_path("fp32")

    def populate(tmp: Path) -> Manifest:
        kept = [f for f in old.manifest.files if f.precision != "int8"]
        for f in kept:
            (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(old.path / f.path, tmp / f.path)
        int8 = int8_step(fp32, tmp, old.manifest, calibration, eval_set, log,
                         _settings(old.manifest, quantizer), search)
        files = kept + int8.files
        reports = old.manifest.reports
        report = json.loads((tmp / reports["json"]).read_text()) if reports.get("json") else {}
        check_and_report(tmp, files, merge(report, int8.report), reports, old.manifest.heads.intent_labels, log,
                         lambda text: log(f"      {text}"), allow_trt_findings, checked=int8.files,
                         refuse=CalibrationError)
        return dataclasses.replace(old.manifest, files=tuple(files),
                                   provenance={**old.manifest.provenance, **int8.provenance})

    bundle = write_bundle(old.path, populate)
    log(f"rewrote bundle {bundle.path} with new INT8 models in {time.monotonic() - t0:.1f} s")
    return bundle
