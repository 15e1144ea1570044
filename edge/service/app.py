"""The Flask application factory: blueprints per concern, the runtime injected, JSON errors everywhere."""

from __future__ import annotations

import time

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from edge.runtime import NotRunningError, RefusedError
from edge.service.config import ServiceConfig
from edge.service.security import (
    CSP,
    SECURITY_HEADERS,
    ApiError,
    RateLimiter,
    Sessions,
    host_allowed,
    host_name,
    local_host_names,
    new_csrf_token,
)


def create_app(runtime, config: ServiceConfig | None = None) -> Flask:
    """The service for ``runtime`` (an ``edge.runtime.Runtime`` or anything with its interface)."""
    from edge.service import inference, metrics, openapi, panel, streams

    config = config or ServiceConfig()
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        VOXEDGE=config,
        RUNTIME=runtime,
        MAX_CONTENT_LENGTH=config.max_upload_bytes,
        CSRF_TOKEN=new_csrf_token(),
        RATE_LIMITER=RateLimiter(),
        SESSIONS=Sessions(),
        ALLOWED_HOSTS=local_host_names(config.host) | set(config.allowed_hosts),
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    metrics.init_app(app)
    streams.init_app(app)
    for bp in (panel.bp, streams.bp, inference.bp, inference.v2, metrics.bp, openapi.bp):
        app.register_blueprint(bp)

    @app.before_request
    def _check_host():
        g.t0 = time.perf_counter()
        if not host_allowed(request.host, app.config["ALLOWED_HOSTS"]):
            raise ApiError(403, f"Host {request.host!r} is not this robot; use its address or name, or start the "
                                "service with --allowed-host NAME")

    @app.after_request
    def _headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        estop_port = app.config.get("ESTOP_PORT")
        if estop_port and response.mimetype == "text/html":
            # the panel may also call the e-stop listener: same host name, its own port
            origin = f"{request.scheme}://{host_name(request.host)}:{estop_port}"
            response.headers["Content-Security-Policy"] = CSP.replace("connect-src 'self'",
                                                                      f"connect-src 'self' {origin}")
        if request.path.startswith(("/api/", "/v2", "/predict", "/metrics")) or response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")  # the panel's HTML carries the CSRF token
        metrics.observe(request, response)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = jsonify(error=exc.message)
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(NotRunningError)
    def _not_running(exc: NotRunningError):
        return _api_error(ApiError(503, str(exc), {"Retry-After": "1"}))

    @app.errorhandler(RefusedError)
    def _refused(exc: RefusedError):
        return _api_error(ApiError(409, str(exc)))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            404: f"no such endpoint: {request.method} {request.path} (the API is described at /openapi.json)",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body larger than {config.max_upload_bytes} bytes; send a smaller image or shorter audio",
        }
        response = jsonify(error=messages.get(exc.code, exc.description or exc.name))
        response.status_code = exc.code or 500
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):  # never a stack trace or an HTML page to a client
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        response = jsonify(error=f"internal error ({type(exc).__name__}); the robot log has the details")
        response.status_code = 500
        return response

    return app
