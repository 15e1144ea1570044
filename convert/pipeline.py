"""``voxedge convert``: checkpoint -> verified FP32 ONNX -> bundle (written atomically).

The conversion runs the steps of ``convert.steps`` in order (export, verify, FP16 and its gate, INT8,
TensorRT check, report, notices) and builds the manifest from their parts.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

from calibration.errors import CalibrationError
from convert.config import REFERENCE_CONFIG, ConvertConfig
from convert.errors import ConvertError
from convert.export import ONNX_OPSET, golden_inputs, load_model
from convert.fp16 import FP16_ONNX
from convert.steps import (
    FP32_ONNX,
    REPORTS,
    Part,
    check_and_report,
    export_step,
    fp16_gate_step,
    fp16_step,
    int8_step,
    merge,
    notices_step,
    verify_step,
)
from edge.bundle import Bundle, Manifest, sha256_file, write_bundle

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


def _provenance(checkpoint: str | Path, config: ConvertConfig, keep_float_prefixes: tuple[str, ...],
                parts: list[Part]) -> dict:
    """The manifest's provenance: the checkpoint, the tools, and what the steps recorded (calibration, third_party)."""
    provenance = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": sha256_file(checkpoint),
                  "factory": config.factory, "git_commit": _git_commit(), "versions": _versions(),
                  "calibration": None, "third_party": [],
                  # what must stay FP32 in every precision: build-engine pins these layers
                  "keep_float_prefixes": list(keep_float_prefixes), "created_unix_s": int(time.time())}
    for part in parts:
        provenance.update(part.provenance)
    return provenance


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
    ONNX parser would refuse (``convert.trt_check``) stops the conversion unless
    ``allow_trt_findings``.
    """
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
    inputs = golden_inputs(config.inputs, batch=GOLDEN_BATCH)
    settings = config.quant_settings()
    if quantizer:
        settings = dataclasses.replace(settings, quantizer=quantizer)

    def populate(tmp: Path) -> Manifest:
        step(f"exporting ONNX (opset {ONNX_OPSET}, dynamic batch), simplifying, checking")
        parts = [export_step(model, config, tmp, inputs)]
        step("verifying ONNX Runtime against PyTorch on golden inputs")
        verified, golden = verify_step(model, config, tmp, inputs)
        parts.append(verified)
        if fp16:
            step(f"FP16 variant ({FP16_ONNX}; kept in FP32: {', '.join(settings.keep_float_prefixes) or 'nothing'})")
            parts.append(fp16_step(tmp, golden, settings.keep_float_prefixes))
            if eval_set is not None:
                parts.append(fp16_gate_step(tmp, eval_set, config.manifest(), log))
        if calibration is not None:
            step("INT8: calibrating, quantizing and gating on the evaluation set")
            try:
                parts.append(int8_step(tmp / FP32_ONNX, tmp, config.manifest(), calibration, eval_set, log, settings,
                                       search))
            except CalibrationError as exc:
                raise ConvertError(f"{exc} (or convert without --calibration for an FP32-only bundle)") from exc
        files = [f for part in parts for f in part.files]
        report: dict = {}
        for part in parts:
            merge(report, part.report)
        check_and_report(tmp, files, report, REPORTS, config.heads.intent_labels, log, step, allow_trt_findings,
                         started=t0)
        for e in verified.report["verification"]["fp32"]:
            log(f"      {e['name']:<14} max abs {e['max_abs']:.2e}  max rel {e['max_rel']:.2e}  "
                f"cosine {e['cosine']:.8f}")
        parts.append(notices_step(model, tmp, log))
        return config.manifest(files=tuple(files), reports=dict(REPORTS),
                               provenance=_provenance(checkpoint, config, settings.keep_float_prefixes, parts))

    bundle = write_bundle(out, populate)
    log(f"wrote bundle {bundle.path} in {time.monotonic() - t0:.1f} s")
    return bundle
