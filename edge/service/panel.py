"""The control panel page and its JSON API: state, bundle metadata, the last utterance, and operator actions."""

from __future__ import annotations

import math

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from edge.contract.audio import SAMPLE_RATE_HZ
from edge.service.context import finite
from edge.service.context import runtime as _runtime
from edge.service.security import (
    SESSION_COOKIE,
    ApiError,
    rate_limited,
    require_csrf,
    require_read,
    require_token,
)
from edge.service.state import snapshot

bp = Blueprint("panel", __name__)

MAX_SAY_CHARS = 200
MAX_DRIVE_LINEAR_M_S = 0.3  # manual driving is slower than the policy's cruise
MAX_DRIVE_ANGULAR_RAD_S = 1.5


def bundle_summary(runtime) -> dict:
    bundle = runtime.bundle
    if bundle is None:
        return {}
    m = bundle.manifest
    runner = runtime.runner
    return {
        "name": bundle.path.name,
        "precision": getattr(runner, "precision", runtime.config.precision),
        "requested_precision": runtime.config.precision,
        "model": getattr(runner, "model_note", None),
        "backend": runtime.config.backend,
        "intents": list(m.heads.intent_labels),
        "command_threshold": m.heads.command_threshold,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in m.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in m.outputs],
        "files": [{"path": f.path, "precision": f.precision, "runtime": f.runtime, "sha256": f.sha256}
                  for f in m.files],
        "engines": list(m.engines),
        "provenance": {k: m.provenance.get(k) for k in ("checkpoint", "checkpoint_sha256", "git_commit", "versions",
                                                         "created_unix_s")},
        "gate": ((m.provenance.get("calibration") or {}).get("kept_float_for_accuracy")),
    }


@bp.get("/")
def page():
    runtime = _runtime()
    return render_template("panel.html", csrf_token=current_app.config["CSRF_TOKEN"], bundle=bundle_summary(runtime),
                           sim=runtime.can_say, version="0.1.0",
                           estop_port=current_app.config.get("ESTOP_PORT") or "",
                           read_auth="on" if current_app.config["VOXEDGE"].read_auth_on else "off")


@bp.get("/api/state")
@require_read
def state():
    from edge.service import streams

    snap = snapshot(_runtime())
    snap["service"] = streams.counts()
    return jsonify(finite(snap))


@bp.get("/api/bundle")
@require_read
def bundle():
    return jsonify(finite(bundle_summary(_runtime())))


@bp.get("/api/utterance.wav")
@require_read
def utterance():
    from edge.samples import encode_wav

    u = getattr(_runtime(), "last_utterance", None)
    if u is None:
        raise ApiError(404, "no utterance heard yet")
    return Response(encode_wav(u.audio, SAMPLE_RATE_HZ), mimetype="audio/wav",
                    headers={"Content-Disposition": "inline; filename=utterance.wav"})


@bp.post("/api/estop")
def estop():
    # No token, no CSRF header: the e-stop must work for anyone at the panel, always.
    _runtime().estop(request.remote_addr)
    return jsonify(ok=True)


@bp.post("/api/session")
@require_token
@rate_limited("motion")
def open_session():
    """Trade the operator token for a session cookie: the live view and the event stream (an <img> and an
    EventSource, which cannot send the token) then work where reading needs it."""
    sid = current_app.config["SESSIONS"].new()
    response = jsonify(ok=True, read_auth=current_app.config["VOXEDGE"].read_auth_on)
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
    return response


@bp.delete("/api/session")
def close_session():
    current_app.config["SESSIONS"].end(request.cookies.get(SESSION_COOKIE))
    response = jsonify(ok=True)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@bp.post("/api/arm")
@require_token
@require_csrf
@rate_limited("motion")
def arm():
    _runtime().arm(request.remote_addr)
    return jsonify(ok=True)


@bp.post("/api/disarm")
@require_token
@require_csrf
def disarm():
    _runtime().disarm(request.remote_addr)
    return jsonify(ok=True)


@bp.post("/api/clear-failsafe")
@require_token
@require_csrf
@rate_limited("motion")
def clear_failsafe():
    _runtime().clear_failsafe(request.remote_addr)
    return jsonify(ok=True)


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object body with Content-Type: application/json")
    return body


def _number(body: dict, key: str, limit: float) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{key!r} must be a finite number, got {value!r}")
    if abs(value) > limit:
        raise ApiError(400, f"{key!r}={value} is beyond the manual-driving limit of {limit}")
    return float(value)


@bp.post("/api/drive")
@require_token
@require_csrf
@rate_limited("motion")
def drive():
    body = _json_body()
    v = _number(body, "linear_m_s", MAX_DRIVE_LINEAR_M_S)
    w = _number(body, "angular_rad_s", MAX_DRIVE_ANGULAR_RAD_S)
    _runtime().drive(v, w)
    return jsonify(ok=True, deadman_s=0.5)


@bp.post("/api/say")
@require_token
@require_csrf
@rate_limited("say")
def say():
    if not _runtime().can_say:  # before reading the body: the same answer for every request
        raise ApiError(409, "the say box needs the simulated microphone (voxedge serve --sim or make demo)")
    text = _json_body().get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_SAY_CHARS:
        raise ApiError(400, f"'text' must be 1 to {MAX_SAY_CHARS} characters, e.g. \"go to the red ball\"")
    if any(not (c.isprintable() or c == " ") for c in text):
        raise ApiError(400, "'text' may hold printable characters only")
    return jsonify(ok=True, t_start=_runtime().say(text.strip()))
