"""``GET /metrics`` in the Prometheus text format (prometheus-client), named after Prometheus' conventions.

Request counts and durations are measured per endpoint; inference time per
stage is a histogram fed by every decision; everything else (queue drops,
VAD and endpointer counts, link statistics, camera and microphone health,
alerts) is read from the runtime's snapshot at scrape time, so the figures
are never stale and nothing is counted twice. Each app has its own registry,
with the ``process_*`` and ``python_*`` collectors and ``voxedge_build_info``.

Names follow https://prometheus.io/docs/practices/naming/: one ``voxedge_``
prefix, base units spelled out at the end (``_seconds``, ``_bytes``,
``_volts``), counters ending in ``_total``, latencies as histograms where every
sample passes through the service or is counted into buckets where it is
measured (the link's round-trip time: ``voxedge_link_rtt_seconds``).
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Response, current_app, g

from edge.service.security import require_read
from edge.service.state import snapshot

bp = Blueprint("metrics", __name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FIRST_MOTION_BUCKETS_S = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)  # the demo measures p50 ~0.6 s

# The link's statistics (firmware_bridge's LinkStats.as_dict()) that are not plain counters: exported by name here.
# Every other numeric key is a cumulative count, exported as voxedge_link_<key>_total (``link_`` not repeated).
_LINK_SPECIAL = frozenset({"connected", "rtt_last_s", "rtt_p50_s", "rtt_p99_s", "rtt_samples", "rtt_count",
                           "rtt_sum_s", "rtt_buckets"})


def link_counter_name(key: str) -> str:
    """``voxedge_link_<key>`` for a counter of the link's statistics, without the stutter (``link_losses`` ->
    ``voxedge_link_losses``; the exposition adds ``_total``) and with seconds spelled out."""
    name = key[len("link_"):] if key.startswith("link_") else key
    if name.endswith("_s"):
        name = name[:-2] + "_seconds"
    return f"voxedge_link_{name}"


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


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
            value = _number(value)
            if value is not None:
                yield GaugeMetricFamily(f"voxedge_{name}", doc, value=value)

        def counter(name, doc, value):
            if not isinstance(value, bool):
                value = _number(value)
                if value is not None:
                    yield CounterMetricFamily(f"voxedge_{name}", doc, value=value)

        inf = snap.get("inference") or {}
        yield from counter("decisions_total", "utterances decided", inf.get("decisions"))
        yield from counter("inference_errors_total", "utterances the pipeline failed on", inf.get("errors"))
        yield from counter("utterance_queue_drops_total", "utterances replaced before they were decided",
                           inf.get("dropped_utterances"))
        vad = snap.get("vad") or {}
        yield from counter("vad_utterances_total", "utterances cut by the endpointer", vad.get("utterances"))
        yield from counter("vad_rejected_short_total", "speech bursts below the minimum length",
                           vad.get("rejected_short"))
        yield from counter("vad_forced_ends_total", "utterances cut at the maximum length", vad.get("forced_ends"))
        yield from gauge("vad_speaking", "1 while speech is heard", vad.get("speaking"))
        mic = snap.get("microphone") or {}
        # decibels relative to full scale have no base unit to convert to: the unit stays in the name
        yield from gauge("mic_level_dbfs", "microphone RMS level over the last 100 ms, dBFS", mic.get("level_dbfs"))
        yield from counter("mic_input_overflows_total", "audio blocks the device dropped", mic.get("input_overflows"))
        cam = snap.get("camera") or {}
        yield from counter("camera_frames_total", "frames delivered by the camera", cam.get("frames"))
        yield from gauge("camera_frames_per_second", "frames per second delivered (recent average)", cam.get("fps"))
        yield from gauge("camera_frame_age_seconds", "age of the newest frame", cam.get("latest_age_s"))
        yield from gauge("camera_frozen", "1 while the picture does not change", cam.get("frozen"))
        yield from gauge("camera_missing", "1 while no frames arrive", cam.get("missing"))
        yield from counter("camera_reconnects_total", "camera reopenings", cam.get("reconnects"))
        yield from gauge("estopped", "1 while the e-stop is latched", snap.get("estopped"))
        link = snap.get("link") or {}
        yield from gauge("link_connected", "1 while the serial link is up", link.get("connected"))
        yield from self._link_stats(link.get("stats") or {})
        telemetry = link.get("telemetry") or {}
        yield from gauge("battery_volts", "battery voltage in the MCU's latest telemetry", telemetry.get("battery_v"))
        yield from gauge("link_telemetry_age_seconds", "age of the MCU's latest telemetry", telemetry.get("age_s"))
        audit = snap.get("audit") or {}
        yield from gauge("audit_samples", "samples in the audit log", audit.get("samples"))
        if audit.get("unrecorded"):
            family = CounterMetricFamily("voxedge_audit_unrecorded_total", "decisions the audit log did not record",
                                         labels=["reason"])
            for reason, n in audit["unrecorded"].items():
                family.add_metric([reason], float(n))
            yield family
        yield from counter("audit_write_errors_total", "audit log write errors (see the state API's last_error)",
                           audit.get("errors"))
        yield from gauge("audit_free_bytes", "free bytes on the audit log's disk", audit.get("free_bytes"))
        yield from gauge("audit_reserve_bytes", "the audit log stops recording below this much free disk",
                         audit.get("reserve_bytes"))
        yield from counter("alerts_total", "alerts raised", getattr(self.runtime, "alert_count", None))
        health = snap.get("health") or {}
        if health:
            family = GaugeMetricFamily("voxedge_health_problem", "1 while a component has a problem (see alerts)",
                                       labels=["component"])
            for component, problem in health.items():
                family.add_metric([component], 1.0 if problem else 0.0)
            yield family

    @staticmethod
    def _link_stats(stats: dict):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        if not stats:
            return
        last = _number(stats.get("rtt_last_s"))
        if last is not None:
            yield GaugeMetricFamily("voxedge_link_rtt_last_seconds", "the link's latest round-trip time",
                                    value=last)
        count, total, buckets = _number(stats.get("rtt_count")), _number(stats.get("rtt_sum_s")), \
            stats.get("rtt_buckets")
        if count is not None and total is not None and buckets is not None:
            from firmware_bridge.values import RTT_BUCKETS_S

            yield HistogramMetricFamily(
                "voxedge_link_rtt_seconds", "round-trip time of the serial link (host -> MCU -> host)",
                buckets=[*((f"{le:g}", n) for le, n in zip(RTT_BUCKETS_S, buckets)), ("+Inf", count)],
                sum_value=total)
        for key, value in stats.items():
            if key in _LINK_SPECIAL or isinstance(value, bool):
                continue
            value = _number(value)
            if value is not None:
                doc = f"link {key.replace('_', ' ')} (cumulative)"
                yield CounterMetricFamily(link_counter_name(key), doc, value=value)


class _BuildInfoCollector:
    """``voxedge_build_info{bundle_sha256, precision, backend, version} 1``: what is running.

    ``bundle_sha256`` is the sha256 of the model file the runner loaded, as the bundle's manifest lists it (the
    file itself is hashed, once, only when the manifest does not list it); empty before the runtime has a runner.
    ``precision`` is the precision that runs (``--precision auto`` resolved), ``backend`` the runtime's.
    """

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self._hashed: dict[tuple, str] = {}

    def _model_sha256(self) -> str:
        runner = getattr(self.runtime, "runner", None)
        bundle = getattr(self.runtime, "bundle", None)
        path = getattr(runner, "model_path", None)
        if path is None:
            return ""
        if bundle is not None:
            for f in bundle.manifest.files:
                if (bundle.path / f.path) == path:
                    return f.sha256
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except (OSError, AttributeError):
            return ""
        if key not in self._hashed:
            from edge.bundle import sha256_file

            self._hashed[key] = sha256_file(path)
        return self._hashed[key]

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from edge import __version__

        runtime = self.runtime
        config = getattr(runtime, "config", None)
        runner = getattr(runtime, "runner", None)
        try:
            sha = self._model_sha256()
        except Exception:  # a bundle being replaced: say so rather than fail the scrape
            sha = ""
        precision = getattr(runner, "precision", None) or getattr(config, "precision", None) or ""
        backend = getattr(config, "backend", None) or getattr(runner, "backend", None) or ""
        family = GaugeMetricFamily("voxedge_build_info", "what runs: the model file's sha256, its precision, the "
                                   "inference backend and voxedge's version (always 1)",
                                   labels=["bundle_sha256", "precision", "backend", "version"])
        family.add_metric([sha, str(precision), str(backend), __version__], 1.0)
        yield family


def init_app(app) -> None:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        GCCollector,
        Histogram,
        PlatformCollector,
        ProcessCollector,
    )

    registry = CollectorRegistry()  # one per app: the tests make many apps in one process
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    PlatformCollector(registry=registry)  # python_info
    GCCollector(registry=registry)  # python_gc_*
    runtime = app.config["RUNTIME"]
    stage = Histogram("voxedge_inference_stage_seconds", "time per pipeline stage of each decision", ["stage", "kind"],
                      registry=registry, buckets=LATENCY_BUCKETS_S)
    app.extensions["voxedge_metrics"] = {
        "registry": registry,
        "requests": Counter("voxedge_http_requests_total", "HTTP requests", ["endpoint", "method", "status"],
                            registry=registry),
        "duration": Histogram("voxedge_http_request_duration_seconds", "HTTP request duration (streams excluded)",
                              ["endpoint", "method"], registry=registry, buckets=LATENCY_BUCKETS_S),
        "stage": stage,
    }
    registry.register(_RuntimeCollector(runtime))
    registry.register(_BuildInfoCollector(runtime))
    add = getattr(runtime, "add_decision_listener", None)
    if add is not None:
        def observe_decision(decision):
            for name, ms in decision.latency_ms.items():
                stage.labels(stage=name, kind=decision.kind).observe(ms / 1e3)

        add(observe_decision)
    add_motion = getattr(runtime, "add_motion_listener", None)
    if add_motion is not None:
        first_motion = Histogram("voxedge_first_motion_latency_seconds",
                                 "end of a spoken command to the robot's first motion", registry=registry,
                                 buckets=FIRST_MOTION_BUCKETS_S)
        add_motion(first_motion.observe)


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
