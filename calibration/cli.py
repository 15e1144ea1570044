"""``voxedge calibrate``: registered by the ``voxedge`` entry point."""

from __future__ import annotations

import argparse


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.int8 import calibrate_bundle

    calibrate_bundle(args.bundle, args.calibration, args.eval)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``calibrate`` on the ``voxedge`` parser."""
    p = sub.add_parser("calibrate", help="re-quantize a bundle's INT8 model with a new calibration set")
    p.add_argument("bundle", help="bundle directory (rewritten atomically)")
    p.add_argument("--calibration", required=True, help="sample set to calibrate with (e.g. recorded on the robot)")
    p.add_argument("--eval", required=True, help="labelled sample set for the accuracy gate")
    p.set_defaults(func=_cmd_calibrate)
