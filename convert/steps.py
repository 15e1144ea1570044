"""The steps of a conversion: export -> verify -> fp16 (and its gate) -> int8 -> TensorRT check -> report.

Each step writes its files into the bundle folder being built and returns a ``Part``: its model files,
its entries of ``report.json`` and of the manifest's provenance. ``convert.pipeline`` runs them all on a
checkpoint; ``convert.recalibrate`` re-enters at ``int8_step`` with an existing bundle. Both end with
``check_and_report``. The INT8 models are made and gated by ``calibration.int8``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from calibration.gate import accuracy_gate
from calibration.int8 import CPU_INT8, TENSORRT_INT8, make_int8_models
from calibration.quantize import QuantSettings
from calibration.sampleset import read_set
from convert.config import ConvertConfig
from convert.errors import ConvertError
from convert.export import export_onnx, verify_onnx
from convert.fp16 import FP16_ONNX, make_fp16, verify_fp16
from convert.notices import third_party_parts, write_notices
from convert.report import REPORT_PNG, write_report
from convert.trt_check import findings_error, tensorrt_warnings
from edge.bundle import Manifest, ModelFile

FP32_ONNX = "model.fp32.onnx"
GOLDEN = "golden.npz"
REPORT_JSON = "report.json"
REPORTS = {"json": REPORT_JSON, "golden": GOLDEN, "plots": REPORT_PNG}  # the manifest's reports
# report.json sections that several steps add to, one entry per model
SECTIONS = ("verification", "tensorrt_check")
# report.json's entry for the gate of each INT8 model (by calibration.int8.Int8Target key)
INT8_GATES = {TENSORRT_INT8.key: "accuracy_gate", CPU_INT8.key: "accuracy_gate_cpu"}


@dataclass
class Part:
    """What one step adds to a bundle: model files, ``report.json`` entries and provenance entries."""

    files: list[ModelFile] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def merge(report: dict, part: dict) -> dict:
    """Add a step's entries to ``report`` (in place): a section of ``SECTIONS`` gains the step's models,
    any other entry is set."""
    for key, value in part.items():
        if key in SECTIONS:
            report.setdefault(key, {}).update(value)
        else:
            report[key] = value
    return report


@dataclass(frozen=True)
class Golden:
    """The golden inputs and PyTorch's outputs on them (``golden.npz``): every model is compared with these."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def save(self, path: Path) -> None:
        np.savez(path, **{f"input.{k}": v for k, v in self.inputs.items()},
                 **{f"output.{k}": v for k, v in self.outputs.items()})

    @classmethod
    def load(cls, path: Path) -> Golden:
        with np.load(path) as saved:
            return cls({k.removeprefix("input."): saved[k] for k in saved.files if k.startswith("input.")},
                       {k.removeprefix("output."): saved[k] for k in saved.files if k.startswith("output.")})


def export_step(model, config: ConvertConfig, folder: Path, inputs: dict[str, np.ndarray]) -> Part:
    """The FP32 ONNX model, exported with ``inputs`` as its example, simplified and checked."""
    export_onnx(model, config.inputs, config.outputs, folder / FP32_ONNX, inputs)
    return Part([ModelFile(FP32_ONNX, "", "fp32")])


def verify_step(model, config: ConvertConfig, folder: Path, inputs: dict[str, np.ndarray]) -> tuple[Part, Golden]:
    """ONNX Runtime against PyTorch on ``inputs`` (``VerificationError`` beyond the config's tolerance);
    the inputs and PyTorch's outputs are kept as ``golden.npz``."""
    errors, outputs = verify_onnx(model, folder / FP32_ONNX, config.outputs, inputs, config.tolerance)
    golden = Golden(inputs, outputs)
    golden.save(folder / GOLDEN)
    return Part(report={"verification": {"fp32": [dataclasses.asdict(e) for e in errors]}}), golden


def fp16_step(folder: Path, golden: Golden, keep_float_prefixes: tuple[str, ...]) -> Part:
    """The FP16 model (``keep_float_prefixes`` stay FP32), checked against PyTorch on the golden inputs."""
    summary = make_fp16(folder / FP32_ONNX, folder / FP16_ONNX, keep_float_prefixes)
    errors = verify_fp16(folder / FP16_ONNX, golden.inputs, golden.outputs)
    return Part([ModelFile(FP16_ONNX, "", "fp16")],
                {"fp16": summary, "verification": {"fp16": [dataclasses.asdict(e) for e in errors]}})


def fp16_gate_step(folder: Path, eval_set: str | Path, manifest: Manifest, log) -> Part:
    """The FP16 model against FP32 on ``eval_set``; ConvertError when it fails the accuracy gate."""
    gate = accuracy_gate(folder / FP32_ONNX, folder / FP16_ONNX, read_set(eval_set), manifest)
    log(f"      FP16 {gate.describe()}")
    if not gate.passed:
        raise ConvertError(f"FP16 model rejected: {gate.describe()}; convert without --fp16")
    return Part(report={"fp16_accuracy_gate": gate.to_dict()})


def int8_step(fp32_path: Path, folder: Path, manifest: Manifest, calibration: str | Path,
              eval_set: str | Path | None, log, settings: QuantSettings, search: bool) -> Part:
    """Both INT8 models (``calibration.int8.make_int8_models``), each gated against FP32; their gates in
    the report, the calibration in the provenance. CalibrationError when no model passes."""
    info, gates, files = make_int8_models(fp32_path, folder, manifest, calibration, eval_set, log, settings,
                                          search=search)
    return Part(files, {INT8_GATES[key]: gate for key, gate in gates.items()}, {"calibration": info})


def tensorrt_step(folder: Path, files: list[ModelFile], log, allow_trt_findings: bool,
                  refuse: type[Exception] = ConvertError) -> Part:
    """Every model of ``files`` that TensorRT builds from against its ONNX parser's rules (``convert.trt_check``;
    the CPU INT8 model is for ONNX Runtime only). A finding raises ``refuse`` unless ``allow_trt_findings``,
    then each is logged as a warning."""
    import onnx

    findings = {f.precision: tensorrt_warnings(onnx.load(str(folder / f.path))) for f in files if f.runtime is None}
    refusal = findings_error(findings)
    if refusal and not allow_trt_findings:
        raise refuse(refusal)
    for precision, warnings in findings.items():
        for w in warnings:
            log(f"      warning: the {precision} model will not build on the robot as it is: {w}")
    return Part(report={"tensorrt_check": findings})


def report_step(folder: Path, files: list[ModelFile], report: dict, reports: dict, golden: Golden,
                labels: tuple[str, ...]) -> Part:
    """``report.png`` (``convert.report``) for the model ``files`` and the INT8 gates in ``report``, saved under
    the manifest's ``reports["plots"]``; its latency figures for ``report.json``."""
    gates = {key: report[entry] for key, entry in INT8_GATES.items() if report.get(entry)}
    drawn = write_report(folder, files, golden.inputs, golden.outputs, labels, gates)
    if reports.get("plots", REPORT_PNG) != REPORT_PNG:  # write_report draws REPORT_PNG
        os.replace(folder / REPORT_PNG, folder / reports["plots"])
    return Part(report=drawn)


def check_and_report(folder: Path, files: list[ModelFile], report: dict, reports: dict, labels: tuple[str, ...],
                     log, announce: Callable[[str], None], allow_trt_findings: bool,
                     checked: list[ModelFile] | None = None, refuse: type[Exception] = ConvertError,
                     started: float | None = None) -> None:
    """The end of every conversion: the TensorRT check of ``checked`` (default: every file), then the report of
    all ``files`` written into ``folder`` as the manifest's ``reports`` name it: ``report`` with the check's
    findings and the latency figures as ``reports["json"]``, the figures drawn from ``reports["golden"]``.
    ``announce`` gets one line per stage; ``started`` (time.monotonic) records the total time. Without
    ``reports["json"]`` only the check runs."""
    trt = [f for f in (files if checked is None else checked) if f.runtime is None]
    announce(f"checking {'every model' if checked is None else ', '.join(f.path for f in trt)} against "
             "TensorRT's ONNX parser rules (voxedge check-trt)")
    merge(report, tensorrt_step(folder, trt, log, allow_trt_findings, refuse).report)
    if not reports.get("json"):
        return
    golden_name = reports.get("golden")
    if golden_name and (folder / golden_name).is_file():
        announce("drawing the report (error histograms, confusion matrices, latency)")
        golden = Golden.load(folder / golden_name)
        merge(report, report_step(folder, files, report, reports, golden, labels).report)
    else:
        log(f"      warning: the bundle has no golden inputs ({golden_name or 'reports.golden'}); its plots and "
            "latency figures still show the INT8 model of the conversion")
    if started is not None:
        report["timing_s"] = {"total": time.monotonic() - started}
    (folder / reports["json"]).write_text(json.dumps(report, indent=2) + "\n")


def notices_step(model, folder: Path, log) -> Part:
    """The licences and notices of the model's pretrained parts (``convert.notices``), for the provenance."""
    third_party = write_notices(third_party_parts(model), folder)
    for part in third_party:
        log(f"      contains {part['author']}'s {part['name']} ({part['license']}): see {part['notice_file']}")
    return Part(provenance={"third_party": third_party})
