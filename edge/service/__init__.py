"""The robot's HTTP face: inference API (seed-compatible and Open Inference Protocol), control panel, metrics.

``create_app(runtime, config)`` builds the Flask app with the runtime injected
(tests pass a runtime on the simulated robot); ``edge.service.server.serve``
runs it under waitress. Flask and waitress are imported only here and below.
"""

from __future__ import annotations

from edge.service.config import ServiceConfig


def __getattr__(name: str):
    # Flask loads with the app, not with the package: `voxedge --help` and `voxedge serve --help` stay fast.
    if name == "create_app":
        from edge.service.app import create_app

        return create_app
    raise AttributeError(f"module 'edge.service' has no attribute {name!r}")


__all__ = ["ServiceConfig", "create_app"]
