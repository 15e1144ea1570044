"""The HTTP service on the simulated robot: API, Open Inference Protocol with the real tritonclient, safety and security."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
import wave

import numpy as np
import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import TOKEN, live_server, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

pytestmark = requires_gcc


@pytest.fixture(scope="module")
def client(sim_runtime):
    from edge.service import ServiceConfig, create_app

    runtime, _ = sim_runtime
    app = create_app(runtime, ServiceConfig(token=TOKEN, infer_burst=400, infer_rate_per_s=400.0))
    app.testing = True
    return app.test_client(), app


def _auth(app, csrf=True):
    h = {"Authorization": f"Bearer {TOKEN}"}
    if csrf:
        h["X-CSRF-Token"] = app.config["CSRF_TOKEN"]
    return h


def _png(shape=(240, 320, 3), seed=0):
    import cv2

    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _wav(seconds=1.0, rate=44100, channels=2):
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).tobytes())
    return buf.getvalue()


# -- inference ---------------------------------------------------------------------------

def test_predict_with_image_and_wav(client):
    c, _ = client
    r = c.post("/predict", data={"image": (io.BytesIO(_png()), "f.png"), "audio": (io.BytesIO(_wav()), "a.wav")})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["intent"] in body["probabilities"] and 0 <= body["confidence"] <= 1
    assert len(body["target_xy"]) == 2 and 0 <= body["presence"] <= 1 and body["audio_source"] == "upload"
    assert body["timings_ms"]["inference"] > 0
    r = c.post("/predict", data={"image": (io.BytesIO(_png()), "f.png")})  # no audio: the microphone's last 2 s
    assert r.status_code == 200 and r.json["audio_source"].startswith("microphone")


@pytest.mark.parametrize("data, message", [
    ({}, "multipart form field 'image'"),
    ({"image": (io.BytesIO(b"not an image"), "x.png")}, "is not a PNG or JPEG image"),
    ({"image": (io.BytesIO(_png()), "x.png"), "audio": (io.BytesIO(b"RIFF1234WAVEjunk"), "a.wav")}, "not a PCM WAV"),
    ({"image": (io.BytesIO(_png()), "x.png"), "audio": (io.BytesIO(b"ID3\x03mp3 bytes"), "a.mp3")}, "not a PCM WAV"),
])
def test_predict_bad_uploads_are_400_with_a_reason(client, data, message):
    c, _ = client
    r = c.post("/predict", data=data)
    assert r.status_code == 400 and message in r.json["error"]


@pytest.mark.parametrize("body, ctype, status, message", [
    (b"garbage", "multipart/form-data; boundary=x", 400, "multipart/form-data body is malformed"),
    (b"--x\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc", "multipart/form-data; boundary=x", 400,
     "malformed"),  # the body ends inside a part
    (b"--x--\r\n", "multipart/form-data", 400, "no boundary"),
    (b"".join(b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(20))
     + b"--x--\r\n", "multipart/form-data; boundary=x", 413, "too many parts"),
    (b'{"image": "..."}', "application/json", 400, "multipart form field 'image'"),
])
def test_predict_malformed_forms_get_a_reason(client, body, ctype, status, message):
    c, _ = client
    r = c.post("/predict", data=body, content_type=ctype)
    assert r.status_code == status and message in r.json["error"], r.json


def test_predict_takes_the_first_of_repeated_fields(client):
    c, _ = client
    r = c.post("/predict", data={"image": [(io.BytesIO(_png()), "a.png"), (io.BytesIO(b"junk"), "b.png")]})
    assert r.status_code == 200, r.json


def test_uploads_over_the_limit_are_413(client):
    c, app = client
    big = b"\0" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    r = c.post("/predict", data={"image": (io.BytesIO(big), "x.png")})
    assert r.status_code == 413 and "larger than" in r.json["error"]


def test_v2_metadata_and_health(client):
    c, _ = client
    assert c.get("/v2/health/live").json == {"live": True}
    assert c.get("/v2/health/ready").status_code == 200
    meta = c.get("/v2/models/voxedge").json
    assert meta["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [-1, 120, 160, 3]}
    assert [o["name"] for o in meta["outputs"]] == ["intent_logits", "target_xy", "target_logit", "attention"]
    assert c.get("/v2/models/other").status_code == 404
    assert c.get("/v2/models/voxedge/versions/7").status_code == 404
    assert "binary_tensor_data" in c.get("/v2").json["extensions"]


def _v2_json(image, audio):
    return {"inputs": [
        {"name": "image", "shape": list(image.shape), "datatype": "UINT8", "data": image.ravel().tolist()},
        {"name": "audio", "shape": list(audio.shape), "datatype": "FP32", "data": audio.ravel().tolist()}]}


def test_v2_json_infer_matches_the_runner(client, sim_runtime):
    c, _ = client
    runtime, _ = sim_runtime
    golden = np.load(runtime.bundle.path / "golden.npz")
    image, audio = golden["input.image"][:2], golden["input.audio"][:2]
    r = c.post("/v2/models/voxedge/infer", json={**_v2_json(image, audio), "id": "req-1"})
    assert r.status_code == 200, r.json
    out = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in r.json["outputs"]}
    assert r.json["id"] == "req-1"
    np.testing.assert_allclose(out["intent_logits"], golden["output.intent_logits"][:2], atol=1e-3)


@pytest.mark.parametrize("mutate, status, message", [
    (lambda b: b["inputs"].pop(), 400, "missing inputs ['audio']"),
    (lambda b: b["inputs"][0].update(datatype="FP32"), 400, "must have datatype UINT8"),
    (lambda b: b["inputs"][0].update(shape=[1, 60, 80, 3]), 400, "the model takes [-1, 120, 160, 3]"),
    (lambda b: b["inputs"][1].update(data=[0.0] * 7), 400, "does not fit shape"),
    (lambda b: b["inputs"].append({"name": "depth", "shape": [1], "datatype": "FP32", "data": [0]}), 400,
     "unknown input 'depth'"),
    (lambda b: b["inputs"][1].update(shape=[2, 32000], data=[0.0] * 64000), 400, "same batch size"),
])
def test_v2_bad_tensors_are_400(client, mutate, status, message):
    c, _ = client
    body = _v2_json(np.zeros((1, 120, 160, 3), np.uint8), np.zeros((1, 32000), np.float32))
    mutate(body)
    r = c.post("/v2/models/voxedge/infer", json=body)
    assert r.status_code == status and message in r.json["error"], r.json


def test_v2_malformed_json_and_wrong_binary_lengths(client):
    c, _ = client
    r = c.post("/v2/models/voxedge/infer", data=b"{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json["error"]
    head = json.dumps({"inputs": [
        {"name": "image", "shape": [1, 120, 160, 3], "datatype": "UINT8", "parameters": {"binary_data_size": 57600}},
        {"name": "audio", "shape": [1, 32000], "datatype": "FP32", "parameters": {"binary_data_size": 128000}}]}).encode()
    short = head + b"\0" * 1000
    r = c.post("/v2/models/voxedge/infer", data=short, headers={"Inference-Header-Content-Length": str(len(head))},
               content_type="application/octet-stream")
    assert r.status_code == 400 and "binary bytes" in r.json["error"]
    r = c.post("/v2/models/voxedge/infer", data=head, headers={"Inference-Header-Content-Length": "999999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length=999999" in r.json["error"]


def test_tritonclient_binary_and_json(live_server):
    import tritonclient.http as httpclient

    url, _, runtime = live_server
    golden = np.load(runtime.bundle.path / "golden.npz")
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("voxedge")
    assert client.get_model_metadata("voxedge")["inputs"][1]["datatype"] == "FP32"
    for binary in (True, False):
        inputs = [httpclient.InferInput("image", [4, 120, 160, 3], "UINT8"),
                  httpclient.InferInput("audio", [4, 32000], "FP32")]
        inputs[0].set_data_from_numpy(golden["input.image"], binary_data=binary)
        inputs[1].set_data_from_numpy(golden["input.audio"], binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("intent_logits", "attention")]
        result = client.infer("voxedge", inputs, outputs=outputs)
        np.testing.assert_allclose(result.as_numpy("intent_logits"), golden["output.intent_logits"], atol=1e-3)
        assert result.as_numpy("attention").shape == (4, 15, 20)
    client.close()


# -- safety and security --------------------------------------------------------------------

def test_arming_needs_the_token_and_the_csrf_header_but_estop_needs_nothing(client, sim_runtime):
    c, app = client
    runtime, robot = sim_runtime
    assert c.post("/api/arm").status_code == 401
    assert c.post("/api/arm", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
    r = c.post("/api/arm", headers=_auth(app, csrf=False))
    assert r.status_code == 403 and "X-CSRF-Token" in r.json["error"]
    if runtime.actuator.estop_event.is_set():
        assert c.post("/api/clear-failsafe", headers=_auth(app)).status_code == 200
        runtime.link.wait_for_telemetry(lambda t: t.state.name == "DISARMED", timeout_s=2)
    assert c.post("/api/arm", headers=_auth(app)).status_code == 200
    runtime.link.wait_for_telemetry(lambda t: t.armed, timeout_s=2.0)
    r = c.post("/api/drive", json={"linear_m_s": 0.2, "angular_rad_s": 0.0}, headers=_auth(app))
    assert r.status_code == 200
    runtime.link.wait_for_telemetry(lambda t: not t.motors_stopped, timeout_s=1.0)
    assert c.post("/api/estop").status_code == 200  # no token, no CSRF header
    runtime.link.wait_for_telemetry(lambda t: t.state.name == "ESTOP" and t.motors_stopped, timeout_s=1.0)
    r = c.post("/api/drive", json={"linear_m_s": 0.2, "angular_rad_s": 0.0}, headers=_auth(app))
    assert r.status_code == 409 and "e-stopped" in r.json["error"]
    assert c.post("/api/clear-failsafe", headers=_auth(app)).status_code == 200
    runtime.link.wait_for_telemetry(lambda t: t.state.name == "DISARMED", timeout_s=2.0)


@pytest.mark.parametrize("body, message", [
    ({"linear_m_s": "fast", "angular_rad_s": 0}, "finite number"),
    ({"linear_m_s": 5.0, "angular_rad_s": 0}, "beyond the manual-driving limit"),
    ({"linear_m_s": 0.1}, "'angular_rad_s' must be a finite number"),
    (["not", "an", "object"], "JSON object"),
])
def test_drive_validates_its_body(client, body, message):
    c, app = client
    r = c.post("/api/drive", json=body, headers=_auth(app))
    assert r.status_code == 400 and message in r.json["error"]


def test_say_speaks_into_the_sim_microphone_and_a_decision_follows(client, sim_runtime):
    c, app = client
    runtime, _ = sim_runtime
    mark = runtime.events_after()[-1].id if runtime.events_after() else 0
    assert c.post("/api/say", json={"text": ""}, headers=_auth(app)).status_code == 400
    assert c.post("/api/say", json={"text": "turn right"}, headers=_auth(app)).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        decisions = [e for e in runtime.events_after(mark, timeout_s=0.5) if e.kind == "decision"]
        if decisions:
            break
    assert decisions and decisions[0].data["intent"] == "turn_right", [e.text for e in runtime.events_after(mark)]
    state = c.get("/api/state").json
    assert state["decision"]["intent"] == "turn_right" and state["vad"]["utterances"] >= 1
    wav = c.get("/api/utterance.wav")
    assert wav.status_code == 200 and wav.data[:4] == b"RIFF"


def test_host_header_allowlist_and_security_headers(client):
    c, _ = client
    r = c.get("/api/state", headers={"Host": "evil.example"})
    assert r.status_code == 403 and "not this robot" in r.json["error"]
    r = c.get("/api/state", headers={"Host": "127.0.0.1:8080"})
    assert r.status_code == 200
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("header, name", [("127.0.0.1:8080", "127.0.0.1"), ("Robot.Local", "robot.local"),
                                          ("[::1]:8080", "[::1]"), ("[::1]", "[::1]"), ("::1", "::1"),
                                          ("robot.local:", "robot.local")])
def test_one_host_header_parser_for_the_allowlist_and_the_estop_origin(header, name):
    from edge.service.security import host_allowed, host_name

    assert host_name(header) == name
    assert host_allowed(header, {name.strip("[]")}) and not host_allowed(header, {"evil.example"})


def test_errors_are_json_with_the_right_status(client):
    c, _ = client
    r = c.get("/nope")
    assert r.status_code == 404 and "no such endpoint" in r.json["error"]
    r = c.get("/api/estop")
    assert r.status_code == 405 and r.is_json


def test_inference_is_rate_limited(sim_runtime):
    from edge.service import ServiceConfig, create_app

    runtime, _ = sim_runtime
    app = create_app(runtime, ServiceConfig(token=TOKEN, infer_rate_per_s=1.0, infer_burst=3))
    c = app.test_client()
    body = _v2_json(np.zeros((1, 120, 160, 3), np.uint8), np.zeros((1, 32000), np.float32))
    codes = [c.post("/v2/models/voxedge/infer", json=body).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = c.post("/v2/models/voxedge/infer", json=body)
    assert r.headers["Retry-After"] and "at most 1/s" in r.json["error"]


def test_metrics_and_openapi(client):
    c, app = client
    c.get("/api/state")
    text = c.get("/metrics").data.decode()
    for name in ("voxedge_http_requests_total", "voxedge_inference_stage_seconds_bucket",
                 "voxedge_link_crc_errors_total", "voxedge_vad_utterances_total", "voxedge_utterance_queue_drops_total",
                 "voxedge_camera_frames_per_second", "voxedge_alerts_total", "voxedge_build_info"):
        assert name in text, name
    doc = c.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    routes = {r.rule.replace("<", "{").replace(">", "}") for r in app.url_map.iter_rules() if r.endpoint != "static"}
    routes = {r for r in routes if "versions" not in r}
    assert routes <= set(doc["paths"]), routes - set(doc["paths"])


# -- the real server: streams, caps, no leaks -----------------------------------------------

def _get(url, headers=None, timeout=5):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)


def test_mjpeg_live_view_and_viewer_cap(live_server):
    url, _, runtime = live_server
    streams = []
    try:
        first = _get(url + "/stream.mjpg")
        assert first.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        chunk = first.read(4096)
        while b"\xff\xd9" not in chunk and len(chunk) < 200_000:
            chunk += first.read(4096)
        assert b"Content-Type: image/jpeg" in chunk and b"\xff\xd8" in chunk
        streams.append(first)
        for _ in range(3):
            streams.append(_get(url + "/stream.mjpg"))
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(url + "/stream.mjpg")
        assert err.value.code == 503 and "limit" in json.loads(err.value.read())["error"]
    finally:
        for s in streams:
            s.close()


def test_sse_streams_events(live_server):
    url, _, runtime = live_server
    stream = _get(url + "/api/events?after=0", timeout=10)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    runtime.alert("test alert for the event stream")
    data = b""
    deadline = time.monotonic() + 5
    while b"test alert for the event stream" not in data and time.monotonic() < deadline:
        data += stream.read1(65536)
    stream.close()
    assert b"event: alert" in data and b"id: " in data


def test_bad_requests_do_not_crash_or_leak_threads(live_server):
    url, _, _ = live_server
    before = threading.active_count()
    bad = [("POST", "/v2/models/voxedge/infer", b"{", {"Content-Type": "application/json"}),
           ("POST", "/predict", b"garbage", {"Content-Type": "multipart/form-data; boundary=x"}),
           ("POST", "/api/drive", b"{}", {"Content-Type": "application/json"}),
           ("GET", "/v2/models/../../etc/passwd", None, {}),
           ("POST", "/v2/models/voxedge/infer", b"{}", {"Inference-Header-Content-Length": "-5"})]
    for _ in range(10):
        for method, path, body, headers in bad:
            req = urllib.request.Request(url + path, data=body, method=method, headers=headers)
            try:
                urllib.request.urlopen(req, timeout=5)
            except urllib.error.HTTPError as exc:
                assert 400 <= exc.code < 500, (path, exc.code)
                assert json.loads(exc.read())["error"]
    assert _get(url + "/v2/health/live").status == 200
    time.sleep(0.5)
    assert threading.active_count() <= before + 2


def test_requests_and_curl_clients(live_server):
    import shutil
    import subprocess

    import requests

    url, token, runtime = live_server
    r = requests.post(url + "/predict", files={"image": ("f.png", _png(), "image/png"),
                                                "audio": ("a.wav", _wav(), "audio/wav")}, timeout=10)
    assert r.status_code == 200 and r.json()["intent"] in r.json()["probabilities"]
    r = requests.post(url + "/api/arm", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 403  # a program without the panel's CSRF header cannot arm through the panel API
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(["curl", "-s", "-f", url + "/v2/health/ready"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and json.loads(out.stdout) == {"ready": True}
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url + "/api/estop"],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "200"
    runtime.link.wait_for_telemetry(lambda t: t.state.name == "ESTOP", timeout_s=1.0)
    runtime.actuator.release_estop()
    runtime.actuator.request("clear_failsafe")
    runtime.link.wait_for_telemetry(lambda t: t.state.name == "DISARMED", timeout_s=2.0)


def test_concurrent_requests_each_get_their_own_answer(client, sim_runtime):
    from concurrent.futures import ThreadPoolExecutor

    runtime, _ = sim_runtime
    golden = np.load(runtime.bundle.path / "golden.npz")
    feeds = [{"image": golden["input.image"][i : i + 1], "audio": golden["input.audio"][i : i + 1]} for i in range(4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda f: runtime.worker.request(f)[0], feeds * 4))
    for i, out in enumerate(results):
        np.testing.assert_allclose(out["intent_logits"], golden["output.intent_logits"][i % 4 : i % 4 + 1], atol=1e-3)
        assert out["attention"].shape == (1, 15, 20)


def test_a_wildcard_bind_says_how_other_machines_reach_the_panel():
    import secrets

    from edge.service.config import ServiceConfig
    from edge.service.server import banner, lan_address

    token = secrets.token_hex(16)
    wide = banner(ServiceConfig(host="0.0.0.0", token=token), "http://127.0.0.1:8080")
    there = lan_address() or "<this machine's address>"
    assert f"listening on every interface (0.0.0.0): from other machines open http://{there}:8080" in wide
    assert "every interface" not in banner(ServiceConfig(host="127.0.0.1", token=token), "http://127.0.0.1:8080")


@pytest.mark.parametrize("size, decoded", [((640, 480), (160, 120)), ((1280, 960), (160, 120)),
                                           ((400, 300), (200, 150)), ((300, 200), (300, 200))])
def test_large_uploads_decode_reduced_but_never_below_the_models_size(client, size, decoded):
    import cv2

    from edge.service.inference import decode_image, model_frame

    _, app = client
    w, h = size
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    with app.test_request_context("/predict"):
        bgr = decode_image(jpeg, (160, 120))
        assert (bgr.shape[1], bgr.shape[0]) == decoded
        pre = app.config["RUNTIME"].bundle.manifest.preprocessing
        frame = model_frame(bgr, pre)
    full = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    reference = cv2.resize(full, (160, 120), interpolation=cv2.INTER_AREA)[:, :, ::-1]  # the runtime's path
    assert frame.shape[1:3] == (120, 160) or frame.shape[2:] == (120, 160)
    rgb = frame[0] if frame.shape[-1] == 3 else frame[0].transpose(1, 2, 0)
    assert np.mean(np.abs(rgb.astype(int) - reference.astype(int))) < 4.0  # the DCT-scaled decode is that close
