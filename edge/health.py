"""Health rules: each component's problem now, in words an operator can act on, or None.

The runtime runs ``HealthRules.check`` every ``HEALTH_PERIOD_S`` in the actuator thread; each problem
becomes one alert (``edge.alerts``), and the problems of ``HOLDING_COMPONENTS`` hold the robot still.
The rules read the components' own statistics and never block.
"""

from __future__ import annotations

from edge.contract.audio import SAMPLE_RATE_HZ

HEALTH_PERIOD_S = 0.2  # how often the health checks run (in the actuator thread, between ticks' work)
# Problems of these components hold the robot still (policy.hold): it must not drive on a picture that
# stopped, went dark or is late, nor when it cannot hear (a "stop" would go unheard) or cannot decide.
HOLDING_COMPONENTS = ("camera", "microphone", "inference")
SILENT_DBFS = -75.0  # a microphone quieter than this ...
SILENT_FOR_S = 5.0  # ... for this long is reported silent (unplugged, muted)
CLIP_LEVEL = 0.999  # |sample| at or above this is clipped
CLIP_FRACTION = 0.001  # more than this share of clipped samples in the last second: "clipping"
STALL_S = 0.5  # inference busy on one request longer than this: stalled (the robot is held still)
TELEMETRY_STALE_S = 0.5  # no telemetry for this long: the link is down


def camera_problem(stats) -> str | None:
    """From ``Camera.stats()``."""
    if stats.failed:
        return "camera failed" + (f": {stats.last_error}" if stats.last_error else "") + \
            " (the robot is held still; check the camera and restart the service)"
    if stats.missing:
        age = f"for {stats.latest_age_s:.1f} s" if stats.latest_age_s is not None else "yet"
        return f"camera: no frames {age} (the robot is held still; check the cable or source)" + \
            (f"; last error: {stats.last_error}" if stats.last_error else "")
    if stats.frozen:
        return "camera frozen: the picture does not change (the robot is held still)"
    if stats.dark:
        return "camera dark: the picture is black (lens covered or no light; the robot is held still)"
    return None


def inference_problem(stalled_s: float) -> str | None:
    """From ``InferenceWorker.stalled_for(now)``."""
    return f"inference stalled for {stalled_s:.1f} s (the robot is held still)" if stalled_s > STALL_S else None


def link_problem(link) -> str | None:
    """From the link's connection state and its newest telemetry."""
    tel = getattr(link, "telemetry", None)
    if not getattr(link, "is_connected", True):
        return "robot link down (reconnecting; the robot stays disarmed after it returns)"
    if tel is not None and tel.age_s > TELEMETRY_STALE_S:
        return f"no telemetry from the robot for {tel.age_s:.1f} s"
    if tel is not None and tel.state.name in ("FAILSAFE", "ESTOP"):
        return f"robot in {tel.state.name} ({tel.reason.name}): clear it, then arm"
    return None


class HealthRules:
    """The rules, with the little state they keep (how long the microphone has been silent)."""

    def __init__(self) -> None:
        self._silent_since: float | None = None

    def microphone_problem(self, ring, now: float) -> str | None:
        """From the microphone's ring: silent for ``SILENT_FOR_S``, or clipping in the last second."""
        level = ring.level_dbfs(0.1)
        if level < SILENT_DBFS:
            self._silent_since = self._silent_since or now
            if now - self._silent_since >= SILENT_FOR_S:
                return f"microphone silent ({level:.0f} dBFS for {now - self._silent_since:.0f} s): check it is " \
                       "plugged in and not muted"
        else:
            self._silent_since = None
        n = min(SAMPLE_RATE_HZ, ring.end_index - ring.oldest_index)  # the last second
        if n > 0:
            clipped = float((abs(ring.latest(n)) >= CLIP_LEVEL).mean())
            if clipped > CLIP_FRACTION:
                return f"microphone clipping ({100 * clipped:.1f} % of samples at full scale): lower the input gain"
        return None

    def check(self, now: float, camera, microphone, worker, link, audit_problem=None, audit_on=False) -> dict:
        """Each component's problem now (None when healthy); ``audit`` only when an audit log is configured."""
        problems: dict[str, str | None] = {
            "camera": camera_problem(camera.stats()),
            "microphone": self.microphone_problem(microphone.ring, now),
            "inference": inference_problem(worker.stalled_for(now)),
            "link": link_problem(link),
        }
        if audit_on:
            problems["audit"] = audit_problem
        return problems
