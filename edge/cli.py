"""The ``voxedge`` command line.

Each package that owns subcommands registers them through an ``add_parsers``
function in a light module; the work (and torch, where needed) is imported only
when a subcommand runs, so robot-side commands never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules whose add_parsers(sub) registers subcommands, in help order.
COMMAND_MODULES = ("reference_model.cli", "convert.cli", "calibration.cli", "edge.engine_cli",
                   "firmware_bridge.cli", "edge.sensors.cli", "edge.service.cli",
                   "simrobot.demo", "edge.doctor", "convert.trt_check_cli",
                   "edge.triton_cli", "edge.mcap_cli")

# Exception bases whose messages are written for users: printed without a traceback.
USER_ERRORS = (
    "sim.errors:SimError",
    "reference_model.errors:ReferenceModelError",
    "convert.errors:ConvertError",
    "calibration.errors:CalibrationError",
    "edge.bundle:BundleError",
    "firmware_bridge.errors:BridgeError",
    "edge.sensors.errors:SensorError",
    "edge.service.config:ServiceConfigError",
    "edge.runtime:EdgeRuntimeError",
    "edge.settings:SettingsError",
    "simrobot.demo:DemoError",
    "edge.outputs:OutputError",
    "edge.runners:RunnerError",
    "edge.engine:EngineError",
)


def build_parser() -> argparse.ArgumentParser:
    from edge import __version__

    parser = argparse.ArgumentParser(prog="voxedge", description="Offline voice-controlled robot toolkit.")
    parser.add_argument("--version", action="version", version=f"voxedge {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also VOXEDGE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    out = []
    for spec in USER_ERRORS:
        module, _, attr = spec.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return tuple(out)


def _one_line(exc: BaseException) -> str:
    """An exception as one line for people: the message's first line, with the file an OSError names."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("VOXEDGE_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except ImportError as exc:
        if debug:
            raise
        print(f"voxedge {args.command}: error: {exc}. This command needs the workstation extras: "
              "pip install 'voxedge[convert]' (or run `make setup` in the repository)", file=sys.stderr)
        return 2
    except _user_errors() as exc:
        if debug:
            raise
        print(f"voxedge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxedge {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path that cannot be read or written, a full disk: name it, no traceback
        if debug:
            raise
        print(f"voxedge {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else: still one line; the traceback is one flag away
        if debug:
            raise
        print(f"voxedge {args.command}: error: {type(exc).__name__}: {_one_line(exc)} (run again with "
              "--debug or VOXEDGE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
