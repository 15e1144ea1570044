"""Serial link between the robot host and its microcontroller: protocol, host link, firmware, simulator.

Public API (imported lazily, so ``firmware_bridge.errors`` stays importable without pyserial)::

    from firmware_bridge import Link, Telemetry, LinkStats, ControlResult, McuSimulator

- ``firmware_bridge.spec``: the protocol table (constants with units, enums, layouts, schema hash).
- ``firmware_bridge.codec`` / ``messages``: COBS + CRC-32 framing and typed messages.
- ``firmware_bridge.link``: ``Link``, the host side (one I/O thread owns the port); ``values``: what it
  hands back (``Telemetry``, ``ControlResult``, ``LinkStats``, ...); ``port``: opening and reopening the
  serial port; ``control_queue``: the controls and the e-stop on their way to the MCU.
- ``firmware_bridge.simulator``: builds and runs the C firmware core on a pseudo-terminal.
- ``firmware_bridge.errors``: ``BridgeError`` and its subclasses.
- ``firmware/``: the C99 core, the host simulator and the Arduino sketch.

Imports nothing of ours.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Link": "firmware_bridge.link",
    "Telemetry": "firmware_bridge.values",
    "HandshakeInfo": "firmware_bridge.values",
    "LinkStats": "firmware_bridge.values",
    "McuCounters": "firmware_bridge.values",
    "ControlResult": "firmware_bridge.values",
    "Outcome": "firmware_bridge.values",
    "McuSimulator": "firmware_bridge.simulator",
    "FaultConfig": "firmware_bridge.simulator",
    "build_simulator": "firmware_bridge.simulator",
    "BridgeError": "firmware_bridge.errors",
}

__all__ = [
    "BridgeError",
    "ControlResult",
    "FaultConfig",
    "HandshakeInfo",
    "Link",
    "LinkStats",
    "McuCounters",
    "McuSimulator",
    "Outcome",
    "Telemetry",
    "build_simulator",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
