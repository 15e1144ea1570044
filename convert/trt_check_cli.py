"""``voxedge check-trt``: registered by the ``voxedge`` entry point.

Exit status: 0 when no model has a finding, 1 when any has (one finding a line,
prefixed with the model's path), 2 when a file cannot be checked (missing,
unreadable, not ONNX) or no table fits ``--trt-version``. ``onnx`` is imported
only when the command runs, so building the parser stays light on the robot.
"""

from __future__ import annotations

import argparse
import sys

from convert.trt_check import DEFAULT_TRT_VERSION


def _load(path: str):
    """The ONNX model at ``path``; TrtCheckError says why not, in one line."""
    import onnx
    from google.protobuf.message import DecodeError

    from convert.trt_check import TrtCheckError

    try:
        model = onnx.load(path)
    except FileNotFoundError:
        raise TrtCheckError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TrtCheckError(f"{path}: is a directory, not an ONNX file") from None
    except OSError as exc:
        raise TrtCheckError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (DecodeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrtCheckError(f"{path}: not an ONNX model ({reason})") from None
    # protobuf parses many non-ONNX byte strings into an empty message: a model has a graph and an IR version.
    if not model.ir_version or not model.HasField("graph") or not model.opset_import:
        raise TrtCheckError(f"{path}: not an ONNX model (no graph, IR version or opset)")
    return model


def _cmd_check_trt(args: argparse.Namespace) -> int:
    from convert.trt_check import TrtCheckError, check, load_table

    try:
        table = load_table(args.trt_version)
    except TrtCheckError as exc:
        print(f"voxedge check-trt: error: {exc}", file=sys.stderr)
        return 2
    context = f"TensorRT {args.trt_version}, {table.describe()}"
    status = 0
    for path in args.models:
        try:
            findings = check(_load(path), table, args.trt_version)
        except TrtCheckError as exc:
            print(f"voxedge check-trt: error: {exc}", file=sys.stderr)
            status = 2
            continue
        if not findings:
            print(f"{path}: no findings ({context})")
            continue
        print(f"{path}: {len(findings)} finding{'s' * (len(findings) != 1)} ({context})")
        for finding in findings:
            print(f"{path}: {finding}")
        status = max(status, 1)
    return status


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``check-trt`` on the ``voxedge`` parser."""
    p = sub.add_parser("check-trt", help="check ONNX models against TensorRT's ONNX parser's limits",
                       description="Check ONNX models statically against what TensorRT's ONNX parser "
                                   "documents (ONNX-TensorRT docs/operators.md tables in convert/trt_ops/).")
    p.add_argument("models", nargs="+", metavar="MODEL.onnx", help="ONNX files to check")
    p.add_argument("--trt-version", default=DEFAULT_TRT_VERSION,
                   help="the robot's TensorRT; the newest table at or below it is used "
                        "(default: %(default)s)")
    p.set_defaults(func=_cmd_check_trt)
