"""Triton (issue 20 points 3 and 4, HTTP): ``voxedge export-triton`` writes a model repository whose
config.pbtxt parses as Triton's ModelConfig and matches the manifest, and the robot's service answers the
stock ``tritonclient.http`` client's metadata, config, statistics, repository index and infer calls."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import live_server, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="the ModelConfig protobuf ships in tritonclient[grpc] (dev extra)")

TYPES = {"uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
         "float16": "TYPE_FP16", "float32": "TYPE_FP32", "bool": "TYPE_BOOL"}


def _parse(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _check_against_manifest(config, manifest, max_batch: int) -> None:
    assert config.max_batch_size == max_batch
    for got, spec in [*zip(config.input, manifest.inputs, strict=True),
                      *zip(config.output, manifest.outputs, strict=True)]:
        assert got.name == spec.name
        assert model_config_pb2.DataType.Name(got.data_type) == TYPES[spec.dtype]
        assert spec.shape[0] == -1  # the sim bundle's tensors all start with the batch axis
        if len(spec.shape) > 1:
            assert list(got.dims) == list(spec.shape[1:])
        else:  # only the batch axis: dims [1] reshaped to a scalar per sample
            assert list(got.dims) == [1] and got.HasField("reshape") and list(got.reshape.shape) == []
    assert config.HasField("dynamic_batching")


def _cli(*args) -> tuple[int, str]:
    import contextlib
    import io

    from edge.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["export-triton", *map(str, args)])
    return code, err.getvalue()


def test_export_writes_a_model_repository_that_matches_the_manifest(sim_bundle, tmp_path):  # noqa: F811
    out = tmp_path / "repo"
    code, err = _cli(sim_bundle.path, out, "--precision", "fp32", "--max-batch", "16")
    assert code == 0, err
    config = _parse(out / "voxedge" / "config.pbtxt")
    manifest = sim_bundle.manifest
    assert config.name == "voxedge" and config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    _check_against_manifest(config, manifest, 16)
    (acc,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
    assert int(acc.parameters["max_workspace_size_bytes"]) > 0
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    source = manifest.file("fp32")
    assert config.parameters["voxedge_model_sha256"].string_value == source.sha256
    copied = out / "voxedge" / "1" / "model.onnx"
    assert copied.read_bytes() == (sim_bundle.path / source.path).read_bytes()
    labels = (out / "voxedge" / config.output[0].label_filename).read_text().splitlines()
    assert config.output[0].name == manifest.heads.intent_output and labels == list(manifest.heads.intent_labels)
    # the ONNX model itself takes and gives what the configuration says
    import onnxruntime as ort

    session = ort.InferenceSession(str(copied), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [i.name for i in config.input]
    assert [o.name for o in session.get_outputs()] == [o.name for o in config.output]
    # an earlier export is replaced; anything else is refused
    assert _cli(sim_bundle.path, out, "--max-batch", "4")[0] == 0
    assert _parse(out / "voxedge" / "config.pbtxt").max_batch_size == 4


def test_int8_export_takes_the_tensorrt_qdq_model_not_the_cpu_one(sim_bundle, tmp_path):  # noqa: F811
    from edge.bundle import Manifest, ModelFile, write_bundle

    fp32 = sim_bundle.path / sim_bundle.manifest.file("fp32").path

    def populate(tmp: Path) -> Manifest:
        shutil.copyfile(fp32, tmp / "model.fp32.onnx")
        shutil.copyfile(fp32, tmp / "model.int8.qdq.onnx")
        (tmp / "model.int8.cpu.qdq.onnx").write_bytes(b"not the one for TensorRT")
        files = (ModelFile("model.fp32.onnx", "", "fp32"), ModelFile("model.int8.qdq.onnx", "", "int8"),
                 ModelFile("model.int8.cpu.qdq.onnx", "", "int8", "onnxruntime-cpu"))
        return Manifest(**{**vars(sim_bundle.manifest), "files": files})

    bundle = write_bundle(tmp_path / "bundle", populate)
    out = tmp_path / "repo"
    assert _cli(bundle.path, out, "--precision", "int8")[0] == 0
    config = _parse(out / "voxedge" / "config.pbtxt")
    _check_against_manifest(config, bundle.manifest, 8)
    (acc,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.parameters["precision_mode"] == "INT8"
    assert config.parameters["voxedge_model_file"].string_value == "model.int8.qdq.onnx"
    assert (out / "voxedge" / "1" / "model.onnx").read_bytes() == (bundle.path / "model.int8.qdq.onnx").read_bytes()


def test_export_errors_are_clear_and_exit_2(sim_bundle, tmp_path):  # noqa: F811
    import contextlib
    import io

    from edge.cli import main

    code, err = _cli(sim_bundle.path, tmp_path / "a", "--precision", "fp16")
    assert code == 2 and "no fp16 model" in err and not (tmp_path / "a").exists()
    code, err = _cli(tmp_path / "nowhere", tmp_path / "b")
    assert code == 2 and "not a voxedge bundle" in err and not (tmp_path / "b").exists()
    # a repository holds other models and files: exporting adds (or replaces) only its own model folder
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text('name: "other_model"')
    (repo / "notes.txt").write_text("keep me")
    assert _cli(sim_bundle.path, repo)[0] == 0 and _cli(sim_bundle.path, repo, "--max-batch", "2")[0] == 0
    assert (repo / "notes.txt").read_text() == "keep me" and (repo / "other_model" / "config.pbtxt").is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["notes.txt", "other_model", "voxedge"]
    # a folder of the model's name that no export wrote is left alone
    (repo / "mine" / "data").mkdir(parents=True)
    (repo / "mine" / "data" / "keep.txt").write_text("keep me")
    code, err = _cli(sim_bundle.path, repo, "--name", "mine")
    assert code == 2 and "the model folder" in err and "not a model folder written by voxedge export-triton" in err
    assert "--force" in err and (repo / "mine" / "data" / "keep.txt").read_text() == "keep me"
    code, err = _cli(sim_bundle.path, repo / "notes.txt")
    assert code == 2 and "notes.txt" in err and (repo / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["export-triton", str(sim_bundle.path), str(tmp_path / "c"), "--precision", "int4"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["export-triton", str(sim_bundle.path), str(tmp_path / "c"), "--max-batch", "0"])
    assert exc.value.code == 2


def _with_engines(sim_bundle, tmp_path, monkeypatch, *gpus):
    """A copy of the sim bundle with an fp32 engine built (fake TensorRT 10.3, golden-checked) on each GPU."""
    from edge.engine import build_engine
    from tests.fake_tensorrt import GoldenReplay, install

    path = Path(shutil.copytree(sim_bundle.path, tmp_path / "bundle"))
    plans = []
    for gpu, max_batch in gpus:
        install(monkeypatch, gpus=[gpu])
        plans.append(build_engine(path, "fp32", max_batch=max_batch, log=lambda *_: None,
                                  run_plan=GoldenReplay(path / "golden.npz")))
    return path, plans


def test_a_tensorrt_plan_export_takes_the_engine_build_engine_registered(sim_bundle, tmp_path, monkeypatch):  # noqa: F811
    from tests.fake_tensorrt import FakeGpu

    path, (plan,) = _with_engines(sim_bundle, tmp_path, monkeypatch, (FakeGpu(), 4))
    out = tmp_path / "repo"
    code, err = _cli(path, out, "--platform", "tensorrt_plan")
    assert code == 0, err
    config = _parse(out / "voxedge" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.backend == "tensorrt"
    _check_against_manifest(config, sim_bundle.manifest, 4)  # the engine's batch profile, not the default 8
    assert not config.HasField("optimization")  # no ONNX Runtime accelerator: the plan is TensorRT's already
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    copied = out / "voxedge" / "1" / "model.plan"
    assert copied.read_bytes() == plan.read_bytes() and not (out / "voxedge" / "1" / "model.onnx").exists()
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["voxedge_model_file"] == plan.relative_to(path).as_posix()
    assert params["voxedge_gpu"] == "Orin" and params["voxedge_compute_capability"] == "8.7"
    assert params["voxedge_tensorrt_version"].startswith("10.3")
    assert params["voxedge_onnx_sha256"] == sim_bundle.manifest.file("fp32").sha256
    assert "runs only where it was built: Orin" in (out / "voxedge" / "config.pbtxt").read_text()
    assert _cli(path, out, "--platform", "tensorrt_plan", "--max-batch", "2")[0] == 0
    assert _parse(out / "voxedge" / "config.pbtxt").max_batch_size == 2
    for args, message in [
            (("--max-batch", "16"), "beyond the engine's batch profile (up to 4)"),
            (("--precision", "int8"), "no int8 TensorRT engine for a GPU: build one on the server's GPU with: "
                                      "voxedge build-engine"),
            (("--engine", "engines/other.plan"), "not an engine this bundle registered")]:
        code, err = _cli(path, tmp_path / "refused", "--platform", "tensorrt_plan", *args)
        assert code == 2 and message in err, err
        assert not (tmp_path / "refused").exists()
    code, err = _cli(path, tmp_path / "refused", "--engine", str(plan))
    assert code == 2 and "use it with --platform tensorrt_plan" in err


def test_a_plan_export_chooses_among_gpus_and_refuses_an_engine_of_another_model(sim_bundle, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    from edge.bundle import Manifest, load_bundle, write_bundle
    from tests.fake_tensorrt import FakeGpu

    server = FakeGpu(name="NVIDIA L4", compute_capability=(8, 9), sm_count=58, total_memory=22 << 30)
    path, (orin, l4) = _with_engines(sim_bundle, tmp_path, monkeypatch, (FakeGpu(), 8), (server, 16))
    code, err = _cli(path, tmp_path / "repo", "--platform", "tensorrt_plan")
    assert code == 2 and "holds 2 fp32 engines for GPUs" in err and "NVIDIA L4" in err and "--engine PLAN" in err
    code, err = _cli(path, tmp_path / "repo", "--platform", "tensorrt_plan", "--engine", l4)
    assert code == 0, err
    config = _parse(tmp_path / "repo" / "voxedge" / "config.pbtxt")
    assert config.max_batch_size == 16 and config.parameters["voxedge_gpu"].string_value == "NVIDIA L4"
    assert (tmp_path / "repo" / "voxedge" / "1" / "model.plan").read_bytes() == l4.read_bytes()
    bundle = load_bundle(path)  # an engine whose key names another ONNX file (the model was converted again)

    def populate(tmp: Path) -> Manifest:
        for rel in [f.path for f in bundle.manifest.files] + [e["path"] for e in bundle.manifest.engines]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path / rel, tmp / rel)
        engines = tuple({**e, "key": {**e["key"], "onnx_sha256": "0" * 64}} for e in bundle.manifest.engines)
        return Manifest(**{**vars(bundle.manifest), "engines": engines})

    write_bundle(path, populate)
    code, err = _cli(path, tmp_path / "other", "--platform", "tensorrt_plan", "--engine", orin)
    assert code == 2 and "was built from another model file than the bundle's model.fp32.onnx" in err, err


def test_pbtxt_and_json_forms_are_the_same_model_config(sim_bundle):  # noqa: F811
    import json

    from google.protobuf import json_format, text_format

    from edge.triton import model_config, to_pbtxt

    config = model_config(sim_bundle.manifest, precision="fp32")
    from_text = text_format.Parse(to_pbtxt(config, "a header\nover two lines"), model_config_pb2.ModelConfig())
    from_json = json_format.Parse(json.dumps(config), model_config_pb2.ModelConfig())
    assert from_text == from_json


# -- the robot's own service with the stock tritonclient ----------------------------------------------

@requires_gcc
def test_tritonclient_metadata_config_stats_index_and_infer(live_server):  # noqa: F811
    import tritonclient.http as httpclient
    from google.protobuf import json_format

    url, _, runtime = live_server
    manifest = runtime.bundle.manifest
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        meta = client.get_model_metadata("voxedge")
        assert [i["name"] for i in meta["inputs"]] == [t.name for t in manifest.inputs]

        config = client.get_model_config("voxedge")
        assert client.get_model_config("voxedge", model_version="1") == config
        parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig())
        assert parsed.name == "voxedge" and parsed.platform == meta["platform"] == "onnxruntime_onnx"
        assert [i.name for i in parsed.input] == [t.name for t in manifest.inputs]
        assert [model_config_pb2.DataType.Name(o.data_type) for o in parsed.output] == \
            [TYPES[t.dtype] for t in manifest.outputs]
        assert parsed.max_batch_size >= 1 and not parsed.HasField("dynamic_batching")

        assert client.get_model_repository_index() == [
            {"name": "voxedge", "version": "1", "state": "READY", "reason": ""}]
        assert "statistics" in client.get_server_metadata()["extensions"]

        def stats():
            (s,) = client.get_inference_statistics("voxedge")["model_stats"]
            return s

        before = stats()
        assert before["name"] == "voxedge" and before["version"] == "1"
        assert set(before["inference_stats"]) >= {"success", "fail", "queue", "compute_input", "compute_infer",
                                                  "compute_output"}
        golden = np.load(runtime.bundle.path / "golden.npz")
        inputs = [httpclient.InferInput("image", [4, 120, 160, 3], "UINT8"),
                  httpclient.InferInput("audio", [4, 32000], "FP32")]
        inputs[0].set_data_from_numpy(golden["input.image"])
        inputs[1].set_data_from_numpy(golden["input.audio"])
        result = client.infer("voxedge", inputs)
        np.testing.assert_allclose(result.as_numpy("intent_logits"), golden["output.intent_logits"], atol=1e-3)
        after = stats()
        assert after["inference_count"] == before["inference_count"] + 4
        assert after["execution_count"] == before["execution_count"] + 1
        ok = after["inference_stats"]["success"]
        assert ok["count"] == before["inference_stats"]["success"]["count"] + 1 and ok["ns"] > 0
        assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
        assert after["last_inference"] > 0
        assert any(b["batch_size"] == 4 and b["compute_infer"]["count"] >= 1 for b in after["batch_stats"])

        bad = [httpclient.InferInput("image", [1, 120, 160, 3], "FP32"), inputs[1]]
        bad[0].set_data_from_numpy(np.zeros((1, 120, 160, 3), np.float32))
        with pytest.raises(Exception, match="datatype UINT8"):
            client.infer("voxedge", bad)
        assert stats()["inference_stats"]["fail"]["count"] == after["inference_stats"]["fail"]["count"] + 1
        # every model's statistics: this robot serves one
        assert client.get_inference_statistics()["model_stats"][0]["name"] == "voxedge"
    finally:
        client.close()


@requires_gcc
def test_v2_config_stats_and_index_errors(live_server):  # noqa: F811
    import json
    import urllib.error
    import urllib.request

    url, _, _ = live_server

    def status(path, method="GET", data=None):
        try:
            with urllib.request.urlopen(urllib.request.Request(url + path, method=method, data=data), timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert status("/v2/models/other/config")[0] == 404
    assert status("/v2/models/voxedge/versions/2/stats")[0] == 404
    assert status("/v2/repository/index", "POST", b"{not json")[0] == 400
    assert status("/v2/repository/index", "POST", b'{"ready": "yes"}')[0] == 400
    code, body = status("/v2/repository/index", "POST", b'{"ready": true}')
    assert code == 200 and [m["name"] for m in body] == ["voxedge"]
