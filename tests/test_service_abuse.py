"""Hostile and broken clients against the real service on loopback (issue 17): bounded, never a 5xx.

Decompression bombs (a few hundred bytes claiming 30000 x 30000 pixels), lying WAV headers, HEAD on the
streams, bodies declared larger than the upload limit, made-up HTTP methods, malformed Open Inference
Protocol requests and deep JSON. Each case checks the answer and that the server stays healthy and small.
"""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import time
import urllib.error
import urllib.request
import wave
import zlib

import numpy as np
import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import TOKEN, live_server, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

pytestmark = requires_gcc
MAX_RSS_GROWTH_MB = 150  # what a bomb would cost if decoded: 2.7 GB for the 30000 x 30000 JPEG


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _request(url, data=None, headers=None, method=None, timeout=10.0):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _multipart(fields: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "voxedge-abuse"
    parts = []
    for name, data in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _predict(url, **fields):
    body, ctype = _multipart(fields)
    return _request(url + "/predict", body, {"Content-Type": ctype})


def _jpeg(width=32, height=24) -> bytes:
    import cv2

    return cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))[1].tobytes()


def _lying_jpeg(width: int, height: int) -> bytes:
    data = bytearray(_jpeg())
    i = data.index(b"\xff\xc0")  # baseline frame header: FF C0, length, precision, height, width
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _lying_png(width: int, height: int) -> bytes:
    import cv2

    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid IHDR CRC: only the size lies
    return bytes(data)


def _wav(rate=16000, channels=1, width=2, frames=1600) -> bytearray:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(max(rate, 1))
        w.writeframes(b"\0" * (frames * channels * width))
    return bytearray(buf.getvalue())


def _patched(data: bytearray, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(data)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize("make, status, message", [
    (lambda: _lying_jpeg(30000, 30000), 413, "jpeg of 30000x30000 pixels"),
    (lambda: _lying_png(30000, 30000), 413, "png of 30000x30000 pixels"),
    (lambda: _lying_png(5000, 10), 413, "4096 px a side"),
    (lambda: _lying_jpeg(0, 0), 400, "header is damaged"),
    (lambda: b"BM" + b"\0" * 100, 400, "not a PNG or JPEG"),
    (lambda: _jpeg()[:40], 400, "JPEG"),
    (lambda: b"\xff\xd8\xff\xda" + b"\0" * 50, 400, "without a frame header"),
])
def test_image_bombs_and_lies_are_refused_from_the_header(live_server, make, status, message):
    url, _, _ = live_server
    before = _rss_mb()
    t0 = time.monotonic()
    code, body = _predict(url, image=make())
    assert code == status and message in json.loads(body)["error"], body
    assert time.monotonic() - t0 < 5.0 and _rss_mb() - before < MAX_RSS_GROWTH_MB


@pytest.mark.parametrize("make, message", [
    (lambda: _wav(rate=1, width=1, frames=16000), "at 1 Hz"),  # was resampled 16,000-fold: +1.1 GB
    (lambda: _patched(_wav(), 24, "<I", 0), "at 0 Hz"),
    (lambda: _wav(rate=400_000), "at 400000 Hz"),
    (lambda: _patched(_wav(), 22, "<H", 0), "channels"),
    (lambda: _patched(_wav(), 22, "<H", 200), "200 channels"),
    (lambda: _patched(_wav(), 40, "<I", 0xFFFFFF00), "134217.7 s of audio"),  # a data chunk of 4 GB
    (lambda: _patched(_wav(), 40, "<I", 3400), "header says 1700 frames but whose data holds 1600"),
    (lambda: bytes(_wav()[:-100]), "header says 1600 frames"),
    (lambda: _wav(rate=8000, frames=8000 * 31), "longer than the 30 s"),
    (lambda: b"RIFF\xff\xff\xff\xffWAVE", "not a PCM WAV"),
])
def test_lying_wav_headers_are_400_before_any_conversion(live_server, make, message):
    url, _, _ = live_server
    before = _rss_mb()
    code, body = _predict(url, image=_jpeg(160, 120), audio=make())
    assert code == 400 and message in json.loads(body)["error"], body
    assert _rss_mb() - before < MAX_RSS_GROWTH_MB


def _counts(url) -> dict:
    return json.loads(_request(url + "/api/state")[1])["service"]


def test_head_on_the_streams_takes_no_slot(live_server):
    url, _, _ = live_server
    for _ in range(6):
        assert _request(url + "/stream.mjpg", method="HEAD")[0] == 200
    for _ in range(10):
        assert _request(url + "/api/events", method="HEAD")[0] == 200
    time.sleep(0.3)
    c = _counts(url)
    assert c["viewers"] == 0 and c["sse_clients"] == 0, c
    with urllib.request.urlopen(url + "/api/events", timeout=10) as r:  # a real client still gets in
        assert r.readline().startswith(b"retry:")


def _wait_for_no_streams(url, timeout_s=5.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        c = _counts(url)
        if c["viewers"] == 0 and c["sse_clients"] == 0:
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def test_a_departed_event_client_frees_its_slot_within_seconds(live_server):
    url, _, _ = live_server
    _wait_for_no_streams(url)  # the previous test's client
    r = urllib.request.urlopen(url + "/api/events", timeout=10)
    r.readline()
    assert _counts(url)["sse_clients"] == 1
    r.close()
    waited = _wait_for_no_streams(url)
    assert _counts(url)["sse_clients"] == 0
    print(f"slot freed {waited:.1f} s after the client left")


def test_a_body_declared_over_the_limit_is_refused_from_its_headers(live_server):
    """Content-Length 600 MB and no body: answered at once with 413, nothing spooled."""
    url, _, _ = live_server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v2/models/voxedge/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 629145600\r\n\r\n" + b"{" * 1000)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /api/estop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 629145600\r\n\r\n", b"413"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: twelve\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", b"431"),
])
def test_the_servers_own_error_replies_carry_the_security_headers(live_server, request_bytes, status):
    """waitress answers these itself, before the app sees the request: the same headers must still be there."""
    url, _, _ = live_server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request_bytes)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    head = reply.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert re.match(r"http/1\.[01] " + status.decode(), head), head[:200]  # 1.0 when the request line was not read
    for name in ("content-security-policy", "x-content-type-options: nosniff", "x-frame-options: deny",
                 "cache-control: no-store"):
        assert name in head, f"{name!r} missing from waitress's own {status.decode()}: {head}"


def test_made_up_methods_do_not_grow_the_metrics(live_server):
    url, _, _ = live_server
    before = len(_request(url + "/metrics")[1])
    for i in range(300):
        _request(url + "/api/state", method=f"X{i}YZ")
    after = _request(url + "/metrics")[1]
    assert len(after) - before < 5000, (before, len(after))
    assert b'method="other"' in after and b"X17YZ" not in after


V2 = "/v2/models/voxedge/infer"
GOOD_AUDIO = {"name": "audio", "shape": [1, 32000], "datatype": "FP32", "parameters": {"binary_data_size": 128000}}


@pytest.mark.parametrize("body", [
    {"inputs": [{"name": ["image"], "shape": [1], "datatype": "UINT8", "data": [0]}]},
    {"inputs": [{"name": {"a": 1}, "shape": [1], "datatype": "UINT8", "data": [0]}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "parameters": [1]}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "parameters": "x"}]},
    {"inputs": [{"name": "image", "shape": [2**62, 120, 160, 3], "datatype": "UINT8",
                 "parameters": {"binary_data_size": 1}}]},
    {"inputs": [{"name": "image", "shape": [2**70, 120, 160, 3], "datatype": "UINT8", "data": [0]}]},
    {"inputs": [{"name": "image", "shape": [True, 120, 160, 3], "datatype": "UINT8", "data": [0]}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "data": [300] * 57600}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "data": [-1] * 57600}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "data": ["a"] * 57600}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "data": [[1, 2], [3]]}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "data": [1e400] * 57600}]},
    {"inputs": [{"name": "image", "shape": "1,120,160,3", "datatype": "UINT8", "data": [0]}]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": ["UINT8"], "data": [0]}]},
    {"inputs": "image"},
    {"inputs": [None]},
    [],
    "inputs",
    None,
    {"inputs": [], "outputs": [{"name": ["x"]}]},
    {"inputs": [], "outputs": "intent_logits"},
    {"inputs": [], "parameters": [1, 2]},
    {"inputs": [{"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8",
                 "parameters": {"binary_data_size": True}}]},
], ids=lambda b: json.dumps(b)[:60])
def test_malformed_v2_requests_are_400(live_server, body):
    url, _, _ = live_server
    code, reply = _request(url + V2, json.dumps(body).encode(), {"Content-Type": "application/json"})
    # 413: a shape too large for JSON data is refused as too large before the data is read
    assert code == 400 or (code == 413 and b"too large" in reply), (code, reply[:300])
    assert json.loads(reply)["error"]


@pytest.mark.parametrize("path, headers", [
    (V2, {}),
    ("/api/drive", {"Authorization": f"Bearer {TOKEN}"}),
    ("/api/say", {"Authorization": f"Bearer {TOKEN}"}),
])
def test_deeply_nested_json_is_a_400_not_a_crash(live_server, path, headers):
    url, _, _ = live_server
    body = b"[" * 100_000 + b"]" * 100_000
    code, reply = _request(url + path, body, {"Content-Type": "application/json", **headers})
    assert code in (400, 403), (code, reply[:300])  # 403: the CSRF check comes first on panel endpoints


def test_the_server_is_healthy_after_the_abuse(live_server):
    url, _, _ = live_server
    assert _request(url + "/v2/health/ready")[0] == 200
    _wait_for_no_streams(url)
    c = _counts(url)
    assert c["viewers"] == 0 and c["sse_clients"] == 0
    code, body = _predict(url, image=_jpeg(160, 120))
    assert code == 200 and "intent" in json.loads(body)


@pytest.fixture
def strict_server(sim_runtime):  # noqa: F811
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server

    runtime, _ = sim_runtime
    config = ServiceConfig(port=0, token=TOKEN, request_head_timeout_s=1.5, request_body_timeout_s=3.0)
    server = Server(create_app(runtime, config), config).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_a_slow_client_is_dropped_at_its_read_deadline(strict_server, stage):
    """One header line (or body chunk) every 0.4 s keeps waitress's inactivity timer happy forever; the
    request deadline (1.5 s for headers, 3 s for the body here; 10 s and 60 s by default) does not."""
    host, port = strict_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        if stage == "body":
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                      b"Content-Length: 100000\r\n\r\n")
        else:
            s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        closed_after = None
        while time.monotonic() - t0 < 8.0:
            try:
                s.sendall(b"X-Slow: 1\r\n" if stage == "headers" else b"0123456789")
                time.sleep(0.4)
            except OSError:
                closed_after = time.monotonic() - t0
                break
        limit = 1.5 if stage == "headers" else 3.0
        assert closed_after is not None and limit <= closed_after <= limit + 2.5, closed_after
    assert _request(strict_server + "/v2/health/ready")[0] == 200  # everyone else is served as before
