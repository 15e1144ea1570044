"""``voxedge convert``: registered by the ``voxedge`` entry point; torch loads only when it runs."""

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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``convert`` on the ``voxedge`` parser."""
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
