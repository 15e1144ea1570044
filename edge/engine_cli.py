"""``voxedge build-engine``: registered by the ``voxedge`` entry point."""

from __future__ import annotations

import argparse

from edge.cli_args import whole_number
from edge.engine import DEFAULT_MAX_BATCH, DEFAULT_OPT_BATCH, DEFAULT_WORKSPACE_MIB


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.engine import EngineError, build_engine, check_batches, device_key, find_engine

    check_batches(args.opt_batch, args.max_batch)  # before TensorRT is even imported
    if args.if_missing:
        bundle = load_bundle(args.bundle)
        try:
            key = device_key(bundle, args.precision, (1, args.opt_batch, args.max_batch), device=args.device,
                             dla_core=args.dla_core)
            plan = find_engine(bundle, key)
            print(f"engine {plan.name} already matches this device; nothing to build")
            return 0
        except EngineError:
            pass  # none yet, or built for another device: build it (and say why if that fails)
    build_engine(args.bundle, args.precision, max_batch=args.max_batch, opt_batch=args.opt_batch,
                 workspace_mib=args.workspace_mib, device=args.device, dla_core=args.dla_core)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``build-engine`` on the ``voxedge`` parser."""
    p = sub.add_parser("build-engine", help="compile a bundle's ONNX model into a TensorRT engine (on the robot)")
    p.add_argument("bundle", help="bundle directory (the engine is added atomically)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                   help="which of the bundle's models to compile (default: %(default)s)")
    p.add_argument("--max-batch", type=whole_number(1), default=DEFAULT_MAX_BATCH,
                   help="largest batch (default: %(default)s)")
    p.add_argument("--opt-batch", type=whole_number(1), default=DEFAULT_OPT_BATCH,
                   help="batch to tune for, at most --max-batch (default: %(default)s)")
    p.add_argument("--workspace-mib", type=whole_number(1), default=DEFAULT_WORKSPACE_MIB,
                   help="TensorRT workspace limit in MiB (default: %(default)s)")
    p.add_argument("--device", type=whole_number(0), default=0, help="CUDA device index (default: %(default)s)")
    p.add_argument("--dla-core", type=whole_number(0), default=None,
                   help="run the engine on this DLA core, with GPU fallback (Orin NX, AGX Orin; fp16 or int8)")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the bundle already has an engine matching this device (first start)")
    p.set_defaults(func=_cmd_build_engine)
