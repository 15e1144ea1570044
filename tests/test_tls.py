"""``voxedge serve --tls-cert/--tls-key``: https on the HTTP and e-stop ports of a real server (edge.service.tls).

A self-signed certificate made with the openssl command line; clients trust exactly it. The client
connects from 127.0.0.2, so the test can tell the client's own address from the relay's 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from edge.service.state import snapshot
from tests.service_fixtures import TOKEN, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")

CLIENT_ADDRESS = "127.0.0.2"  # all of 127/8 is loopback on Linux


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module")
def tls_server(sim_runtime, pem):  # noqa: F811
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server

    runtime, _ = sim_runtime
    config = ServiceConfig(port=0, token=TOKEN, tls_cert=str(pem[0]), tls_key=str(pem[1]))
    server = Server(create_app(runtime, config), config).start()
    try:
        yield server, runtime
    finally:
        server.stop()


def _client_context(pem) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pem[0]))


def _request(port, pem, method, path, body=None, headers=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=_client_context(pem), timeout=10,
                                       source_address=(CLIENT_ADDRESS, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def test_the_panel_and_api_answer_over_https_with_the_clients_own_address(tls_server, pem):
    server, runtime = tls_server
    assert server.url.startswith("https://127.0.0.1:") and server.estop_url.startswith("https://")
    status, headers, body = _request(server.port, pem, "GET", "/")
    assert status == 200 and b"voxedge" in body
    # the panel calls the e-stop port with the page's scheme: the CSP must allow https there
    assert f"https://127.0.0.1:{server.estop.port}" in headers["Content-Security-Policy"]
    status, _, body = _request(server.port, pem, "GET", "/api/state")
    assert status == 200 and "uptime_s" in json.loads(body)
    status, _, _ = _request(server.port, pem, "POST", "/api/estop")
    assert status == 200 and runtime.actuator.estop_event.is_set()
    assert f"E-STOP from {CLIENT_ADDRESS}" in json.dumps(snapshot(runtime)), "the relay's 127.0.0.1 reached the app"
    runtime.actuator.release_estop()


def test_the_estop_port_speaks_tls_too(tls_server, pem):
    server, runtime = tls_server
    status, headers, body = _request(server.estop.port, pem, "POST", "/api/estop")
    assert status == 200 and json.loads(body) == {"ok": True}
    assert runtime.actuator.estop_event.is_set()
    status, _, body = _request(server.estop.port, pem, "GET", "/api/estop")
    assert status == 200 and json.loads(body)["estopped"] is True
    runtime.actuator.release_estop()


def test_plain_http_and_silent_clients_are_dropped_and_the_server_goes_on(tls_server, pem, monkeypatch):
    import edge.service.tls as tls

    server, _ = tls_server
    monkeypatch.setattr(tls, "HANDSHAKE_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # plain HTTP: told, not served
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b"speaks https" in reply, reply
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        start = time.monotonic()
        assert silent.recv(1) == b"", "a client that never starts the handshake must be dropped"
        assert time.monotonic() - start < 3.0
    finally:
        silent.close()
    assert _request(server.port, pem, "GET", "/api/state")[0] == 200


def test_a_streaming_reply_is_relayed_and_its_slot_freed(tls_server, pem):
    server, runtime = tls_server
    ctx = _client_context(pem)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        got = b""
        while got.count(b"\xff\xd8") < 2 and len(got) < 2_000_000:  # two JPEG frames
            chunk = s.recv(65536)
            assert chunk, "the stream ended"
            got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        state = json.loads(_request(server.port, pem, "GET", "/api/state")[2])
        if state["service"]["viewers"] == 0:
            break
        time.sleep(0.2)
    assert state["service"]["viewers"] == 0, state["service"]


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "no such file"),
    (["--tls-cert", "README.md", "--tls-key", "README.md"], "not a matching PEM certificate and private key"),
    (["--tls-cert", "README.md"], "needs both --tls-cert and --tls-key"),
])
def test_bad_tls_settings_are_one_line(args, message, sim_bundle):  # noqa: F811
    r = subprocess.run([sys.executable, "-m", "edge.cli", "serve", str(sim_bundle.path), "--sim", "--port", "0",
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert message in r.stderr.strip().splitlines()[-1], r.stderr
