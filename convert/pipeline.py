"""``voxedge convert``: checkpoint -> verified FP32 ONNX -> bundle (written atomically)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from calibration.gate import accuracy_gate
from calibration.int8 import gate_report, make_int8_models
from calibration.sampleset import read_set
from convert.config import REFERENCE_CONFIG, ConvertConfig
from convert.errors import ConvertError
from convert.export import ONNX_OPSET, export_onnx, golden_inputs, load_model, verify_onnx
from convert.fp16 import FP16_ONNX, make_fp16, verify_fp16
from convert.notices import third_party_parts, write_notices
from convert.report import REPORT_PNG, write_report
from edge.bundle import Bundle, Manifest, ModelFile, sha256_file, write_bundle
from edge.trt_check import findings_error, tensorrt_warnings

FP32_ONNX = "model.fp32.onnx"
GOLDEN = "golden.npz"
REPORT_JSON = "report.json"
GOLDEN_BATCH = 4


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxslim
    import torch

    return {"torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxslim": onnxslim.__version__, "opset": str(ONNX_OPSET)}


def _heads_from_checkpoint(config: ConvertConfig, meta: dict) -> ConvertConfig:
    """Take the intent labels' check and the command threshold from a ``voxedge train`` checkpoint."""
    heads = config.heads
    if "intents" in meta and tuple(meta["intents"]) != heads.intent_labels:
        raise ConvertError(f"the checkpoint's intents {meta['intents']} differ from the config's intent_labels "
                           f"{list(heads.intent_labels)}; fix the config")
    if "command_threshold" in meta:
        heads = dataclasses.replace(heads, command_threshold=float(meta["command_threshold"]))
    return dataclasses.replace(config, heads=heads)


def convert(checkpoint: str | Path, out: str | Path, config_path: str | Path = REFERENCE_CONFIG,
            factory: str | None = None, calibration: str | Path | None = None, eval_set: str | Path | None = None,
            log=print, fp16: bool = False, quantizer: str | None = None, search: bool = True,
            allow_trt_findings: bool = False) -> Bundle:
    """Convert a checkpoint into a bundle at ``out``; nothing is left at ``out`` if a step fails.

    With ``calibration`` (a sample set directory) an INT8 Q/DQ model is added,
    which must pass the accuracy gate on ``eval_set`` against the FP32 model
    (keeping its most sensitive layers in float if ``search`` allows); with
    ``fp16`` an FP16 model is added, checked against PyTorch (and gated when
    ``eval_set`` is given). ``quantizer`` overrides the config's. A model that TensorRT's
    ONNX parser would refuse (``edge.trt_check``) stops the conversion unless
    ``allow_trt_findings``.
    """
    import onnx

    t0 = time.monotonic()
    if calibration is not None and eval_set is None:
        raise ConvertError("INT8 needs an evaluation set for its accuracy gate: pass --eval DIR with --calibration")
    config = ConvertConfig.from_file(config_path)
    if factory:
        config = dataclasses.replace(config, factory=factory)
    # One numbered line per stage, named for the work it covers (long stages log their own progress).
    total = 5 + bool(fp16) + (calibration is not None)
    counter = iter(range(1, total + 1))

    def step(text: str) -> None:
        log(f"[{next(counter)}/{total}] {text}")

    step(f"loading {checkpoint} with {config.factory}")
    model, meta = load_model(checkpoint, config.factory)
    config = _heads_from_checkpoint(config, meta)
    golden = golden_inputs(config.inputs, batch=GOLDEN_BATCH)
    settings = config.quant_settings()
    if quantizer:
        settings = dataclasses.replace(settings, quantizer=quantizer)

    def populate(tmp: Path) -> Manifest:
        step(f"exporting ONNX (opset {ONNX_OPSET}, dynamic batch), simplifying, checking")
        export_onnx(model, config.inputs, config.outputs, tmp / FP32_ONNX, golden)
        step("verifying ONNX Runtime against PyTorch on golden inputs")
        errors, reference = verify_onnx(model, tmp / FP32_ONNX, config.outputs, golden, config.tolerance)
        np.savez(tmp / GOLDEN, **{f"input.{k}": v for k, v in golden.items()},
                 **{f"output.{k}": v for k, v in reference.items()})
        report = {"verification": {"fp32": [dataclasses.asdict(e) for e in errors]}}
        files = [ModelFile(FP32_ONNX, "", "fp32")]
        if fp16:
            step(f"FP16 variant ({FP16_ONNX}; kept in FP32: {', '.join(settings.keep_float_prefixes) or 'nothing'})")
            report["fp16"] = make_fp16(tmp / FP32_ONNX, tmp / FP16_ONNX, settings.keep_float_prefixes)
            report["verification"]["fp16"] = [dataclasses.asdict(e)
                                              for e in verify_fp16(tmp / FP16_ONNX, golden, reference)]
            files.append(ModelFile(FP16_ONNX, "", "fp16"))
            if eval_set is not None:
                gate = accuracy_gate(tmp / FP32_ONNX, tmp / FP16_ONNX, read_set(eval_set), Manifest(
                    inputs=config.inputs, outputs=config.outputs, preprocessing=config.preprocessing,
                    heads=config.heads))
                log(f"      FP16 {gate.describe()}")
                if not gate.passed:
                    raise ConvertError(f"FP16 model rejected: {gate.describe()}; convert without --fp16")
                report["fp16_accuracy_gate"] = gate.to_dict()
        calib_info = None
        gates = None
        if calibration is not None:
            probe = Manifest(inputs=config.inputs, outputs=config.outputs, preprocessing=config.preprocessing,
                             heads=config.heads)
            step("INT8: calibrating, quantizing and gating on the evaluation set")
            try:
                calib_info, gates, int8_files = make_int8_models(tmp / FP32_ONNX, tmp, probe, calibration, eval_set,
                                                                 log, settings, search=search)
            except CalibrationError as exc:
                raise ConvertError(f"{exc} (or convert without --calibration for an FP32-only bundle)") from exc
            report.update(gate_report(gates))
            files.extend(int8_files)
        # The CPU INT8 model is for ONNX Runtime only; TensorRT builds from the others.
        step("checking every model against TensorRT's ONNX parser rules (voxedge check-trt)")
        report["tensorrt_check"] = {f.precision: tensorrt_warnings(onnx.load(str(tmp / f.path)))
                                    for f in files if f.runtime is None}
        refusal = findings_error(report["tensorrt_check"])
        if refusal and not allow_trt_findings:
            raise ConvertError(refusal)
        for p, warnings in report["tensorrt_check"].items():
            for w in warnings:
                log(f"      warning: the {p} model will not build on the robot as it is: {w}")
        step("drawing the report (error histograms, confusion matrices, latency)")
        report.update(write_report(tmp, files, golden, reference, config.heads.intent_labels, gates))
        report["timing_s"] = {"total": time.monotonic() - t0}
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
        for e in errors:
            log(f"      {e.name:<14} max abs {e.max_abs:.2e}  max rel {e.max_rel:.2e}  cosine {e.cosine:.8f}")
        third_party = write_notices(third_party_parts(model), tmp)
        for part in third_party:
            log(f"      contains {part['author']}'s {part['name']} ({part['license']}): see {part['notice_file']}")
        return Manifest(
            inputs=config.inputs, outputs=config.outputs, preprocessing=config.preprocessing, heads=config.heads,
            files=tuple(files),
            provenance={"checkpoint": Path(checkpoint).name, "checkpoint_sha256": sha256_file(checkpoint),
                        "factory": config.factory, "git_commit": _git_commit(), "versions": _versions(),
                        "calibration": calib_info, "third_party": third_party,
                        # what must stay FP32 in every precision: build-engine pins these layers
                        "keep_float_prefixes": list(settings.keep_float_prefixes),
                        "created_unix_s": int(time.time())},
            reports={"json": REPORT_JSON, "golden": GOLDEN, "plots": REPORT_PNG},
        )

    bundle = write_bundle(out, populate)
    log(f"wrote bundle {bundle.path} in {time.monotonic() - t0:.1f} s")
    return bundle
