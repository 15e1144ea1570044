"""``voxedge convert`` and ``voxedge calibrate`` (the conversion re-entered at its INT8 step):
registered by the ``voxedge`` entry point; torch loads only when they run."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "reference_model" / "checkpoints" / "reference.pt"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "reference.json"


def _cmd_convert(args: argparse.Namespace) -> int:
    from edge.outputs import claim_output

    claim_output(args.out, "manifest.json", "bundle", force=args.force)  # before any work
    from convert.pipeline import convert

    convert(args.checkpoint, args.out, config_path=args.config, factory=args.factory,
            calibration=args.calibration, eval_set=args.eval, fp16=args.fp16, quantizer=args.quantizer,
            search=not args.no_precision_search, allow_trt_findings=args.allow_trt_findings)
    return 0


def _refuse_small_sets(calibration: str, eval_set: str | None) -> None:
    """One line, before any work, when a set is too small to calibrate with or to gate on (--force overrides)."""
    from calibration.errors import CalibrationError
    from calibration.sampleset import CALIBRATE_MIN_SAMPLES, read_set

    # without --eval the gate runs on the calibration samples, so one check covers both
    for role, path in (("calibration", calibration), ("evaluation", eval_set)):
        if path is None:
            continue
        n = len(read_set(path))
        if n < CALIBRATE_MIN_SAMPLES:
            raise CalibrationError(
                f"the {role} set {path} has {n} samples, fewer than {CALIBRATE_MIN_SAMPLES}: its int8 scales and "
                f"its accuracy gate (one sample = {100 / n:.1f} points) would not be trustworthy; record more "
                "(voxedge serve --audit-log DIR) or add --force to calibrate anyway")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from convert.recalibrate import calibrate_bundle

    if not args.force:
        _refuse_small_sets(args.calibration, args.eval)
    calibrate_bundle(args.bundle, args.calibration, args.eval, quantizer=args.quantizer,
                     search=not args.no_precision_search, allow_trt_findings=args.allow_trt_findings)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``convert`` and ``calibrate`` on the ``voxedge`` parser."""
    from calibration.sampleset import CALIBRATE_MIN_SAMPLES

    p = sub.add_parser("convert", help="export a trained model to verified ONNX in a bundle")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model checkpoint (default: %(default)s)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="I/O, preprocessing and heads of the model (default: %(default)s)")
    p.add_argument("--factory", help="model factory 'package.module:function' (default: the config's)")
    p.add_argument("--calibration", help="sample set to calibrate an INT8 Q/DQ model with (see voxedge make-set)")
    p.add_argument("--eval", help="labelled sample set for the INT8 accuracy gate (required with --calibration)")
    p.add_argument("--fp16", action="store_true",
                   help="add an FP16 model (for ONNX Runtime's CUDA/TensorRT providers), checked against PyTorch")
    p.add_argument("--quantizer", choices=("onnxruntime", "modelopt"),
                   help="INT8 quantizer (default: the config's, else onnxruntime); modelopt needs voxedge[modelopt]")
    p.add_argument("--no-precision-search", action="store_true",
                   help="fail when INT8 misses the accuracy gate instead of keeping sensitive layers in float")
    p.add_argument("--allow-trt-findings", action="store_true",
                   help="write the bundle even if TensorRT's ONNX parser would refuse a model (voxedge check-trt); "
                        "ONNX Runtime still runs it, the robot's build-engine will not")
    p.add_argument("--out", required=True,
                   help="bundle directory to write; an earlier bundle there is replaced atomically, anything else is "
                        "refused unless --force")
    p.add_argument("--force", action="store_true", help="replace --out even if it is not a bundle")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("calibrate", help="re-quantize a bundle's INT8 model with a new calibration set")
    p.add_argument("bundle", help="bundle directory (rewritten atomically)")
    p.add_argument("--calibration", "--data", dest="calibration", required=True,
                   help="sample set to calibrate with, e.g. the robot's audit log (voxedge serve --audit-log DIR)")
    p.add_argument("--eval", help="labelled sample set for the accuracy gate (default: gate on agreement with the "
                                  "FP32 model over the calibration samples)")
    p.add_argument("--quantizer", choices=("onnxruntime", "modelopt"),
                   help="INT8 quantizer (default: the one the bundle was made with)")
    p.add_argument("--no-precision-search", action="store_true",
                   help="fail when INT8 misses the accuracy gate instead of keeping sensitive layers in float")
    p.add_argument("--allow-trt-findings", action="store_true",
                   help="rewrite the bundle even if TensorRT's ONNX parser would refuse the new INT8 model "
                        "(voxedge check-trt)")
    p.add_argument("--force", action="store_true",
                   help=f"calibrate even with a set of fewer than {CALIBRATE_MIN_SAMPLES} samples (refused by default: "
                        "too few to trust)")
    p.set_defaults(func=_cmd_calibrate)
