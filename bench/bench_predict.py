"""``POST /predict`` under load: voxedge's service vs. a naive Flask + PyTorch eager baseline, one run, one machine.

Both servers get the same model (the reference checkpoint), the same web
server (waitress with 20 threads) and the same load: ``--clients`` closed-loop
clients (one keep-alive HTTP connection each) posting the same multipart body
(a 160x120 PNG frame and a 2 s 16 kHz 16-bit WAV from a simulated test-set
sample) for ``--warmup`` + ``--duration`` seconds. The servers run one after
the other in this process.

1. voxedge: the reference model converted with calibration (INT8 Q/DQ), the
   real ``Runtime`` (ONNX Runtime, ``precision="int8"``) on the simulated robot
   (the C firmware core on a pty, sim camera and microphone), ``create_app`` +
   ``edge.service.server.Server``, as ``tests/service_fixtures.py`` builds it,
   with the rate limiter opened wide.
2. baseline: what a first version would be: a Flask ``/predict`` that decodes
   the PNG (PIL) and the WAV per request and calls the PyTorch model in eager
   mode inside the handler.

A 429 from voxedge (its inference queue is full, or the rate limiter) is
counted, and the client retries after ``--retry-pause-ms``; latency is given
per successful attempt and per request from its first attempt (what a client
waiting for an answer sees). Both servers must give the same intent on the
golden frame and on the benchmark sample before they are timed. Results: a
table on stdout, ``bench/results/predict.json`` and ``bench/results/predict.png``.

The clients run in a process of their own (8 threads), as a load generator
would, so they share the machine's CPUs with the servers but not a server's
interpreter lock; on a 2-core machine their CPU cost is part of every figure,
the same for both. The table warns when other processes used the CPU during a
measured window; ``--rounds N`` alternates the servers N times so that such
load falls on both.

    .venv/bin/python bench/bench_predict.py [--duration 20] [--warmup 3] [--clients 8] [--rounds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from timing import median_s

from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES

REPO = Path(__file__).resolve().parents[1]
BASELINE_THREADS = 20  # = edge.service.config.WORKER_THREADS + max_mjpeg_viewers + max_sse_clients (8 + 4 + 8)
BOUNDARY = "voxedge-bench-boundary-7d1f0c"


# -- payloads ------------------------------------------------------------------------------

def multipart(png: bytes, wav: bytes) -> tuple[bytes, str]:
    """The /predict body (fields ``image`` and ``audio``), encoded once for all clients."""
    parts = []
    for name, filename, ctype, data in (("image", "frame.png", "image/png", png),
                                         ("audio", "command.wav", "audio/wav", wav)):
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE_HZ) -> bytes:
    from edge.samples import encode_wav  # the project's one WAV writer

    return encode_wav(audio, rate)


def png_bytes(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError("cv2 could not encode the frame as PNG")
    return data.tobytes()


def bench_sample(eval_dir: Path) -> dict:
    """The first spoken command (intent not "none") of the test set: its PNG and WAV files as they are on disk."""
    from calibration.sampleset import read_set

    sample_set = read_set(eval_dir)
    for rec in sample_set.records:
        if rec.intent and rec.intent != "none":
            png = (sample_set.path / rec.image).read_bytes()
            wav = (sample_set.path / rec.audio).read_bytes()
            return {"png": png, "wav": wav, "intent": rec.intent, "object": rec.object, "id": rec.id}
    raise RuntimeError(f"{eval_dir} holds no spoken command")


# -- the baseline: the "original design" -----------------------------------------------------

def make_baseline_app(model, intents):
    """A plain Flask app the way a first version would be written: decode and run PyTorch in the handler."""
    import torch
    from flask import Flask, jsonify, request
    from PIL import Image

    app = Flask("baseline")

    @app.post("/predict")
    def predict():
        image_file = request.files.get("image")
        if image_file is None:
            return jsonify(error="send 'image'"), 400
        img = Image.open(io.BytesIO(image_file.read())).convert("RGB")
        if img.size != (160, 120):
            img = img.resize((160, 120))
        image = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        audio = np.zeros(WINDOW_SAMPLES, np.float32)
        audio_file = request.files.get("audio")
        if audio_file is not None:
            with wave.open(io.BytesIO(audio_file.read()), "rb") as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
                pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
            audio[: min(pcm.size, WINDOW_SAMPLES)] = pcm[:WINDOW_SAMPLES]
        with torch.no_grad():
            logits, target_xy, target_logit, _ = model(image[None], torch.from_numpy(audio)[None])
        p = torch.softmax(logits[0], dim=0)
        best = int(p.argmax())
        return jsonify(intent=intents[best], confidence=float(p[best]), target_xy=[float(v) for v in target_xy[0]],
                       presence=float(torch.sigmoid(target_logit[0])))

    return app


class Waitress:
    """A waitress server for an app in a background thread, on an ephemeral port."""

    def __init__(self, app, threads: int) -> None:
        from waitress.server import create_server

        # the same settings as edge.service.server.Server (but for the ident)
        self._server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="baseline",
                                     channel_timeout=30, cleanup_interval=10, connection_limit=200,
                                     clear_untrusted_proxy_headers=True)
        self._thread = threading.Thread(target=self._server.run, name="baseline-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.effective_port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let the requests in flight finish, then close every socket in the server's own thread.

        (Closing first, from this thread, as edge.service.server.Server.stop does, races with both: a task
        finishing after the close pulls the closed trigger pipe, and select() in the loop meets a closed fd;
        each shows as an EBADF traceback.)
        """
        from waitress import wasyncore

        self._server.task_dispatcher.shutdown(timeout=timeout_s)

        def close_all() -> None:
            wasyncore.close_all(self._server._map)

        try:
            self._server.trigger.pull_trigger(close_all)
        except OSError:  # the loop has ended already
            close_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"the baseline server did not stop within {timeout_s} s")


# -- the load --------------------------------------------------------------------------------

@dataclass
class Attempt:
    t0: float
    t1: float
    status: int  # 0: connection error
    reason: str = ""  # for 429: "queue_full" or "rate_limit"; for errors: the message
    timings: dict | None = None  # voxedge's timings_ms


@dataclass
class ClientLog:
    attempts: list[Attempt] = field(default_factory=list)
    requests: list[tuple[float, float, int, int]] = field(default_factory=list)  # (first t0, t1, status, tries)


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def _classify_429(data: bytes) -> str:
    if b"already waiting" in data:
        return "queue_full"  # edge.fusion.WorkerBusyError: REQUEST_QUEUE_MAX requests wait for the worker
    if b"too many" in data:
        return "rate_limit"
    return "other"


def client_loop(url: str, body: bytes, ctype: str, stop_at: float, retry_pause_s: float, log: ClientLog,
                start: threading.Barrier) -> None:
    u = urlsplit(url)
    headers = {"Content-Type": ctype, "Content-Length": str(len(body)), "Connection": "keep-alive"}

    def connect():
        return http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    conn = connect()
    start.wait()
    try:
        while time.monotonic() < stop_at:
            conn = client_request(conn, connect, body, headers, stop_at, retry_pause_s, log)
    finally:
        conn.close()


def client_request(conn: http.client.HTTPConnection, connect, body: bytes, headers: dict, stop_at: float,
                   retry_pause_s: float, log: ClientLog) -> http.client.HTTPConnection:
    """One request, tried again after each 429 while the load lasts; the connection to go on with."""
    first = time.monotonic()
    tries = 0
    while True:
        tries += 1
        attempt, conn = post_attempt(conn, connect, body, headers)
        log.attempts.append(attempt)
        if attempt.status == 429 and attempt.t1 < stop_at:
            if retry_pause_s > 0:
                time.sleep(retry_pause_s)
            continue
        log.requests.append((first, attempt.t1, attempt.status, tries))
        return conn


def post_attempt(conn: http.client.HTTPConnection, connect, body: bytes,
                 headers: dict) -> tuple[Attempt, http.client.HTTPConnection]:
    """One POST /predict; after a connection error (status 0) the connection is replaced by a new one."""
    t0 = time.monotonic()
    timings, reason = None, ""
    try:
        status, data = post(conn, "/predict", body, headers)
    except (OSError, http.client.HTTPException) as exc:
        status, data, reason = 0, b"", f"{type(exc).__name__}: {exc}"
        conn.close()
        conn = connect()
    t1 = time.monotonic()
    if status == 200:
        try:
            timings = json.loads(data).get("timings_ms")
        except ValueError:
            status, reason = -1, "200 with a body that is not JSON"
    elif status == 429:
        reason = _classify_429(data)
    elif status != 0:
        reason = data[:200].decode("utf-8", "replace")
    return Attempt(t0, t1, status, reason, timings), conn


def percentiles_ms(values_s: list[float]) -> dict[str, float | None]:
    if not values_s:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = 1e3 * np.asarray(values_s)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "max": float(a.max())}


def process_cpu_s() -> float:
    return time.process_time()


def system_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; (0, 0) where there is none."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def other_cpu_cores(busy0: tuple[int, int], busy1: tuple[int, int], own_cores: float) -> float | None:
    """CPU cores used by other processes on this machine over an interval (all busy CPU less this process's)."""
    d_busy, d_total = busy1[0] - busy0[0], busy1[1] - busy0[1]
    if d_total <= 0:
        return None
    return max(0.0, d_busy / d_total * (os.cpu_count() or 1) - own_cores)


@dataclass
class Window:
    """What one measured window of load recorded."""

    attempts: list[Attempt]
    requests: list[tuple[float, float, int, int]]
    duration_s: float
    process_cpu_s: float  # the server's process (this one)
    client_cpu_s: float  # the load generator's process
    other_cpu_cores: float | None  # everything else on the machine


def run_clients(spec: dict) -> dict:
    """The load generator's side (in its own process): ``clients`` closed-loop client threads; what they recorded.

    Times are ``time.monotonic()`` (CLOCK_MONOTONIC, the same in every process), so
    the server's process can cut the measured window out of them.
    """
    body = Path(spec["body_path"]).read_bytes()
    logs = [ClientLog() for _ in range(spec["clients"])]
    start = threading.Barrier(spec["clients"] + 1)
    threads = [threading.Thread(target=client_loop, args=(spec["url"], body, spec["ctype"], spec["stop_at"],
                                                          spec["retry_pause_s"], log, start),
                                name=f"bench-client-{i}", daemon=True) for i, log in enumerate(logs)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(max(0.0, spec["warm_end"] - time.monotonic()))
    cpu0 = process_cpu_s()
    time.sleep(max(0.0, spec["stop_at"] - time.monotonic()))
    cpu1 = process_cpu_s()
    for t in threads:
        t.join(60)
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        raise RuntimeError(f"clients still running a minute after the end: {alive}")
    return {"attempts": [[a.t0, a.t1, a.status, a.reason, a.timings] for log in logs for a in log.attempts],
            "requests": [list(r) for log in logs for r in log.requests], "cpu_s": cpu1 - cpu0}


def run_load(url: str, body: bytes, ctype: str, clients: int, warmup_s: float, duration_s: float,
             retry_pause_s: float) -> Window:
    """``clients`` closed-loop clients for warm-up + duration; what finished inside the measured window.

    The clients run in a process of their own (``--load-client``), as a load
    generator (wrk, hey, locust) would: they share the machine's CPUs with the
    server, but not its interpreter lock, which in-process clients would hold for
    a good part of every request and so slow the faster server the most.
    """
    with tempfile.TemporaryDirectory(prefix="bench-predict-load-") as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(body)
        t_start = time.monotonic() + 1.0  # the client process starts and connects before the clock starts
        warm_end = t_start + warmup_s
        stop_at = warm_end + duration_s
        spec = {"url": url, "body_path": str(body_path), "ctype": ctype, "clients": clients,
                "warm_end": warm_end, "stop_at": stop_at, "retry_pause_s": retry_pause_s}
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, __file__, "--load-client", str(Path(tmp) / "spec.json")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(max(0.0, warm_end - time.monotonic()))
        cpu0, w0, sys0 = process_cpu_s(), time.monotonic(), system_cpu_jiffies()
        time.sleep(max(0.0, stop_at - time.monotonic()))
        cpu1, w1, sys1 = process_cpu_s(), time.monotonic(), system_cpu_jiffies()
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError("the load generator did not finish within 2 minutes of the end") from None
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed ({proc.returncode}): {err[-2000:]}")
    got = json.loads(out)
    attempts = [Attempt(*a) for a in got["attempts"]]
    requests = [tuple(r) for r in got["requests"]]
    own = (cpu1 - cpu0) / (w1 - w0)
    client = got["cpu_s"] / (w1 - w0)
    return Window(attempts=[a for a in attempts if warm_end <= a.t1 <= stop_at],
                  requests=[r for r in requests if warm_end <= r[1] <= stop_at],
                  duration_s=duration_s, process_cpu_s=cpu1 - cpu0, client_cpu_s=got["cpu_s"],
                  other_cpu_cores=other_cpu_cores(sys0, sys1, own + client))


def summarise(windows: list[Window]) -> dict:
    """Throughput, latency, 429s and errors over all measured windows of one server (rounds pooled)."""
    duration_s = sum(w.duration_s for w in windows)
    attempts = [a for w in windows for a in w.attempts]
    ok = [a for a in attempts if a.status == 200]
    n429 = [a for a in attempts if a.status == 429]
    errors = [a for a in attempts if a.status not in (200, 429)]
    ok_requests = [r for w in windows for r in w.requests if r[2] == 200]
    cpu_s = sum(w.process_cpu_s for w in windows)
    others = [w.other_cpu_cores for w in windows if w.other_cpu_cores is not None]
    out = {
        "requests_per_s": len(ok) / duration_s,
        "ok": len(ok),
        "latency_ms": percentiles_ms([a.t1 - a.t0 for a in ok]),
        "latency_with_retries_ms": percentiles_ms([r[1] - r[0] for r in ok_requests]),
        "http_429": len(n429),
        "http_429_by_reason": {k: sum(1 for a in n429 if a.reason == k) for k in sorted({a.reason for a in n429})},
        "requests_that_needed_retries": sum(1 for r in ok_requests if r[3] > 1),
        "errors": len(errors),
        "error_examples": sorted({f"{a.status} {a.reason}"[:160] for a in errors})[:5],
        "attempts_per_s": len(attempts) / duration_s,
        "process_cpu_cores": cpu_s / duration_s,  # the server's process (at most the CPU count)
        "process_cpu_ms_per_ok_request": 1e3 * cpu_s / max(1, len(ok)),
        "client_process_cpu_cores": sum(w.client_cpu_s for w in windows) / duration_s,
        # other processes on the machine during the windows (another job's tests, a CPU hog): they skew the figures
        "other_processes_cpu_cores": sum(others) / len(others) if others else None,
        "rounds_requests_per_s": [sum(1 for a in w.attempts if a.status == 200) / w.duration_s for w in windows],
        "rounds_other_processes_cpu_cores": [w.other_cpu_cores for w in windows],
    }
    timed = [a.timings for a in ok if a.timings]
    if timed:
        keys = sorted({k for t in timed for k in t})
        out["server_timings_ms"] = {k: percentiles_ms([1e-3 * t[k] for t in timed if k in t]) for k in keys}
    return out


# -- checks and diagnostics ------------------------------------------------------------------

def post_once(url: str, png: bytes, wav: bytes) -> dict:
    import requests

    r = requests.post(url + "/predict", files={"image": ("f.png", png, "image/png"),
                                               "audio": ("a.wav", wav, "audio/wav")}, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"{url}/predict answered {r.status_code}: {r.text[:300]}")
    return r.json()


def agreement(name: str, voxedge: dict, baseline: dict, expected: str | None = None) -> dict:
    v_intent = voxedge.get("model_intent", voxedge.get("intent"))
    row = {"input": name, "voxedge_intent": v_intent, "voxedge_confidence": voxedge["confidence"],
           "baseline_intent": baseline["intent"], "baseline_confidence": baseline["confidence"],
           "same_intent": v_intent == baseline["intent"],
           "target_xy_max_abs_diff": float(np.max(np.abs(np.subtract(voxedge["target_xy"],
                                                                      baseline["target_xy"]))))}
    if expected is not None:
        row["label"] = expected
    return row


def check_answers(answers: dict, sample: dict) -> list[dict]:
    v, b = answers["voxedge"], answers["baseline"]
    return [agreement("golden frame (golden.npz)", v["golden"], b["golden"]),
            agreement(f"bench payload ({sample['id']})", v["sample"], b["sample"], sample["intent"])]


def post_test_client(app, png: bytes, wav: bytes) -> dict:
    r = app.test_client().post("/predict", data={"image": (io.BytesIO(png), "f.png"),
                                                 "audio": (io.BytesIO(wav), "a.wav")})
    if r.status_code != 200:
        raise RuntimeError(f"the baseline answered {r.status_code}: {r.get_data(as_text=True)[:300]}")
    return r.get_json()


def micro_costs(png: bytes, wav: bytes, bundle, model, repeats: int = 200) -> dict:
    """Each step of one request alone, in ms (median), to attribute the servers' time.

    Measured in a thread of its own, as the servers run them: on a busy machine PyTorch's OpenMP pool is far
    slower when driven from the main thread than from another thread (seen: 380 ms vs. 8 ms a forward pass).
    """
    result: dict = {}

    def measure_steps() -> None:
        with service_settings():
            result.update(_micro_costs(png, wav, bundle, model, repeats))

    thread = threading.Thread(target=measure_steps, name="bench-micro")
    thread.start()
    thread.join()
    if not result:
        raise RuntimeError("the single-step measurements failed (see the traceback above)")
    return result


@contextlib.contextmanager
def service_settings():
    """A Flask app context with the service's default settings, which edge.service.inference.upload_audio reads."""
    from flask import Flask

    from edge.service import ServiceConfig

    app = Flask("bench-micro")
    app.config["VOXEDGE"] = ServiceConfig()
    with app.app_context():
        yield


def _micro_costs(png: bytes, wav: bytes, bundle, model, repeats: int) -> dict:
    import cv2
    import torch
    from PIL import Image

    from edge.runners.onnxruntime import make_session
    from edge.service.inference import upload_audio

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    audio = upload_audio(wav)[None].astype(np.float32)
    from edge.int8_numerics import ONNXRUNTIME_CPU

    session = make_session(bundle.model_path("int8", ONNXRUNTIME_CPU))  # the INT8 model the CPU runs
    outputs = [o.name for o in bundle.manifest.outputs]
    feed = {"image": img[None], "audio": audio}

    def torch_forward():
        with torch.no_grad():
            model(torch.from_numpy(img)[None], torch.from_numpy(audio))

    steps = {
        "png_decode_cv2": lambda: cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR),
        "png_decode_pil": lambda: np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
        "wav_decode_voxedge": lambda: upload_audio(wav),
        "onnxruntime_int8_forward": lambda: session.run(outputs, feed),
        "torch_eager_fp32_forward": torch_forward,
    }
    out = {}
    for name, fn in steps.items():
        out[name] = 1e3 * median_s(fn, repeats, warmup=10)
    return out


def serial_latency(url: str, body: bytes, ctype: str, n: int) -> dict:
    """One client, one request at a time: the unloaded latency."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Content-Type": ctype, "Content-Length": str(len(body))}
    times, timed = [], []
    try:
        for i in range(n + 10):
            t0 = time.perf_counter()
            status, data = post(conn, "/predict", body, headers)
            if status != 200:
                raise RuntimeError(f"{url}/predict answered {status}: {data[:200]!r}")
            if i >= 10:
                times.append(time.perf_counter() - t0)
                timed.append(json.loads(data).get("timings_ms"))
    finally:
        conn.close()
    out = {"latency_ms": percentiles_ms(times)}
    if timed[0]:
        out["server_timings_ms_median"] = {k: statistics.median(t[k] for t in timed) for k in timed[0]}
    return out


def idle_cpu_cores(seconds: float = 2.0) -> tuple[float, float | None]:
    """(this process, other processes) CPU cores while nothing is requested: the runtime's own threads (camera,
    listener, ...) and what else runs on the machine."""
    c0, w0, s0 = process_cpu_s(), time.perf_counter(), system_cpu_jiffies()
    time.sleep(seconds)
    own = (process_cpu_s() - c0) / (time.perf_counter() - w0)
    return own, other_cpu_cores(s0, system_cpu_jiffies(), own)


def child_processes() -> list[str]:
    me = str(os.getpid())
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == me and fields[0] != "Z":
            found.append(f"{d.name} {stat[stat.find('(') + 1: stat.rfind(')')]}")
    return found


# -- output ------------------------------------------------------------------------------------

def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(results: dict) -> None:
    rows = [("server", "req/s", "p50 ms", "p95 ms", "p99 ms", "p99 w/ retries", "429", "errors")]
    for name in ("voxedge", "baseline"):
        r = results[name]["load"]
        lat, e2e = r["latency_ms"], r["latency_with_retries_ms"]
        rows.append((name, _f(r["requests_per_s"]), _f(lat["p50"]), _f(lat["p95"]), _f(lat["p99"]), _f(e2e["p99"]),
                     str(r["http_429"]), str(r["errors"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["voxedge", "baseline"]
    colors = ["tab:blue", "tab:gray"]
    loads = [results[n]["load"] for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    bars = ax1.bar(names, [r["requests_per_s"] for r in loads], color=colors)
    ax1.bar_label(bars, fmt="%.0f")
    ax1.set_ylabel("requests/s (HTTP 200)")
    ax1.set_title(f"throughput, {results['settings']['clients']} clients")
    x = np.arange(3)
    for i, (n, r, c) in enumerate(zip(names, loads, colors)):
        vals = [r["latency_ms"][k] or 0.0 for k in ("p50", "p95", "p99")]
        b = ax2.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=n, color=c)
        ax2.bar_label(b, fmt="%.1f", fontsize=8)
    ax2.set_xticks(x, ["p50", "p95", "p99"])
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("latency of HTTP 200 answers")
    ax2.legend()
    ratios = results["ratios"]
    fig.suptitle("POST /predict: voxedge (ONNX Runtime INT8) vs. Flask + PyTorch eager - throughput x"
                 f"{_f(ratios['throughput_voxedge_over_baseline'], '{:.2f}')}, "
                 f"p99 x{_f(ratios['p99_voxedge_over_baseline'], '{:.2f}')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- setting up --------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per server (%(default)s)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per server (%(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (%(default)s)")
    parser.add_argument("--retry-pause-ms", type=float, default=10.0,
                        help="pause before a client retries after a 429 (%(default)s)")
    parser.add_argument("--serial", type=int, default=200,
                        help="requests of the one-client (unloaded) latency check per server; 0: skip")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the servers this many times, each round measuring duration/rounds seconds "
                             "(on a shared machine this spreads other jobs' load over both); default %(default)s")
    parser.add_argument("--ort-threads", type=int, default=0,
                        help="what-if: ONNX Runtime intra-op threads of voxedge's runner (default 0: as voxedge sets "
                             "it, i.e. ONNX Runtime's default)")
    parser.add_argument("--ignore-disagreement", action="store_true",
                        help="time the servers even if they disagree on the intent before timing")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "predict.json"))
    parser.add_argument("--plot", default=str(REPO / "bench" / "results" / "predict.png"))
    return parser.parse_args()


def settings(args: argparse.Namespace) -> dict:
    """The run's settings and versions (printed, and the ``settings`` of the results)."""
    import onnxruntime
    import torch

    torch_threads = torch.get_num_threads()  # left at its default on purpose
    print(f"torch {torch.__version__} with {torch_threads} threads (default; {os.cpu_count()} CPUs), "
          f"onnxruntime {onnxruntime.__version__}, python {platform.python_version()}", flush=True)
    return {
        "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
        "retry_pause_ms": args.retry_pause_ms, "voxedge_ort_intra_op_threads": args.ort_threads or "default",
        "torch_threads": torch_threads, "cpus": os.cpu_count(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
        "machine": platform.platform(), "waitress_threads": BASELINE_THREADS}


@dataclass
class Payload:
    """What the clients and the answer checks post."""

    sample: dict  # bench_sample()
    body: bytes  # the multipart body of the sample
    ctype: str
    golden_png: bytes
    golden_wav: bytes

    def inputs(self) -> tuple[tuple[str, tuple[bytes, bytes]], ...]:
        """The (PNG, WAV) pairs both servers must agree on before timing: the golden frame and the sample."""
        return (("golden", (self.golden_png, self.golden_wav)), ("sample", (self.sample["png"], self.sample["wav"])))

    def describe(self) -> dict:
        s = self.sample
        return {"sample": s["id"], "label": s["intent"], "object": s["object"], "png_bytes": len(s["png"]),
                "wav_bytes": len(s["wav"]), "body_bytes": len(self.body)}


def make_bundle(tmp: Path):
    """The reference checkpoint converted with INT8 calibration (simulated calibration and test sets in ``tmp``)."""
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from reference_model.sets import write_sim_set

    t0 = time.perf_counter()
    write_sim_set(tmp / "calib", split="val", n=256, cache_root=REPO / "data")
    write_sim_set(tmp / "eval", split="test", n=256, cache_root=REPO / "data")
    bundle = convert(DEFAULT_CHECKPOINT, tmp / "bundle", calibration=tmp / "calib", eval_set=tmp / "eval",
                     log=lambda *_: None)
    print(f"converted {DEFAULT_CHECKPOINT.name} -> {bundle.path.name} with INT8 in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return bundle


def make_payload(bundle, eval_dir: Path) -> Payload:
    sample = bench_sample(eval_dir)
    body, ctype = multipart(sample["png"], sample["wav"])
    golden = np.load(bundle.path / "golden.npz")
    payload = Payload(sample, body, ctype, png_bytes(golden["input.image"][0]), wav_bytes(golden["input.audio"][0]))
    print(f"payload: test-set sample {sample['id']} ({sample['intent']} {sample['object'] or ''}), "
          f"PNG {len(sample['png'])} B, WAV {len(sample['wav'])} B", flush=True)
    return payload


@contextlib.contextmanager
def voxedge_server(bundle, audit_log: Path, ort_threads: int):
    """The real runtime on the simulated robot behind the real server, as tests/service_fixtures.py."""
    from edge.runtime import Runtime, RuntimeConfig
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server
    from simrobot.robot import sim_setup

    with contextlib.ExitStack() as stack:
        robot, camera, microphone = sim_setup(seed=3, noise_dbfs=-55.0)
        link = robot.start()
        stack.callback(robot.stop)
        config = RuntimeConfig(bundle=str(bundle.path), precision="int8", audit_log=str(audit_log))
        runner = None
        if ort_threads:  # a what-if; by default the runtime makes its runner as `voxedge serve` does
            from edge.bundle import load_bundle
            from edge.runners import make_runner

            runner = make_runner("onnxruntime", load_bundle(bundle.path), "int8", intra_op_threads=ort_threads)
        runtime = Runtime(config, link=link, camera=camera, microphone=microphone, runner=runner).start()
        stack.callback(runtime.stop)
        service = ServiceConfig(port=0, infer_rate_per_s=1e6, infer_burst=10 ** 6)
        server = Server(create_app(runtime, service), service).start()
        stack.callback(server.stop)
        yield server.url, runtime


@contextlib.contextmanager
def baseline_server(app):
    server = Waitress(app, BASELINE_THREADS)
    try:
        yield server.url, None
    finally:
        server.stop()


# -- measuring -----------------------------------------------------------------------------------

def first_look_voxedge(url: str, runtime, payload: Payload, answers: dict, info: dict, ignore_disagreement: bool):
    """Before voxedge is timed: its answers (which must agree with the baseline's) and its idle CPU."""
    print(f"voxedge at {url}: runtime {runtime.runner.backend} {runtime.runner.precision}"
          f" ({', '.join(runtime.runner.providers)})", flush=True)
    answers["voxedge"] = {key: post_once(url, png, wav) for key, (png, wav) in payload.inputs()}
    checks = check_answers(answers, payload.sample)
    if not all(c["same_intent"] for c in checks) and not ignore_disagreement:
        raise SystemExit("voxedge and the baseline disagree on the intent before timing: "
                         f"{checks}; rerun with --ignore-disagreement to time anyway")
    info["idle_process_cpu_cores"], info["idle_other_processes_cpu_cores"] = idle_cpu_cores()


def first_look_baseline(url: str, payload: Payload, answers: dict) -> None:
    """Before the baseline is timed: over HTTP it must answer as the same app did in-process."""
    print(f"baseline at {url}: Flask + PyTorch eager FP32", flush=True)
    for key, (png, wav) in payload.inputs():
        if post_once(url, png, wav)["intent"] != answers["baseline"][key]["intent"]:
            raise RuntimeError("the baseline over HTTP answers differently from the same app in-process")


def measure_round(name: str, round_no: int, url: str, runtime, args: argparse.Namespace, payload: Payload,
                  answers: dict, info: dict) -> Window:
    """One server's turn in one round: the checks and the unloaded latency (first round only), then the load."""
    if round_no == 0:
        if name == "voxedge":
            first_look_voxedge(url, runtime, payload, answers, info, args.ignore_disagreement)
        else:
            first_look_baseline(url, payload, answers)
        info["serial"] = serial_latency(url, payload.body, payload.ctype, args.serial) if args.serial else None
    print(f"{name}: round {round_no + 1}/{args.rounds}, load for {args.warmup:g} + "
          f"{args.duration / args.rounds:g} s ...", flush=True)
    window = run_load(url, payload.body, payload.ctype, args.clients, args.warmup, args.duration / args.rounds,
                      1e-3 * args.retry_pause_ms)
    if runtime is not None:
        from edge.service.state import snapshot

        info.setdefault("runtime_inference_rounds", []).append(snapshot(runtime)["inference"])
        info["runtime_alerts"] = info.get("runtime_alerts", 0) + runtime.alert_count
    return window


def measure(args: argparse.Namespace, servers: tuple, payload: Payload, answers: dict, results: dict) -> None:
    """``args.rounds`` rounds, each server in turn (``servers``: name, context manager per round number)."""
    windows: dict[str, list[Window]] = {name: [] for name, _ in servers}
    for round_no in range(args.rounds):
        for name, serve in servers:
            with serve(round_no) as (url, runtime):
                info = results.setdefault(name, {})
                windows[name].append(measure_round(name, round_no, url, runtime, args, payload, answers, info))
    for name, recorded in windows.items():
        results[name]["load"] = summarise(recorded)


def run_benchmark(args: argparse.Namespace, results: dict) -> None:
    """Convert the model, check both servers' answers, time them and measure the single steps (into ``results``)."""
    from convert.cli import DEFAULT_CHECKPOINT
    from reference_model.model import load_checkpoint
    from sim.commands import INTENTS

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        bundle = make_bundle(tmp)
        payload = make_payload(bundle, tmp / "eval")
        results["payload"] = payload.describe()
        model, meta = load_checkpoint(DEFAULT_CHECKPOINT)
        baseline_app = make_baseline_app(model, tuple(meta.get("intents", INTENTS)))
        # The baseline's answers first (in-process, the same handler), so that voxedge's are checked before timing.
        answers: dict = {"baseline": {key: post_test_client(baseline_app, png, wav)
                                      for key, (png, wav) in payload.inputs()}}
        servers = (("voxedge", lambda round_no: voxedge_server(bundle, tmp / f"audit-{round_no}", args.ort_threads)),
                   ("baseline", lambda round_no: baseline_server(baseline_app)))
        measure(args, servers, payload, answers, results)
        results["diagnostics_single_thread_ms"] = micro_costs(payload.sample["png"], payload.sample["wav"], bundle,
                                                              model)
    results["answers"] = check_answers(answers, payload.sample)


# -- checks, ratios, output --------------------------------------------------------------------

def ratios(v: dict, b: dict) -> dict:
    """voxedge over the baseline: throughput and p99 (with and without 429 retries), and the targets."""
    out = {
        "throughput_voxedge_over_baseline": v["requests_per_s"] / b["requests_per_s"] if b["requests_per_s"] else None,
        "p99_voxedge_over_baseline": (v["latency_ms"]["p99"] / b["latency_ms"]["p99"]
                                      if v["latency_ms"]["p99"] and b["latency_ms"]["p99"] else None),
        "p99_with_retries_voxedge_over_baseline": (
            v["latency_with_retries_ms"]["p99"] / b["latency_with_retries_ms"]["p99"]
            if v["latency_with_retries_ms"]["p99"] and b["latency_with_retries_ms"]["p99"] else None),
    }
    out["throughput_target_3x_met"] = bool(out["throughput_voxedge_over_baseline"]
                                           and out["throughput_voxedge_over_baseline"] >= 3.0)
    out["p99_lower_met"] = bool(out["p99_voxedge_over_baseline"] and out["p99_voxedge_over_baseline"] < 1.0)
    return out


def print_answers(checks: list[dict]) -> None:
    print()
    print("answers before timing (voxedge: raw argmax 'model_intent'):")
    for c in checks:
        print(f"  {c['input']}: voxedge {c['voxedge_intent']} ({c['voxedge_confidence']:.3f}), baseline "
              f"{c['baseline_intent']} ({c['baseline_confidence']:.3f}), same intent: {c['same_intent']}, "
              f"target_xy max diff {c['target_xy_max_abs_diff']:.3f}" + (f", label {c['label']}" if "label" in c
                                                                         else ""))


def print_load(args: argparse.Namespace, results: dict) -> None:
    """The table and the ratios, then what voxedge's server did under load."""
    ratio = results["ratios"]
    v = results["voxedge"]["load"]
    print()
    rounds = f" in {args.rounds} alternating rounds (each after its own warm-up)" if args.rounds > 1 else \
        f" after {args.warmup:g} s warm-up"
    print(f"POST /predict, {args.clients} clients, {args.duration:g} s measured per server{rounds}, "
          f"torch threads {results['settings']['torch_threads']} (default), waitress {BASELINE_THREADS} threads each")
    print_table(results)
    print()
    print(f"throughput voxedge / baseline: {_f(ratio['throughput_voxedge_over_baseline'], '{:.2f}')}x "
          f"(target >= 3x: {'met' if ratio['throughput_target_3x_met'] else 'NOT met'})")
    print(f"p99 voxedge / baseline: {_f(ratio['p99_voxedge_over_baseline'], '{:.2f}')} "
          f"(voxedge lower: {'yes' if ratio['p99_lower_met'] else 'NO'}); counting 429 retries: "
          f"{_f(ratio['p99_with_retries_voxedge_over_baseline'], '{:.2f}')}")
    if v["http_429"]:
        print(f"voxedge 429s: {v['http_429']} {v['http_429_by_reason']}, "
              f"{v['requests_that_needed_retries']} requests needed retries")
    if "server_timings_ms" in v:
        st = v["server_timings_ms"]
        print("voxedge server timings under load (median ms): " + ", ".join(
            f"{k} {st[k]['p50']:.2f}" for k in ("decode", "preprocess", "inference", "queue_and_inference", "total")
            if k in st))
    snaps = results["voxedge"].get("runtime_inference_rounds") or []
    answered, runs = sum(r.get("api_requests", 0) for r in snaps), sum(r.get("api_batches", 0) for r in snaps)
    if runs:
        results["voxedge"]["api_mean_batch"] = answered / runs
        print(f"voxedge inference worker: {answered} API requests in {runs} model runs (mean batch "
              f"{answered / runs:.2f}; waiting requests run together, up to 8)")


def print_costs(results: dict) -> None:
    """CPU use, the unloaded latency, the single steps and the other processes on the machine."""
    v, b = results["voxedge"]["load"], results["baseline"]["load"]
    print(f"process CPU under load (cores of {os.cpu_count()}): voxedge {v['process_cpu_cores']:.2f}, "
          f"baseline {b['process_cpu_cores']:.2f}; CPU ms per answer: voxedge {v['process_cpu_ms_per_ok_request']:.2f},"
          f" baseline {b['process_cpu_ms_per_ok_request']:.2f}; load generator: {v['client_process_cpu_cores']:.2f} / "
          f"{b['client_process_cpu_cores']:.2f} cores; voxedge runtime idle: "
          f"{results['voxedge']['idle_process_cpu_cores']:.2f} cores")
    for name in ("voxedge", "baseline"):
        s = results[name].get("serial")
        if s:
            lat = s["latency_ms"]
            print(f"{name} one client at a time: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms"
                  + (", server " + ", ".join(f"{k} {val:.2f}" for k, val in s["server_timings_ms_median"].items())
                     if s.get("server_timings_ms_median") else ""))
    print("single-thread cost per step (median ms): " + ", ".join(
        f"{k} {val:.2f}" for k, val in results["diagnostics_single_thread_ms"].items()))
    others = [results[n]["load"]["other_processes_cpu_cores"] for n in ("voxedge", "baseline")]
    if all(o is not None for o in others):
        print(f"other processes on this machine during the measured windows: voxedge {others[0]:.2f} cores, "
              f"baseline {others[1]:.2f} cores of {os.cpu_count()}" +
              (" - WARNING: the machine was not quiet; the figures are skewed" if max(others) > 0.25 else ""))


def print_warnings(results: dict) -> int:
    """Leftovers, disagreement and errors; the exit code (1 when any of them but leftover threads)."""
    exit_code = 0
    if results["leftover_child_processes"]:
        print(f"WARNING: child processes left running: {results['leftover_child_processes']}")
        exit_code = 1
    if results["leftover_threads"]:
        print(f"note: threads still alive at the end: {results['leftover_threads']}")
    if not all(c["same_intent"] for c in results["answers"]):
        print("WARNING: voxedge and the baseline disagree on the intent (see above)")
        exit_code = 1
    for name in ("voxedge", "baseline"):
        if results[name]["load"]["errors"]:
            print(f"WARNING: {name} had {results[name]['load']['errors']} errors: "
                  f"{results[name]['load']['error_examples']}")
            exit_code = 1
    return exit_code


# -- main ----------------------------------------------------------------------------------------

def main() -> int:
    if sys.argv[1:2] == ["--load-client"]:  # the load generator's process (see run_load)
        print(json.dumps(run_clients(json.loads(Path(sys.argv[2]).read_text()))))
        return 0
    args = parse_args()
    results: dict = {"settings": settings(args)}
    run_benchmark(args, results)
    results["ratios"] = ratios(results["voxedge"]["load"], results["baseline"]["load"])
    results["leftover_child_processes"] = child_processes()
    results["leftover_threads"] = [t.name for t in threading.enumerate() if t is not threading.main_thread()]

    print_answers(results["answers"])
    print_load(args, results)
    print_costs(results)
    exit_code = print_warnings(results)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, Path(args.plot))
    print(f"\nwrote {out} and {args.plot}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
