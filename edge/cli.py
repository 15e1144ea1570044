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
                   "edge.demo", "edge.doctor", "edge.trt_check_cli")

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
    "edge.demo:DemoError",
    "edge.outputs:OutputError",
)


def build_parser() -> argparse.ArgumentParser:
    from edge import __version__

    parser = argparse.ArgumentParser(prog="voxedge", description="Offline voice-controlled robot toolkit.")
    parser.add_argument("--version", action="version", version=f"voxedge {__version__}")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ImportError as exc:
        print(f"voxedge {args.command}: error: {exc}. This command needs the workstation extras: "
              "pip install 'voxedge[convert]' (or run `make setup` in the repository)", file=sys.stderr)
        return 2
    except _user_errors() as exc:
        print(f"voxedge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxedge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
