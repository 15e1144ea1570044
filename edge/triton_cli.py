"""``voxedge export-triton``: registered by the ``voxedge`` entry point (the work is in ``edge.triton``)."""

from __future__ import annotations

import argparse

from edge.cli_args import whole_number
from edge.triton import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, MODEL_NAME, PLATFORMS


def _cmd_export_triton(args: argparse.Namespace) -> int:
    from edge.triton import CONFIG_NAME, MODEL_FILES, MODEL_VERSION, export_triton

    model_dir, config = export_triton(args.bundle, args.out, precision=args.precision, max_batch=args.max_batch,
                              name=args.name, force=args.force, queue_delay_us=args.max_queue_delay_us,
                              platform=args.platform, engine=args.engine)
    print(f"wrote the Triton model repository {args.out}: {model_dir / CONFIG_NAME} and "
          f"{model_dir / MODEL_VERSION / MODEL_FILES[args.platform]} ({args.platform}, {args.precision}, max batch "
          f"{config['max_batch_size']}); serve it with: tritonserver --model-repository {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``export-triton`` on the ``voxedge`` parser."""
    p = sub.add_parser("export-triton", help="write a bundle as a Triton Inference Server model repository")
    p.add_argument("bundle", help="bundle directory (from voxedge convert)")
    p.add_argument("out", help="model repository to write into (OUT/NAME/config.pbtxt, OUT/NAME/1/model.onnx or "
                               "model.plan); "
                               "only OUT/NAME is written, replaced atomically when it is an earlier export")
    p.add_argument("--precision", choices=("int8", "fp16", "fp32"), default="fp32",
                   help="which of the bundle's models to export; int8 is the Q/DQ model for TensorRT "
                        "(default: %(default)s)")
    p.add_argument("--platform", choices=PLATFORMS, default=PLATFORMS[0],
                   help="onnxruntime_onnx: the ONNX model, run by ONNX Runtime with its TensorRT accelerator; "
                        "tensorrt_plan: a TensorRT engine that voxedge build-engine built into the bundle on the "
                        "server's GPU (default: %(default)s)")
    p.add_argument("--engine", metavar="PLAN",
                   help="with tensorrt_plan: which of the bundle's engines (its path), when it holds several")
    p.add_argument("--max-batch", type=whole_number(1),
                   help=f"max_batch_size: the largest batch Triton forms (default: {DEFAULT_MAX_BATCH}; for a "
                        "plan, its batch profile's largest)")
    p.add_argument("--max-queue-delay-us", type=whole_number(0), default=DEFAULT_QUEUE_DELAY_US,
                   help="how long the dynamic batcher waits to fill a batch, in microseconds (default: %(default)s)")
    p.add_argument("--name", default=MODEL_NAME, help="the model's name on the server (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace OUT/NAME even when it is not an earlier export")
    p.set_defaults(func=_cmd_export_triton)
