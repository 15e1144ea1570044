"""Read access control (issue 17 point 4): with read_auth on, seeing or hearing the robot needs the token."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from edge.service.config import ServiceConfig, ServiceConfigError
from edge.service.security import token_strength_problem
from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import TOKEN, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

READS = ["/api/state", "/api/bundle", "/api/events", "/stream.mjpg", "/metrics"]


@pytest.fixture(scope="module")
def guarded(sim_runtime):  # noqa: F811
    from edge.service import create_app
    from edge.service.server import Server

    runtime, _ = sim_runtime
    config = ServiceConfig(port=0, token=TOKEN, read_auth="on")
    server = Server(create_app(runtime, config), config).start()
    try:
        yield server.url
    finally:
        server.stop()


def _open(url, headers=None, method=None, data=None):
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        r = urllib.request.urlopen(req, timeout=10)
        status = r.status
        head = dict(r.headers)
        body = r.read(200)
        r.close()
        return status, head, body
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@requires_gcc
def test_without_the_token_nothing_of_the_robot_is_shown(guarded):
    for path in READS:
        status, _, body = _open(guarded + path)
        assert status == 401 and b"operator only" in body, (path, status)
    status, _, body = _open(guarded + "/predict", method="POST", data=b"")
    assert status == 401
    # the Open Inference Protocol reads as gRPC guards them: only liveness and readiness stay open
    for path in ("/v2", "/v2/models/voxedge", "/v2/models/voxedge/config"):
        assert _open(guarded + path)[0] == 401, path
    for path in ("/v2/repository/index", "/v2/models/voxedge/infer"):
        assert _open(guarded + path, {"Content-Type": "application/json"}, "POST", b"{}")[0] == 401, path
    assert _open(guarded + "/v2/models/voxedge", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # the panel page itself loads (it asks for the token), e-stop needs nothing, health stays open
    status, headers, _ = _open(guarded + "/")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert _open(guarded + "/v2/health/ready")[0] == 200
    assert _open(guarded + "/api/estop", method="POST", data=b"")[0] == 200


@requires_gcc
def test_the_token_or_its_session_cookie_opens_every_read(guarded, sim_runtime):  # noqa: F811
    runtime, _ = sim_runtime
    runtime.actuator.release_estop()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in READS:
        assert _open(guarded + path, bearer)[0] == 200, path
    assert _open(guarded + "/api/session", {"Authorization": "Bearer wrong-token-0123456789abcdef"}, "POST", b"")[0] == 401
    status, headers, _ = _open(guarded + "/api/session", bearer, "POST", b"")
    cookie = headers["Set-Cookie"]
    assert status == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    for path in READS:
        assert _open(guarded + path, jar)[0] == 200, path
    assert _open(guarded + "/api/session", jar, "DELETE")[0] == 200
    assert _open(guarded + "/api/state", jar)[0] == 401  # the session ended


def test_read_auth_defaults_to_on_beyond_loopback():
    assert not ServiceConfig(token=TOKEN).read_auth_on
    assert ServiceConfig(token=TOKEN, host="0.0.0.0").read_auth_on
    assert not ServiceConfig(token=TOKEN, host="0.0.0.0", read_auth="off").read_auth_on
    with pytest.raises(ServiceConfigError, match="read_auth"):
        ServiceConfig(token=TOKEN, read_auth="maybe")


@pytest.mark.parametrize("token, problem", [
    ("short", "5 characters"),
    ("a" * 16, "too predictable"),
    ("abababababababababab", "too predictable"),
    ("0123456789abcdef", None),
    ("3f9c2b7e1a4d8c6f0b5e9a2d7c1f4e8b", None),
])
def test_tokens_need_length_and_entropy(token, problem):
    found = token_strength_problem(token)
    assert (found is None) if problem is None else (problem in found), found
    if problem:
        with pytest.raises(ServiceConfigError, match=problem):
            ServiceConfig(token=token)
