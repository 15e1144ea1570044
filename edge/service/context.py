"""What every part of the service reaches for: the runtime, the settings, strict-JSON values.

The blueprints (panel, inference, streams, metrics) import these from here, not from the app factory,
so ``edge.service.app`` imports the blueprints and nothing imports it back.
"""

from __future__ import annotations

import math

from flask import current_app


def runtime():
    """The ``edge.runtime.Runtime`` (or a stand-in with its interface) this app serves."""
    return current_app.config["RUNTIME"]


def settings():
    """The ``ServiceConfig`` of this app."""
    return current_app.config["VOXEDGE"]


def finite(value):
    """``value`` with non-finite floats (a silent microphone's -inf dBFS) replaced by None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
