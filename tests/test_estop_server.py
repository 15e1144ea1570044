"""The e-stop listener (issue 17 point 1): its own port and thread, answering while the main server is exhausted."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from edge.service.estop_server import MAX_CONNECTIONS, REQUEST_DEADLINE_S, EStopServer
from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import live_server, sim_bundle, sim_runtime  # noqa: F401 (fixtures)


@pytest.fixture
def listener():
    calls = []
    server = EStopServer("127.0.0.1", 0, calls.append, lambda: {"estopped": bool(calls)}).start()
    try:
        yield server, calls
    finally:
        server.stop()


def _call(port: int, method: str, path: str = "/api/estop", timeout: float = 5.0):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_it_stops_answers_its_state_and_nothing_else(listener):
    server, calls = listener
    assert _call(server.port, "GET")[2] == b'{"estopped": false}'
    status, headers, body = _call(server.port, "POST")
    assert status == 200 and json.loads(body) == {"ok": True} and calls == ["127.0.0.1"]
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Cache-Control"] == "no-store"
    assert json.loads(_call(server.port, "GET")[2]) == {"estopped": True}
    assert _call(server.port, "OPTIONS")[0] == 204
    status, _, body = _call(server.port, "GET", "/api/state")
    assert status == 404 and b"main port" in body
    assert _call(server.port, "DELETE")[0] == 405
    assert server.estops == 1


def test_slow_and_idle_sockets_cannot_keep_an_estop_out(listener):
    server, calls = listener
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS + 50)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"POST /api/estop HTTP/1.1\r\n")  # and never the rest
    try:
        t0 = time.monotonic()
        status, _, _ = _call(server.port, "POST", timeout=REQUEST_DEADLINE_S + 1)
        assert status == 200 and time.monotonic() - t0 < 1.0 and len(calls) == 1
        time.sleep(REQUEST_DEADLINE_S + 0.3)
        slow.settimeout(1.0)
        assert slow.recv(100) == b""  # closed at its deadline, unanswered
        assert server.dropped >= 50
    finally:
        for s in (*idle, slow):
            s.close()


def test_garbage_and_oversized_requests_are_refused(listener):
    server, calls = listener
    for payload, expect in ((b"hello\r\n\r\n", b"400"), (b"POST /api/estop HTTP/1.1\r\n" + b"X: y\r\n" * 2000, b"413"),
                            (b"POST /api/estop HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
            s.sendall(payload)
            assert s.recv(100).split(b" ")[1] == expect
    assert calls == []


@requires_gcc
def test_estop_gets_through_while_slow_sockets_exhaust_the_main_server(live_server):  # noqa: F811
    """250 slow sockets fill waitress's 200 connections: the main port's e-stop waits, the e-stop port's does not."""
    url, _, runtime = live_server

    host, port = url.removeprefix("http://").split(":")
    estop_port = _estop_port_of(url)
    stop = threading.Event()
    socks = []
    for _ in range(250):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)

    def trickle():
        while not stop.wait(1.0):
            for s in socks:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    try:
        time.sleep(0.5)
        latencies = []
        for _ in range(20):
            t0 = time.monotonic()
            status, _, _ = _call(estop_port, "POST", timeout=2.0)
            latencies.append(time.monotonic() - t0)
            assert status == 200
        assert runtime.actuator.estop_event.is_set()
        print(f"e-stop port under 250 slow sockets: max {1000 * max(latencies):.1f} ms")
    finally:
        stop.set()
        for s in socks:
            s.close()
        runtime.actuator.release_estop()
        runtime.actuator.request("clear_failsafe")


def _estop_port_of(url: str) -> int:
    import re

    page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
    return int(re.search(r'name="estop-port" content="(\d+)"', page).group(1))
