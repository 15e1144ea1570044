"""``voxedge calibrate``: registered by the ``voxedge`` entry point."""

from __future__ import annotations

import argparse


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.int8 import calibrate_bundle

    calibrate_bundle(args.bundle, args.calibration, args.eval, quantizer=args.quantizer,
                     search=not args.no_precision_search, allow_trt_findings=args.allow_trt_findings)
    return 0


def _cmd_import_set(args: argparse.Namespace) -> int:
    from calibration.errors import CalibrationError
    from edge.outputs import claim_output

    w, _, h = args.size.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise CalibrationError(f"--size {args.size!r} must be WIDTHxHEIGHT in pixels, e.g. 160x120")
    claim_output(args.out, "index.jsonl", "sample set", force=args.force)
    from calibration.importer import import_files

    meta = import_files(args.src, args.out, (int(w), int(h)), args.window)
    print(f"wrote {args.out}: {meta['n_samples']} samples, per intent {meta['per_intent']}")
    for warning in meta["warnings"]:
        print(f"warning: {warning}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``calibrate`` on the ``voxedge`` parser."""
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
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("import-set", help="make a sample set from your own picture + WAV pairs")
    p.add_argument("src", help="directory of NAME.png/.jpg + NAME.wav pairs (and optional labels.jsonl)")
    p.add_argument("--out", required=True,
                   help="set directory to write; an earlier set there is replaced, anything else refused unless --force")
    p.add_argument("--force", action="store_true", help="replace --out even if it is not a sample set")
    p.add_argument("--size", default="160x120", help="model input WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--window", type=int, default=32000, help="audio window in samples at 16 kHz (default: 32000)")
    p.set_defaults(func=_cmd_import_set)
