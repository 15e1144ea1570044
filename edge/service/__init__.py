"""The robot's HTTP face: inference API (seed-compatible and Open Inference Protocol), control panel, metrics.

``create_app(runtime, config)`` builds the Flask app with the runtime injected
(tests pass a runtime on the simulated robot); ``edge.service.server.serve``
runs it under waitress. Flask and waitress are imported only here and below.
"""

from __future__ import annotations

from edge.service.app import create_app
from edge.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]
