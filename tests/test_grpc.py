"""Triton over gRPC (issue 20 point 4): ``voxedge serve --grpc-port`` answers the stock ``tritonclient.grpc``
client (health, metadata, config, statistics, repository index, infer) with the HTTP side's rules, results and
statistics counters."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import urllib.request

import numpy as np
import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import TOKEN, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def grpc_server(sim_runtime):  # noqa: F811
    """A real server (HTTP + gRPC on free ports) with read auth on: every read needs the token."""
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server

    runtime, _ = sim_runtime
    config = ServiceConfig(port=0, estop_port=0, grpc_port=0, token=TOKEN, read_auth="on")
    server = Server(create_app(runtime, config), config).start()
    client = grpcclient.InferenceServerClient(url=server.grpc_address)
    try:
        yield server, client, runtime
    finally:
        client.close()
        server.stop()


def _http(server, path, body=None, headers=None):
    request = urllib.request.Request(server.url + path, data=body, headers={**(headers or {}),
                                                                            "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def _inputs(image: np.ndarray, audio: np.ndarray):
    inputs = [grpcclient.InferInput("image", list(image.shape), "UINT8"),
              grpcclient.InferInput("audio", list(audio.shape), "FP32")]
    inputs[0].set_data_from_numpy(image)
    inputs[1].set_data_from_numpy(audio)
    return inputs


def _stats(client) -> dict:
    (s,) = client.get_inference_statistics("voxedge", headers=AUTH, as_json=True)["model_stats"]
    return s


def _count(stats: dict, key: str) -> int:
    return int(stats["inference_stats"][key].get("count", 0))  # protobuf JSON leaves zeros out


@requires_gcc
def test_health_metadata_config_and_index_match_the_http_side(grpc_server):
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    server, client, runtime = grpc_server
    manifest = runtime.bundle.manifest
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("voxedge")
    assert client.is_model_ready("voxedge", "1")
    with pytest.raises(InferenceServerException, match="unknown model 'other'") as exc:
        client.is_model_ready("other")
    assert exc.value.status() == "StatusCode.NOT_FOUND"

    meta = client.get_server_metadata(headers=AUTH)
    assert meta.name == "voxedge" and "statistics" in meta.extensions
    model = client.get_model_metadata("voxedge", headers=AUTH)

    def tensors(items):
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    http = _http(server, "/v2/models/voxedge")
    assert {"name": model.name, "versions": list(model.versions), "platform": model.platform,
            "inputs": tensors(model.inputs), "outputs": tensors(model.outputs)} == http
    assert [i.name for i in model.inputs] == [t.name for t in manifest.inputs]
    assert [i.datatype for i in model.inputs] == ["UINT8", "FP32"]

    config = client.get_model_config("voxedge", headers=AUTH).config
    assert isinstance(config, model_config_pb2.ModelConfig)
    http_config = json_format.ParseDict(_http(server, "/v2/models/voxedge/config"), model_config_pb2.ModelConfig())
    assert config == http_config and config.name == "voxedge" and config.platform == "onnxruntime_onnx"
    assert client.get_model_config("voxedge", "1", headers=AUTH).config == config

    (entry,) = client.get_model_repository_index(headers=AUTH).models
    assert (entry.name, entry.version, entry.state, entry.reason) == ("voxedge", "1", "READY", "")
    with pytest.raises(InferenceServerException, match="has no version '2'") as exc:
        client.get_model_metadata("voxedge", "2", headers=AUTH)
    assert exc.value.status() == "StatusCode.NOT_FOUND"
    # what the stock client does not send, over the generated stub: the ready-only index
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), metadata=tuple(AUTH.items()))
        assert [m.name for m in index.models] == ["voxedge"]
        with pytest.raises(grpc.RpcError) as rpc:  # left to the base class
            stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest())
        assert rpc.value.code() == grpc.StatusCode.UNIMPLEMENTED


@requires_gcc
def test_infer_matches_http_and_golden_and_both_protocols_count_into_one_statistics(grpc_server):
    server, client, runtime = grpc_server
    golden = np.load(runtime.bundle.path / "golden.npz")
    image, audio = golden["input.image"], golden["input.audio"]
    before = _stats(client)

    result = client.infer("voxedge", _inputs(image, audio), headers=AUTH, request_id="r1")
    logits = result.as_numpy("intent_logits")
    np.testing.assert_allclose(logits, golden["output.intent_logits"], atol=1e-3)
    response = result.get_response()
    assert response.model_name == "voxedge" and response.model_version == "1" and response.id == "r1"
    assert [o.name for o in response.outputs] == [t.name for t in runtime.bundle.manifest.outputs]

    after_grpc = _stats(client)
    assert int(after_grpc["inference_count"]) == int(before.get("inference_count", 0)) + len(image)
    assert _count(after_grpc, "success") == _count(before, "success") + 1
    assert int(after_grpc["inference_stats"]["compute_infer"]["ns"]) > 0

    body = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(image.shape),
                        "data": image.ravel().tolist()},
                       {"name": "audio", "datatype": "FP32", "shape": list(audio.shape),
                        "data": audio.ravel().tolist()}]}
    http = _http(server, "/v2/models/voxedge/infer", json.dumps(body).encode(), {"Content-Type": "application/json"})
    (http_logits,) = [o for o in http["outputs"] if o["name"] == "intent_logits"]
    np.testing.assert_allclose(np.array(http_logits["data"]).reshape(logits.shape), logits, rtol=1e-5, atol=1e-6)
    # the HTTP request counted in the statistics gRPC reports, and the gRPC one in HTTP's
    after_http = _stats(client)
    assert _count(after_http, "success") == _count(after_grpc, "success") + 1
    (http_stats,) = _http(server, "/v2/models/voxedge/stats")["model_stats"]
    assert http_stats["inference_stats"]["success"]["count"] == _count(after_http, "success")
    assert http_stats["inference_count"] == int(after_http["inference_count"])

    # one requested output only
    only = client.infer("voxedge", _inputs(image[:1], audio[:1]), headers=AUTH,
                        outputs=[grpcclient.InferRequestedOutput("intent_logits")])
    assert [o.name for o in only.get_response().outputs] == ["intent_logits"]
    np.testing.assert_allclose(only.as_numpy("intent_logits"), logits[:1], rtol=1e-5, atol=1e-6)


@requires_gcc
def test_typed_contents_infer_like_raw_ones(grpc_server):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, client, runtime = grpc_server
    golden = np.load(runtime.bundle.path / "golden.npz")
    image, audio = golden["input.image"][:1], golden["input.audio"][:1]
    raw = client.infer("voxedge", _inputs(image, audio), headers=AUTH).as_numpy("intent_logits")

    def request(image_values):
        req = service_pb2.ModelInferRequest(model_name="voxedge")
        req.inputs.add(name="image", datatype="UINT8", shape=image.shape).contents.uint_contents.extend(image_values)
        req.inputs.add(name="audio", datatype="FP32", shape=audio.shape).contents.fp32_contents.extend(
            audio.ravel().tolist())
        return req

    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request(image.ravel().tolist()), metadata=tuple(AUTH.items()))
        (i,) = [k for k, o in enumerate(response.outputs) if o.name == "intent_logits"]
        assert response.outputs[i].datatype == "FP32" and list(response.outputs[i].shape) == list(raw.shape)
        typed = np.frombuffer(response.raw_output_contents[i], np.float32).reshape(raw.shape)
        np.testing.assert_allclose(typed, raw, rtol=1e-5, atol=1e-6)
        with pytest.raises(grpc.RpcError) as rpc:
            stub.ModelInfer(request([300] * image.size), metadata=tuple(AUTH.items()))
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "outside UINT8's range" in rpc.value.details()
        with pytest.raises(grpc.RpcError) as rpc:
            stub.ModelInfer(request([0] * 10), metadata=tuple(AUTH.items()))
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "has 10 values" in rpc.value.details()


@requires_gcc
def test_malformed_infer_is_invalid_argument_with_what_to_send_and_counts_as_a_failure(grpc_server):
    _, client, runtime = grpc_server
    golden = np.load(runtime.bundle.path / "golden.npz")
    image, audio = golden["input.image"][:1], golden["input.audio"][:1]
    before = _count(_stats(client), "fail")

    unknown = grpcclient.InferInput("microphone", [1, 32000], "FP32")
    unknown.set_data_from_numpy(audio)
    fp64 = grpcclient.InferInput("audio", [1, 32000], "FP64")
    fp64.set_data_from_numpy(audio.astype(np.float64))
    cases = [
        (_inputs(image[:, :60], audio), "input 'image' has shape [1, 60, 160, 3]; the model takes [-1, 120, 160, 3]"),
        ([_inputs(image, audio)[0], unknown], "unknown input 'microphone'; the model takes ['audio', 'image']"),
        (_inputs(image, audio)[:1], "missing inputs ['audio']"),
        ([_inputs(image, audio)[0], fp64], "input 'audio' must have datatype FP32, got 'FP64'"),
    ]
    for inputs, message in cases:
        with pytest.raises(InferenceServerException) as exc:
            client.infer("voxedge", inputs, headers=AUTH)
        assert exc.value.status() == "StatusCode.INVALID_ARGUMENT", exc.value
        assert message in exc.value.message(), exc.value.message()
    with pytest.raises(InferenceServerException, match="outputs of the model") as exc:
        client.infer("voxedge", _inputs(image, audio), headers=AUTH, outputs=[grpcclient.InferRequestedOutput("x")])
    assert _count(_stats(client), "fail") == before + len(cases) + 1
    with pytest.raises(InferenceServerException) as exc:  # an unknown model is not this model's failure
        client.infer("other", _inputs(image, audio), headers=AUTH)
    assert exc.value.status() == "StatusCode.NOT_FOUND"
    big = _inputs(np.zeros((50, 120, 160, 3), np.uint8), np.zeros((50, 32000), np.float32))  # 9.3 MB > 8 MB
    with pytest.raises(InferenceServerException) as exc:
        client.infer("voxedge", big, headers=AUTH)
    assert exc.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


@requires_gcc
def test_reads_need_the_token_when_read_auth_is_on_and_health_does_not(grpc_server, sim_runtime):  # noqa: F811
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server

    _, client, runtime = grpc_server
    golden = np.load(runtime.bundle.path / "golden.npz")
    inputs = _inputs(golden["input.image"][:1], golden["input.audio"][:1])
    calls = [lambda h: client.get_server_metadata(headers=h),
             lambda h: client.get_model_metadata("voxedge", headers=h),
             lambda h: client.get_model_config("voxedge", headers=h),
             lambda h: client.get_inference_statistics(headers=h),
             lambda h: client.get_model_repository_index(headers=h),
             lambda h: client.infer("voxedge", inputs, headers=h)]
    for call in calls:
        for headers in (None, {"authorization": "Bearer wrong-token-0123456789abc"}, {"authorization": TOKEN}):
            with pytest.raises(InferenceServerException) as exc:
                call(headers)
            assert exc.value.status() == "StatusCode.UNAUTHENTICATED"
            assert "authorization: Bearer <token>" in exc.value.message()
        call({"authorization": f"bearer {TOKEN}"})  # the scheme in any case, as over HTTP
    assert client.is_server_ready() and client.is_model_ready("voxedge")  # health is open, as /v2/health

    # read auth off (a loopback bind's default): no token needed
    config = ServiceConfig(port=0, estop_port=0, grpc_port=0, token=TOKEN)
    server = Server(create_app(runtime, config), config).start()
    try:
        open_client = grpcclient.InferenceServerClient(url=server.grpc_address)
        try:
            assert open_client.get_model_metadata("voxedge").name == "voxedge"
            assert open_client.infer("voxedge", inputs).as_numpy("intent_logits").shape[0] == 1
        finally:
            open_client.close()
    finally:
        server.stop()


@requires_gcc
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")
def test_grpc_speaks_tls_with_the_http_ports_certificate(sim_runtime, tmp_path):  # noqa: F811
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server

    runtime, _ = sim_runtime
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    config = ServiceConfig(port=0, estop_port=0, grpc_port=0, token=TOKEN, tls_cert=str(tmp_path / "cert.pem"),
                           tls_key=str(tmp_path / "key.pem"))
    server = Server(create_app(runtime, config), config).start()
    try:
        client = grpcclient.InferenceServerClient(url=server.grpc_address, ssl=True,
                                                  root_certificates=str(tmp_path / "cert.pem"))
        try:
            assert client.is_server_live() and client.get_model_metadata("voxedge").name == "voxedge"
        finally:
            client.close()
        plain = grpcclient.InferenceServerClient(url=server.grpc_address)
        try:
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=3)
        finally:
            plain.close()
    finally:
        server.stop()


# -- settings, flags, banner, the missing package --------------------------------------------------------

def test_grpc_port_setting_flag_and_validation(monkeypatch):
    from edge import settings
    from edge.cli import main
    from edge.service.config import ServiceConfig, ServiceConfigError

    assert ServiceConfig().grpc_port is None
    assert ServiceConfig(grpc_port=8001).grpc_port == 8001
    for bad in (8080, 8081, 70000, -1):  # the HTTP port, the e-stop port (HTTP + 1), out of range
        with pytest.raises(ServiceConfigError, match="grpc_port"):
            ServiceConfig(port=8080, grpc_port=bad)
    s = settings.load({"link": "sim"}, environ={"VOXEDGE_GRPC_PORT": "9001"})
    assert s.service.grpc_port == 9001
    assert settings.load({"link": "sim", "grpc_port": 9002}, environ={}).service.grpc_port == 9002
    assert settings.load({"link": "sim"}, environ={}).service.grpc_port is None

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--grpc-port PORT" in out.getvalue()


def test_the_banner_shows_the_grpc_address():
    from edge.service.config import ServiceConfig
    from edge.service.server import banner

    text = banner(ServiceConfig(grpc_port=8001), "http://127.0.0.1:8080", None, "127.0.0.1:8001")
    assert "gRPC at 127.0.0.1:8001" in text and "Bearer" not in text.split("gRPC")[1].splitlines()[0]
    text = banner(ServiceConfig(grpc_port=8001, read_auth="on"), "http://127.0.0.1:8080", None, "127.0.0.1:8001")
    assert "'authorization: Bearer <token>'" in text
    assert "gRPC" not in banner(ServiceConfig(), "http://127.0.0.1:8080")


def test_without_tritonclient_the_error_says_what_to_install(monkeypatch):
    from edge.service.config import ServiceConfigError
    from edge.service.grpc_server import _protos

    monkeypatch.setitem(__import__("sys").modules, "tritonclient.grpc", None)
    with pytest.raises(ServiceConfigError, match=r"pip install 'tritonclient\[grpc\]'"):
        _protos()
