"""The robot's state as the panel, the API and the metrics show it: ``Runtime.status()`` made JSON-ready.

The runtime reports its components typed (``edge.runtime.RuntimeStatus``); how
that reads on the wire (field names, the telemetry's enums as names) is the
service's business, kept here.
"""

from __future__ import annotations

from dataclasses import asdict


def snapshot(runtime) -> dict:
    """``GET /api/state``'s body (without the service's own counts)."""
    return state_json(runtime.status())


def state_json(s) -> dict:
    a = s.actuator
    return {
        "uptime_s": s.uptime_s,
        "camera": asdict(s.camera) if s.camera else None,
        "microphone": asdict(s.microphone) if s.microphone else None,
        "vad": asdict(s.vad) if s.vad else None,
        "decision": s.decision.summary() if s.decision else None,
        "activity": asdict(a.activity) if a else None,
        "setpoint": asdict(a.setpoint) if a else None,
        "setpoint_source": a.source if a else None,
        "estopped": a.estopped if a else False,
        "first_motion_latency_s": a.first_motion_latency_s if a else None,
        "link": {"connected": a.link_connected if a else False,
                 "stats": s.link_stats.as_dict() if s.link_stats else None,
                 "telemetry": telemetry_json(a.telemetry if a else None)},
        "inference": asdict(s.inference),
        "audit": s.audit,
        "health": dict(s.health),
        "alerts": list(s.alerts),
    }


def telemetry_json(t) -> dict | None:
    if t is None:
        return None
    return {"x_m": t.x_m, "y_m": t.y_m, "theta_rad": t.theta_rad, "battery_v": t.battery_v,
            "state": t.state.name, "reason": t.reason.name, "gripper": t.gripper.name,
            "wheel_left_m_s": t.wheel_left_m_s, "wheel_right_m_s": t.wheel_right_m_s, "age_s": t.age_s}
