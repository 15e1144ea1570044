"""E-stop under hostile load, on the product path: a real ``voxedge serve --sim`` attacked from loopback.

Two scenarios, each timing ``POST /api/estop`` on the e-stop port (the panel's first choice) and on
the main port, side by side:

1. **slow sockets**: 1,000 connections to the main port, each sending one header line every 5 s
   (never finishing its request), held for 30 s; meanwhile 100 e-stops, one every 0.3 s.
2. **starvation**: the 4 live-view and 8 event-stream slots held, and 8 clients sending slow
   ``/predict`` uploads (a body trickled over 10 s) or decompression bombs (a 600-byte JPEG
   claiming 30000 x 30000 pixels) in a loop; meanwhile 100 e-stops.

An e-stop counts as answered when its HTTP reply arrives within 2 s. Reported per port: answered,
p50 / p99 / max latency; the server's peak resident memory (``/proc``) and whether it is healthy
afterwards (``/v2/health/ready``, stream slots back to 0). Targets (issue 17): 100 % answered and
p99 <= 50 ms on the e-stop port; peak RSS <= 400 MB.

With ``--tls`` the server runs with a self-signed certificate (``--tls-cert/--tls-key``), every
client speaks TLS, and each e-stop's time includes its TLS handshake; the slow sockets complete
their handshake first, then trickle their headers.

    .venv/bin/python bench/bench_estop_abuse.py [--sockets 1000] [--hold-s 30] [--tls]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, write_json  # noqa: E402 (the sibling module)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ESTOP_TIMEOUT_S = 2.0
P99_TARGET_MS = 50.0
RSS_TARGET_MB = 400.0
TLS: ssl.SSLContext | None = None  # the clients' context with --tls (the bench's own self-signed certificate)


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def _connect(port: int, timeout: float) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return TLS.wrap_socket(s, server_hostname="127.0.0.1") if TLS is not None else s


def _self_signed(folder: str) -> tuple[str, str]:
    cert, key = f"{folder}/cert.pem", f"{folder}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=TLS) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Serve:
    def __init__(self, bundle: str, tls_files: tuple[str, str] | None = None) -> None:
        self.port, self.estop_port = free_port(), free_port()
        self.url = f"{'https' if tls_files else 'http'}://127.0.0.1:{self.port}"
        self.output: list[str] = []
        tls_args = ["--tls-cert", tls_files[0], "--tls-key", tls_files[1]] if tls_files else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", bundle, "--sim", "--port", str(self.port),
             "--estop-port", str(self.estop_port), "--precision", "fp32", *tls_args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: [self.output.append(x.rstrip()) for x in self.proc.stdout],
                         daemon=True).start()
        self.peak_rss_mb = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("voxedge serve exited:\n" + "\n".join(self.output[-20:]))
            try:
                if _get(self.url + "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("voxedge serve did not become ready")

    def sample_rss(self) -> None:
        self.peak_rss_mb = max(self.peak_rss_mb, _rss_mb(self.proc.pid))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _estop(port: int) -> float | None:
    """Seconds until the answer, or None without one within ESTOP_TIMEOUT_S."""
    t0 = time.perf_counter()
    try:
        with _connect(port, ESTOP_TIMEOUT_S) as s:
            s.settimeout(max(0.01, ESTOP_TIMEOUT_S - (time.perf_counter() - t0)))
            s.sendall(b"POST /api/estop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            reply = s.recv(64)
    except OSError:
        return None
    return time.perf_counter() - t0 if reply.startswith(b"HTTP/1.1 200") else None


def _summary(times: list[float | None]) -> dict:
    ok = sorted(1e3 * t for t in times if t is not None)
    pick = (lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]) if ok else (lambda q: None)
    return {"attempts": len(times), "answered": len(ok), "p50_ms": statistics.median(ok) if ok else None,
            "p99_ms": pick(0.99), "max_ms": ok[-1] if ok else None}


def _measure(serve: Serve, n: int, period_s: float) -> dict:
    """n e-stops to each port, alternating, while the load runs."""
    times = {"estop_port": [], "main_port": []}
    for _ in range(n):
        times["estop_port"].append(_estop(serve.estop_port))
        times["main_port"].append(_estop(serve.port))
        serve.sample_rss()
        time.sleep(period_s)
    return {k: _summary(v) for k, v in times.items()}


def slow_sockets(serve: Serve, sockets: int, hold_s: float, estops: int) -> dict:
    socks, stop = [], threading.Event()
    refused = 0
    for _ in range(sockets):
        try:
            s = _connect(serve.port, 5)
            s.setblocking(False)
            s.send(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        except OSError:  # the server's connection limit (the TLS front closes the ones beyond it)
            refused += 1

    def trickle():
        while not stop.wait(5.0):
            for s in socks:
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    t0 = time.monotonic()
    result = _measure(serve, estops, max(0.0, hold_s / estops - 0.01))
    while time.monotonic() - t0 < hold_s:
        time.sleep(0.2)
    stop.set()
    for s in socks:
        s.close()
    return {"sockets_opened": len(socks), "sockets_refused": refused, "held_s": round(time.monotonic() - t0, 1), **result}


def _bomb_jpeg() -> bytes:
    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 30000, 30000)
    return bytes(data)


def starvation(serve: Serve, estops: int) -> dict:
    stop = threading.Event()
    holders = []
    for path, n in (("/stream.mjpg", 4), ("/api/events", 8)):
        for _ in range(n):
            try:
                holders.append(urllib.request.urlopen(serve.url + path, timeout=30, context=TLS))
            except OSError:
                pass
    bomb = _bomb_jpeg()
    boundary = "b"
    bomb_body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
                 .encode() + bomb + f"\r\n--{boundary}--\r\n".encode())
    counts = {"bombs": 0, "slow_uploads": 0}

    def attacker(slow: bool):
        while not stop.is_set():
            try:
                with _connect(serve.port, 15) as s:
                    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                            f"boundary={boundary}\r\nContent-Length: {len(bomb_body)}\r\n\r\n").encode()
                    s.sendall(head)
                    if slow:  # the body trickled over about 10 s
                        step = max(1, len(bomb_body) // 20)
                        for i in range(0, len(bomb_body), step):
                            if stop.wait(0.5):
                                return
                            s.sendall(bomb_body[i:i + step])
                    else:
                        s.sendall(bomb_body)
                    s.recv(256)
                    counts["slow_uploads" if slow else "bombs"] += 1
            except OSError:
                time.sleep(0.1)

    threads = [threading.Thread(target=attacker, args=(i % 2 == 0,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    result = _measure(serve, estops, 0.2)
    stop.set()
    for h in holders:
        h.close()
    return {"streams_held": len(holders), **counts, **result}


def main() -> None:
    global TLS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a converted bundle (default: convert the reference model)")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--hold-s", type=float, default=30.0)
    parser.add_argument("--estops", type=int, default=100)
    parser.add_argument("--tls", action="store_true", help="serve and attack over https (a self-signed certificate)")
    parser.add_argument("--out", help="result JSON (default: bench/results/estop_abuse[_tls].json)")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / f"estop_abuse{'_tls' if args.tls else ''}.json")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.sockets)), hard))
    with tempfile.TemporaryDirectory(prefix="voxedge-abuse-") as tmp:
        bundle = args.bundle
        if bundle is None:
            from convert.cli import DEFAULT_CHECKPOINT
            from convert.pipeline import convert

            print("converting the reference model ...", flush=True)
            bundle = str(convert(DEFAULT_CHECKPOINT, Path(tmp) / "bundle", log=lambda *_: None).path)
        tls_files = None
        if args.tls:
            tls_files = _self_signed(tmp)
            TLS = ssl.create_default_context(cafile=tls_files[0])
        serve = Serve(bundle, tls_files)
        try:
            serve.sample_rss()
            start_rss = serve.peak_rss_mb
            print(f"voxedge serve --sim up ({start_rss:.0f} MB); {args.sockets} slow sockets for {args.hold_s:g} s ...",
                  flush=True)
            r1 = slow_sockets(serve, args.sockets, args.hold_s, args.estops)
            print("streams held + 8 slow or bomb /predict clients ...", flush=True)
            r2 = starvation(serve, args.estops)
            time.sleep(3.0)  # departed stream clients are noticed within about a second
            ready = _get(serve.url + "/v2/health/ready")[0]
            state = json.loads(_get(serve.url + "/api/state")[1])
            healthy = ready == 200 and state["service"]["viewers"] == 0 and state["service"]["sse_clients"] == 0
        finally:
            serve.stop()
    result = {"slow_sockets": r1, "starvation": r2, "start_rss_mb": start_rss, "peak_rss_mb": serve.peak_rss_mb,
              "healthy_after": healthy, "tls": args.tls, "date": time.strftime("%Y-%m-%d"), "machine": os.uname().nodename,
              "cores": os.cpu_count()}
    for name, r in (("slow sockets", r1), ("starvation", r2)):
        for port in ("estop_port", "main_port"):
            s = r[port]
            fmt = lambda v: "n/a" if v is None else f"{v:.1f} ms"  # noqa: E731
            print(f"{name:12s} {port:10s}: answered {s['answered']}/{s['attempts']}, p50 {fmt(s['p50_ms'])}, "
                  f"p99 {fmt(s['p99_ms'])}, max {fmt(s['max_ms'])}")
    e1, e2 = r1["estop_port"], r2["estop_port"]
    met = all(e["answered"] == e["attempts"] and e["p99_ms"] is not None and e["p99_ms"] <= P99_TARGET_MS
              for e in (e1, e2)) and serve.peak_rss_mb <= RSS_TARGET_MB and healthy
    print(f"peak RSS {serve.peak_rss_mb:.0f} MB (target <= {RSS_TARGET_MB:.0f}); healthy afterwards: {healthy}; "
          f"targets {'met' if met else 'MISSED'}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
