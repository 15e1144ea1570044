"""The runtime on the simulated robot, armed, for tests that drive it (imported explicitly)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def armed_runtime(config, robot, link, camera, microphone) -> Iterator:
    """Start a Runtime on the simulated robot's link with these sensors, arm it, and stop everything after."""
    from edge.runtime import Runtime

    rt = Runtime(config, link=link, camera=camera, microphone=microphone).start()
    try:
        rt.actuator.request("arm")
        link.wait_for_telemetry(lambda t: t.armed, timeout_s=2.0)
        yield rt
    finally:
        rt.stop()
        robot.stop()
