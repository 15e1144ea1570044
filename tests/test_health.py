"""Health rules (edge.health) on stand-ins for the components' statistics: the words and the thresholds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edge.health import (
    SILENT_FOR_S,
    TELEMETRY_STALE_S,
    HealthRules,
    camera_problem,
    inference_problem,
    link_problem,
)
from edge.sensors.audio_ring import AudioRing


def _cam(**kw):
    base = dict(failed=False, missing=False, frozen=False, dark=False, last_error=None, latest_age_s=0.1)
    return SimpleNamespace(**{**base, **kw})


def test_camera_problems_name_the_fault_and_that_the_robot_is_held():
    assert camera_problem(_cam()) is None
    assert "camera failed: gone" in camera_problem(_cam(failed=True, last_error="gone"))
    assert "no frames for 2.0 s" in camera_problem(_cam(missing=True, latest_age_s=2.0))
    assert "frozen" in camera_problem(_cam(frozen=True)) and "dark" in camera_problem(_cam(dark=True))
    assert all("held still" in camera_problem(_cam(**{k: True})) for k in ("failed", "missing", "frozen", "dark"))


def test_a_silent_microphone_is_reported_after_its_grace_period_and_clipping_at_once():
    ring = AudioRing(capacity_s=5.0)
    ring.write(np.zeros(16000, np.float32), t_end=1.0)
    rules = HealthRules()
    assert rules.microphone_problem(ring, now=100.0) is None  # silent, not yet for long
    assert "microphone silent" in rules.microphone_problem(ring, now=100.0 + SILENT_FOR_S)
    loud = np.full(16000, 0.2, np.float32)
    loud[:100] = 1.0
    ring.write(loud, t_end=2.0)
    assert "microphone clipping (0.6 %" in rules.microphone_problem(ring, now=200.0)


def test_inference_and_link_problems():
    assert inference_problem(0.2) is None and "stalled for 0.9 s" in inference_problem(0.9)
    state = SimpleNamespace(name="ARMED")
    assert link_problem(SimpleNamespace(is_connected=False, telemetry=None)).startswith("robot link down")
    stale = SimpleNamespace(age_s=TELEMETRY_STALE_S + 0.1, state=state, reason=None)
    assert "no telemetry" in link_problem(SimpleNamespace(is_connected=True, telemetry=stale))
    estop = SimpleNamespace(age_s=0.0, state=SimpleNamespace(name="ESTOP"), reason=SimpleNamespace(name="HOST"))
    assert link_problem(SimpleNamespace(is_connected=True, telemetry=estop)) == \
        "robot in ESTOP (HOST): clear it, then arm"
    fine = SimpleNamespace(age_s=0.0, state=state, reason=None)
    assert link_problem(SimpleNamespace(is_connected=True, telemetry=fine)) is None
