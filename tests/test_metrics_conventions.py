"""``/metrics`` follows Prometheus' naming conventions, scraped from the service on the simulated robot and read with
prometheus_client's own text parser.

https://prometheus.io/docs/practices/naming/: one application prefix, base units spelled out at the end of the name,
counters ending in ``_total``, no repeated words; latencies as histograms; the process and Python collectors; a
``_build_info`` gauge saying what runs.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import TOKEN, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

PREFIXES = ("voxedge_", "process_", "python_")
# Units that are not base units (or are abbreviated): seconds, bytes, volts, meters and ratios are spelled out.
NOT_BASE_UNITS = {"s", "ms", "us", "ns", "sec", "secs", "msec", "minutes", "hours", "kb", "mb", "gb", "kib", "mib",
                  "kbytes", "mbytes", "percent", "pct", "mv", "v", "m", "cm", "mm", "fps"}
PRECOMPUTED_QUANTILES = re.compile(r"^p\d{2,3}$")  # p50, p99: a summary's quantile label, not a name
TIME_WORDS = {"latency", "duration", "age", "rtt", "time", "uptime"}  # a time without _seconds is in some other unit
LATENCY_HISTOGRAMS = ("voxedge_http_request_duration_seconds", "voxedge_inference_stage_seconds")
BUILD_INFO_LABELS = {"bundle_sha256", "precision", "backend", "version"}


def convention_problems(text: str) -> list[str]:
    """What in a Prometheus text exposition breaks the naming conventions (empty: nothing)."""
    from prometheus_client.parser import text_string_to_metric_families

    problems = []
    for family in text_string_to_metric_families(text):
        name = family.name
        words = name.split("_")
        if not name.startswith(PREFIXES):
            problems.append(f"{name}: not prefixed with one of {PREFIXES}")
        if words[-1] in NOT_BASE_UNITS:
            problems.append(f"{name}: unit {words[-1]!r} is not a base unit spelled out (_seconds, _bytes, ...)")
        for word in words:
            if PRECOMPUTED_QUANTILES.match(word):
                problems.append(f"{name}: a precomputed quantile in the name ({word}); use a histogram or summary")
        repeated = [a for a, b in zip(words, words[1:]) if a == b]
        if repeated:
            problems.append(f"{name}: stutters ({'_'.join(repeated)}_{repeated[0]})")
        if TIME_WORDS & set(words) and family.type != "counter" and not (
                name.endswith("_seconds") or name.endswith("_created") or name.endswith("_samples")):
            problems.append(f"{name}: a time not in seconds")
        if family.type == "counter":
            for s in family.samples:
                if not s.name.endswith(("_total", "_created")):
                    problems.append(f"{name}: counter sample {s.name} does not end in _total")
        if family.type == "histogram" and family.samples:  # a labelled histogram has no samples before its first
            suffixes = {s.name[len(name):] for s in family.samples}
            if not {"_bucket", "_sum", "_count"} <= suffixes:
                problems.append(f"{name}: histogram without _bucket/_sum/_count ({sorted(suffixes)})")
    return problems


# -- the checker itself: it must catch what the old /metrics had ------------------------------------------

OLD_NAMES = """\
# HELP voxedge_link_rtt_p50_s link rtt p50 s
# TYPE voxedge_link_rtt_p50_s gauge
voxedge_link_rtt_p50_s 0.002
# HELP voxedge_link_link_losses link link losses
# TYPE voxedge_link_link_losses counter
voxedge_link_link_losses_total 1.0
# HELP voxedge_camera_fps frames per second delivered
# TYPE voxedge_camera_fps gauge
voxedge_camera_fps 30.0
# HELP voxedge_link_rtt_count link rtt count
# TYPE voxedge_link_rtt_count gauge
voxedge_link_rtt_count 12.0
# HELP robot_free_mb free disk
# TYPE robot_free_mb gauge
robot_free_mb 12.0
"""


def test_the_checker_catches_the_old_names():
    problems = convention_problems(OLD_NAMES)
    for expected in ("voxedge_link_rtt_p50_s: unit 's'", "voxedge_link_rtt_p50_s: a precomputed quantile",
                     "voxedge_link_link_losses: stutters", "voxedge_camera_fps: unit 'fps'",
                     "voxedge_link_rtt_count: a time not in seconds", "robot_free_mb: not prefixed",
                     "robot_free_mb: unit 'mb'"):
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert convention_problems("# TYPE voxedge_link_losses counter\nvoxedge_link_losses_total 1.0\n") == []


# -- the service's /metrics -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scraped(sim_runtime):  # noqa: F811
    from edge.service import ServiceConfig, create_app

    runtime, _ = sim_runtime
    app = create_app(runtime, ServiceConfig(token=TOKEN))
    app.testing = True
    c = app.test_client()
    create_app(runtime, ServiceConfig(token=TOKEN))  # a second app in the same process: its own registry
    image, audio = np.zeros((1, 120, 160, 3), np.uint8), np.zeros((1, 32000), np.float32)
    body = {"inputs": [
        {"name": "image", "shape": list(image.shape), "datatype": "UINT8", "data": image.ravel().tolist()},
        {"name": "audio", "shape": list(audio.shape), "datatype": "FP32", "data": audio.ravel().tolist()}]}
    assert c.post("/v2/models/voxedge/infer", json=body).status_code == 200
    assert c.get("/api/state").status_code == 200
    deadline = time.monotonic() + 10.0  # the actuator's setpoints are echoed: round trips are measured at 20 Hz
    while not (runtime.status().link_stats and runtime.status().link_stats.rtt_count) and time.monotonic() < deadline:
        time.sleep(0.05)
    r = c.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    return r.data.decode(), runtime


def _families(text):
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


@requires_gcc
def test_metrics_follow_the_naming_conventions(scraped):
    text, _ = scraped
    assert convention_problems(text) == []
    families = _families(text)
    for old in ("voxedge_link_rtt_p50_s", "voxedge_link_link_losses", "voxedge_camera_fps", "voxedge_link_rtt_count"):
        assert old not in families
    assert families["voxedge_link_losses"].type == "counter"
    for name in ("voxedge_decisions", "voxedge_http_requests", "voxedge_alerts", "voxedge_link_crc_errors"):
        assert families[name].type == "counter", name


@requires_gcc
def test_latencies_are_histograms_the_link_rtt_too(scraped):
    text, _ = scraped
    families = _families(text)
    for name in LATENCY_HISTOGRAMS:
        family = families[name]
        assert family.type == "histogram", name
        suffixes = {s.name[len(name):] for s in family.samples}
        assert {"_bucket", "_sum", "_count"} <= suffixes, (name, suffixes)
        assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" and s.value >= 1 for s in family.samples)
    stage = families["voxedge_inference_stage_seconds"]
    assert any(s.labels.get("stage") == "inference" and s.labels.get("kind") == "api" for s in stage.samples)
    rtt = families["voxedge_link_rtt_seconds"]
    assert rtt.type == "histogram"
    buckets = [(float(s.labels["le"]), s.value) for s in rtt.samples if s.name.endswith("_bucket")]
    assert [b for b, _ in buckets] == sorted(b for b, _ in buckets) and buckets[-1][0] == float("inf")
    assert all(a <= b for (_, a), (_, b) in zip(buckets, buckets[1:])), buckets  # cumulative
    count = next(s.value for s in rtt.samples if s.name == "voxedge_link_rtt_seconds_count")
    total = next(s.value for s in rtt.samples if s.name == "voxedge_link_rtt_seconds_sum")
    assert count >= 1 and buckets[-1][1] == count and 0 < total / count < 1.0


@requires_gcc
def test_build_info_says_which_model_runs(scraped):
    from edge import __version__

    text, runtime = scraped
    info = _families(text)["voxedge_build_info"]
    assert info.type == "gauge" and len(info.samples) == 1
    sample = info.samples[0]
    assert set(sample.labels) == BUILD_INFO_LABELS and sample.value == 1.0
    running = runtime.runner.model_path.relative_to(runtime.bundle.path).as_posix()
    sha = {f.path: f.sha256 for f in runtime.bundle.manifest.files}[running]
    assert sample.labels == {"bundle_sha256": sha, "precision": runtime.runner.precision, "backend": "onnxruntime",
                             "version": __version__}
    assert re.fullmatch(r"[0-9a-f]{64}", sample.labels["bundle_sha256"])


@requires_gcc
def test_process_and_python_collectors_are_there(scraped):
    import sys

    text, _ = scraped
    names = set(_families(text))
    assert "python_info" in names and "python_gc_objects_collected" in names
    if sys.platform.startswith("linux"):
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds"} <= names
    assert any(n.startswith("process_") for n in names) or not sys.platform.startswith("linux")
