"""``GET /metrics`` in the Prometheus text format (prometheus-client).

Request counts and durations are measured per endpoint; inference time per
stage is a histogram fed by every decision; everything else (queue drops,
VAD and endpointer counts, link statistics, camera and microphone health,
alerts) is read from the runtime's snapshot at scrape time, so the figures
are never stale and nothing is counted twice. Each app has its own registry.
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Response, current_app, g

from edge.service.security import require_read
from edge.service.state import snapshot

bp = Blueprint("metrics", __name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _RuntimeCollector:
    """Reads the runtime's snapshot when Prometheus scrapes."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            snap = snapshot(self.runtime)
        except Exception:  # the runtime is starting or stopping: export nothing rather than fail the scrape
            return

        def gauge(name, doc, value):
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)) and math.isfinite(value):
                yield GaugeMetricFamily(f"voxedge_{name}", doc, value=float(value))

        def counter(name, doc, value):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                yield CounterMetricFamily(f"voxedge_{name}", doc, value=float(value))

        inf = snap.get("inference") or {}
        yield from counter("decisions", "utterances decided", inf.get("decisions"))
        yield from counter("inference_errors", "utterances the pipeline failed on", inf.get("errors"))
        yield from counter("utterance_queue_drops", "utterances replaced before they were decided",
                           inf.get("dropped_utterances"))
        vad = snap.get("vad") or {}
        yield from counter("vad_utterances", "utterances cut by the endpointer", vad.get("utterances"))
        yield from counter("vad_rejected_short", "speech bursts below the minimum length", vad.get("rejected_short"))
        yield from counter("vad_forced_ends", "utterances cut at the maximum length", vad.get("forced_ends"))
        yield from gauge("vad_speaking", "1 while speech is heard", vad.get("speaking"))
        mic = snap.get("microphone") or {}
        yield from gauge("mic_level_dbfs", "microphone level over the last 100 ms", mic.get("level_dbfs"))
        yield from counter("mic_input_overflows", "audio blocks the device dropped", mic.get("input_overflows"))
        cam = snap.get("camera") or {}
        yield from gauge("camera_fps", "frames per second delivered", cam.get("fps"))
        yield from gauge("camera_frame_age_seconds", "age of the newest frame", cam.get("latest_age_s"))
        yield from gauge("camera_frozen", "1 while the picture does not change", cam.get("frozen"))
        yield from gauge("camera_missing", "1 while no frames arrive", cam.get("missing"))
        yield from counter("camera_reconnects", "camera reopenings", cam.get("reconnects"))
        yield from gauge("estopped", "1 while the e-stop is latched", snap.get("estopped"))
        yield from gauge("first_motion_latency_seconds", "end of speech to the first motion of the last command",
                         snap.get("first_motion_latency_s"))
        link = snap.get("link") or {}
        yield from gauge("link_connected", "1 while the serial link is up", link.get("connected"))
        for key, value in (link.get("stats") or {}).items():
            if key == "connected":
                continue
            if key.startswith("rtt_"):
                yield from gauge(f"link_{key}", f"link {key.replace('_', ' ')}", value)
            else:
                yield from counter(f"link_{key}", f"link {key.replace('_', ' ')}", value)
        audit = snap.get("audit") or {}
        yield from gauge("audit_samples", "samples in the audit log", audit.get("samples"))
        if audit.get("unrecorded"):
            family = CounterMetricFamily("voxedge_audit_unrecorded", "decisions the audit log did not record",
                                         labels=["reason"])
            for reason, n in audit["unrecorded"].items():
                family.add_metric([reason], float(n))
            yield family
        yield from counter("audit_write_errors", "audit log write errors (see the state API's last_error)",
                           audit.get("errors"))
        yield from gauge("audit_free_bytes", "free bytes on the audit log's disk", audit.get("free_bytes"))
        yield from gauge("audit_reserve_bytes", "the audit log stops recording below this much free disk",
                         audit.get("reserve_bytes"))
        yield from counter("alerts", "alerts raised", getattr(self.runtime, "alert_count", None))
        health = snap.get("health") or {}
        if health:
            family = GaugeMetricFamily("voxedge_health_problem", "1 while a component has a problem (see alerts)",
                                       labels=["component"])
            for component, problem in health.items():
                family.add_metric([component], 1.0 if problem else 0.0)
            yield family


def init_app(app) -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    runtime = app.config["RUNTIME"]
    stage = Histogram("voxedge_inference_stage_seconds", "time per pipeline stage of each decision", ["stage", "kind"],
                      registry=registry, buckets=LATENCY_BUCKETS_S)
    app.extensions["voxedge_metrics"] = {
        "registry": registry,
        "requests": Counter("voxedge_http_requests", "HTTP requests", ["endpoint", "method", "status"],
                            registry=registry),
        "duration": Histogram("voxedge_http_request_duration_seconds", "HTTP request duration (streams excluded)",
                              ["endpoint", "method"], registry=registry, buckets=LATENCY_BUCKETS_S),
        "stage": stage,
    }
    registry.register(_RuntimeCollector(runtime))
    add = getattr(runtime, "add_decision_listener", None)
    if add is not None:
        def observe_decision(decision):
            for name, ms in decision.latency_ms.items():
                stage.labels(stage=name, kind=decision.kind).observe(ms / 1e3)

        add(observe_decision)


# Label values come from fixed sets: a client choosing methods or paths must not create series (3000 made-up
# methods once grew /metrics to 15 MB). Endpoints are the app's URL rules; anything else is "unmatched".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def observe(request, response) -> None:
    m = current_app.extensions.get("voxedge_metrics")
    if m is None:
        return
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    method = request.method if request.method in KNOWN_METHODS else "other"
    status = response.status_code if 100 <= response.status_code <= 599 else 0
    m["requests"].labels(endpoint, method, str(status)).inc()
    if not response.is_streamed and "t0" in g:
        m["duration"].labels(endpoint, method).observe(time.perf_counter() - g.t0)


@bp.get("/metrics")
@require_read
def metrics():
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(current_app.extensions["voxedge_metrics"]["registry"]),
                    mimetype=CONTENT_TYPE_LATEST.split(";")[0], headers={"Content-Type": CONTENT_TYPE_LATEST})
