"""The OpenAPI 3.1 document of the service, at ``GET /openapi.json``."""

from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("openapi", __name__)

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OK = {"description": "done", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ok"}}}}
_AUTH = [{"bearer": []}]


def _errors(*codes: int) -> dict:
    return {str(c): _ERROR for c in codes}


def _op(summary: str, responses: dict, security=None, body=None, tags=("robot",), params=None) -> dict:
    op = {"summary": summary, "tags": list(tags), "responses": responses}
    if security is not None:
        op["security"] = security
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_CSRF = {"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "the token in the panel page's csrf-token meta tag"}
_MODEL = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "voxedge robot API", "version": "0.1.0",
             "description": "Inference (seed-compatible /predict and the Open Inference Protocol v2 with the binary "
                            "tensor extension), robot control for the panel, metrics. Errors are JSON "
                            "{\"error\": \"...\"}. Arming and motion need the operator's bearer token; e-stop "
                            "needs nothing."},
    "paths": {
        "/": {"get": _op("the control panel (HTML)", {"200": {"description": "text/html"}}, tags=("panel",))},
        "/predict": {"post": _op(
            "decide on one camera image (and an optional WAV; else the microphone's last 2 s)",
            {"200": {"description": "the decision and timings",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}}},
             **_errors(400, 413, 429, 503)},
            body={"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary", "description": "PNG or JPEG"},
                               "audio": {"type": "string", "format": "binary", "description": "PCM WAV, any rate"}}}}}},
            tags=("inference",))},
        "/v2": {"get": _op("server metadata", {"200": {"description": "name, version, extensions"}},
                           tags=("inference",))},
        "/v2/health/live": {"get": _op("liveness", {"200": {"description": "live"}}, tags=("inference",))},
        "/v2/health/ready": {"get": _op("readiness", {"200": {"description": "ready"}, **_errors(503)},
                                        tags=("inference",))},
        "/v2/models/{name}": {"get": _op("model metadata (inputs, outputs)", {"200": {"description": "metadata"},
                                                                              **_errors(404)},
                                         params=_MODEL, tags=("inference",))},
        "/v2/models/{name}/ready": {"get": _op("model readiness", {"200": {"description": "ready"},
                                                                   **_errors(404, 503)},
                                               params=_MODEL, tags=("inference",))},
        "/v2/models/{name}/config": {"get": _op(
            "the model's Triton configuration (the ModelConfig message as JSON: platform, max_batch_size, inputs, "
            "outputs, instance groups)", {"200": {"description": "ModelConfig"}, **_errors(404, 503)},
            params=_MODEL, tags=("inference",))},
        "/v2/models/{name}/stats": {"get": _op(
            "inference statistics of the model (Triton's statistics extension: counts and nanoseconds of "
            "successes, failures, queueing and compute, per batch size)",
            {"200": {"description": "{\"model_stats\": [...]}"}, **_errors(401, 404)},
            params=_MODEL, tags=("inference",))},
        "/v2/models/stats": {"get": _op(
            "inference statistics of every model (this robot serves one)",
            {"200": {"description": "{\"model_stats\": [...]}"}, **_errors(401)}, tags=("inference",))},
        "/v2/repository/index": {"post": _op(
            "the model repository index (Triton's repository extension): name, version, state, reason of each "
            "model; {\"ready\": true} lists only the ready ones",
            {"200": {"description": "a list of {name, version, state, reason}"}, **_errors(400)},
            tags=("inference",),
            body={"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ready": {"type": "boolean"}}}}}})},
        "/v2/models/{name}/infer": {"post": _op(
            "Open Inference Protocol inference; JSON tensors, or a JSON header of Inference-Header-Content-Length "
            "bytes followed by binary tensors",
            {"200": {"description": "outputs (JSON, or JSON header + binary tensors)"}, **_errors(400, 404, 413, 429,
                                                                                                  503)},
            params=_MODEL, tags=("inference",),
            body={"required": True, "content": {"application/json": {"schema": {"type": "object"}},
                                                "application/octet-stream": {"schema": {"type": "string",
                                                                                        "format": "binary"}}}})},
        "/api/state": {"get": _op("runtime snapshot for the panel", {"200": {"description": "state"}})},
        "/api/events": {"get": _op("decisions, outcomes and alerts as Server-Sent Events",
                                   {"200": {"description": "text/event-stream"}, **_errors(503)})},
        "/api/bundle": {"get": _op("bundle and engine metadata", {"200": {"description": "metadata"}})},
        "/api/utterance.wav": {"get": _op("the last utterance heard", {"200": {"description": "audio/wav"},
                                                                       **_errors(404)})},
        "/stream.mjpg": {"get": _op("live view (MJPEG) with attention and target overlaid",
                                    {"200": {"description": "multipart/x-mixed-replace"}, **_errors(503)})},
        "/api/estop": {"post": _op("emergency stop (no token needed); also served on the e-stop port, which busy "
                                   "clients of this port cannot block", {"200": _OK, **_errors(503)})},
        "/api/session": {
            "post": _op("trade the operator token for a session cookie (the live view and event stream need it "
                        "where viewing needs the token)", {"200": _OK, **_errors(401, 429)}, _AUTH),
            "delete": _op("end the session", {"200": _OK})},
        "/api/arm": {"post": _op("arm the robot", {"200": _OK, **_errors(401, 403, 409, 429)}, _AUTH,
                                 params=[_CSRF])},
        "/api/disarm": {"post": _op("disarm the robot", {"200": _OK, **_errors(401, 403)}, _AUTH, params=[_CSRF])},
        "/api/clear-failsafe": {"post": _op("clear a failsafe or e-stop (the robot stays disarmed)",
                                            {"200": _OK, **_errors(401, 403, 429)}, _AUTH, params=[_CSRF])},
        "/api/drive": {"post": _op(
            "hold-to-move manual driving: repeat every 100 ms while held; stops 500 ms after the last",
            {"200": _OK, **_errors(400, 401, 403, 409, 429)}, _AUTH, params=[_CSRF],
            body=_json_body({"type": "object", "required": ["linear_m_s", "angular_rad_s"],
                             "properties": {"linear_m_s": {"type": "number", "minimum": -0.3, "maximum": 0.3},
                                            "angular_rad_s": {"type": "number", "minimum": -1.5, "maximum": 1.5}}}))},
        "/api/say": {"post": _op(
            "speak a command into the simulated microphone", {"200": _OK, **_errors(400, 401, 403, 409, 429)},
            _AUTH, params=[_CSRF],
            body=_json_body({"type": "object", "required": ["text"],
                             "properties": {"text": {"type": "string", "maxLength": 200}}}))},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "text/plain; version=0.0.4"}},
                                tags=("operations",))},
        "/openapi.json": {"get": _op("this document", {"200": {"description": "OpenAPI 3.1"}}, tags=("operations",))},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Ok": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
            "Prediction": {"type": "object", "properties": {
                "intent": {"type": "string"}, "model_intent": {"type": "string"},
                "confidence": {"type": "number"}, "accepted": {"type": "boolean"},
                "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
                "target_xy": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                "presence": {"type": "number"}, "audio_source": {"type": "string"},
                "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}}}},
        },
    },
}


@bp.get("/openapi.json")
def document():
    return jsonify(DOCUMENT)
