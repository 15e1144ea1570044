"""Engine keys, device checks and ``voxedge build-engine``.

Without a GPU the build runs against ``tests/fake_tensorrt.py`` (TensorRT's Python API in its 10.3 and 11
shapes, recording what is asked of it); the real build and runner are behind requires_tensorrt.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Manifest, ModelFile, load_bundle, write_bundle
from edge.engine import EngineError, EngineKey, find_engine
from tests.fake_tensorrt import FakeGpu, GoldenReplay, install

ROOT = Path(__file__).resolve().parents[1]
KEY = EngineKey("ab" * 32, "10.3.0", "8.7", "fp16", (1, 1, 8), ("FP16",))
KEPT_FLOAT = ("/audio_encoder/frontend/", "/audio_encoder/Sub")  # calibration.quantize's defaults


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory) -> Path:
    """The reference model as a bundle with FP32, FP16 and both INT8 models (the INT8 ones quantized on the
    golden inputs: enough for their node names and types), as ``voxedge convert`` records them."""
    from calibration.quantize import QuantSettings, quantize_int8
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    base = convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("src") / "b", fp16=True, log=lambda *_: None)

    def populate(tmp: Path) -> Manifest:
        for f in base.manifest.files:
            shutil.copy2(base.path / f.path, tmp / f.path)
        with np.load(base.path / "golden.npz") as g:
            feed = {k.removeprefix("input."): g[k] for k in g.files if k.startswith("input.")}
        settings = QuantSettings(keep_float_prefixes=KEPT_FLOAT)
        summary = quantize_int8(base.path / "model.fp32.onnx", tmp / "model.int8.qdq.onnx", [feed],
                                **settings.quantize_kwargs())
        shutil.copy2(tmp / "model.int8.qdq.onnx", tmp / "model.int8.cpu.qdq.onnx")
        files = (*base.manifest.files, ModelFile("model.int8.qdq.onnx", "", "int8"),
                 ModelFile("model.int8.cpu.qdq.onnx", "", "int8", "onnxruntime-cpu"))
        provenance = {**base.manifest.provenance, "calibration": {"settings": settings.to_dict(), "quantizer": summary}}
        return Manifest(**{**vars(base.manifest), "files": files, "provenance": provenance})

    write_bundle(base.path, populate)
    return base.path


def _copy(source: Path, dest: Path, drop: tuple[str, ...] = (), fp32_only: bool = False,
          legacy: bool = False) -> Path:
    """A copy of ``source`` without the model files in ``drop`` (or with its FP32 model alone, as a plain
    ``voxedge convert`` makes it: no FP16 report, no INT8 settings); ``legacy``: as a voxedge from before
    ``provenance.keep_float_prefixes`` made it."""
    bundle = load_bundle(source)

    def populate(tmp: Path) -> Manifest:
        keep = [f for f in bundle.manifest.files if f.path not in drop]
        if fp32_only:
            keep = [f for f in keep if f.precision in (None, "fp32")]
        for f in keep:
            shutil.copy2(bundle.path / f.path, tmp / f.path)
        provenance = dict(bundle.manifest.provenance)
        if legacy:
            provenance.pop("keep_float_prefixes", None)
        if fp32_only:
            provenance["calibration"] = None
            report = json.loads((tmp / "report.json").read_text())
            report.pop("fp16", None)
            (tmp / "report.json").write_text(json.dumps(report))
        return Manifest(**{**vars(bundle.manifest), "files": tuple(keep), "provenance": provenance})

    write_bundle(dest, populate)
    return dest


@pytest.fixture
def bundle_path(source_bundle, tmp_path) -> Path:
    return _copy(source_bundle, tmp_path / "b")


@pytest.fixture
def bundle_with_engine(source_bundle, tmp_path):
    base = load_bundle(_copy(source_bundle, tmp_path / "b"))

    def populate(tmp):
        for f in base.manifest.files:
            (tmp / f.path).write_bytes((base.path / f.path).read_bytes())
        (tmp / "engines").mkdir()
        (tmp / KEY.plan_name).write_bytes(b"plan")
        entry = {"path": KEY.plan_name, "key": dataclasses.asdict(KEY), "build_s": 1.0}
        return Manifest(**{**vars(base.manifest), "engines": (entry,)})

    write_bundle(base.path, populate)
    return load_bundle(base.path)


def _hashes(path: Path) -> dict[str, str]:
    """Every file under ``path`` (and the folders beside it) by content: a refused build changes none."""
    out = {p.relative_to(path.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in path.parent.rglob("*") if p.is_file()}
    assert out, "nothing to compare"
    return out


def _build(path: Path, precision: str = "fp16", **kwargs):
    from edge.engine import build_engine

    logs: list[str] = []
    run_plan = kwargs.pop("run_plan", None) or GoldenReplay(path / "golden.npz")
    plan = build_engine(path, precision, log=logs.append, run_plan=run_plan, **kwargs)
    return plan, "\n".join(logs)


def _rewrite(path: Path, rel: str, data: bytes) -> None:
    """Replace one file of the bundle at ``path`` (as a copy from elsewhere would, manifest and all)."""
    bundle = load_bundle(path)

    def populate(tmp: Path) -> Manifest:
        for f in bundle.manifest.files:
            (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.path / f.path, tmp / f.path)
        (tmp / rel).write_bytes(data)
        return bundle.manifest

    write_bundle(path, populate)


def _engine_key(path: Path, plan: Path) -> EngineKey:
    entry = next(e for e in load_bundle(path).manifest.engines if e["path"] == plan.relative_to(path).as_posix())
    return EngineKey.from_dict(entry["key"])


# -- keys and device checks ------------------------------------------------------------------------------


def test_key_digest_is_stable_and_names_the_plan():
    again = EngineKey.from_dict(dataclasses.asdict(KEY))
    assert again == KEY and again.digest() == KEY.digest()
    assert KEY.plan_name == f"engines/fp16-{KEY.digest()}.plan"
    assert dataclasses.replace(KEY, compute_capability="8.6").digest() != KEY.digest()
    for field, value in (("typing", "strong"), ("device_name", "Orin"), ("sm_count", 16),
                         ("total_memory_gib", 61), ("dla_core", 0)):
        assert dataclasses.replace(KEY, **{field: value}).digest() != KEY.digest(), field


def test_matching_engine_is_found_and_registered_in_the_manifest(bundle_with_engine):
    assert find_engine(bundle_with_engine, KEY).read_bytes() == b"plan"
    smaller = dataclasses.replace(KEY, batch_profile=(1, 1, 4))
    assert find_engine(bundle_with_engine, smaller).name == Path(KEY.plan_name).name


def test_mismatched_engine_is_refused_with_the_rebuild_command(bundle_with_engine):
    other_gpu = dataclasses.replace(KEY, compute_capability="7.2", tensorrt_version="10.7.0")
    with pytest.raises(EngineError, match="compute_capability: engine '8.7', here '7.2'") as err:
        find_engine(bundle_with_engine, other_gpu)
    assert "tensorrt_version" in str(err.value)
    assert f"voxedge build-engine {bundle_with_engine.path} --precision fp16" in str(err.value)
    with pytest.raises(EngineError, match="max batch: engine 8, needed 16"):
        find_engine(bundle_with_engine, dataclasses.replace(KEY, batch_profile=(1, 1, 16)))
    with pytest.raises(EngineError, match="no usable int8 engine"):
        find_engine(bundle_with_engine, dataclasses.replace(KEY, precision="int8"))


def test_an_old_key_loads_and_matches_no_device_naming_what_it_lacks(bundle_with_engine):
    """KEY is written as voxedge wrote keys before typing, device name, SMs and memory were recorded."""
    old = {k: v for k, v in dataclasses.asdict(KEY).items()
           if k not in ("typing", "device_name", "sm_count", "total_memory_gib", "dla_core")}
    assert EngineKey.from_dict(old) == KEY  # loads, with the defaults
    here = dataclasses.replace(KEY, typing="weak", device_name="Orin", sm_count=8, total_memory_gib=7)
    with pytest.raises(EngineError) as err:
        find_engine(bundle_with_engine, here)
    message = str(err.value)
    for field in ("typing", "device_name", "sm_count", "total_memory_gib"):
        assert f"{field}: engine not recorded (built by an older voxedge)" in message
    assert f"voxedge build-engine {bundle_with_engine.path} --precision fp16" in message


def test_build_engine_without_tensorrt_says_where_engines_are_built(bundle_path):
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    result = subprocess.run([sys.executable, "-m", "edge.cli", "build-engine", str(bundle_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "TensorRT is not installed" in result.stderr and "JetPack" in result.stderr


@pytest.mark.parametrize("argv, message", [
    (["--opt-batch", "9", "--max-batch", "8"], "1 <= --opt-batch <= --max-batch; got opt 9, max 8"),
    (["--max-batch", "0"], "argument --max-batch: 0 is below 1"),
    (["--dla-core", "-1"], "argument --dla-core: -1 is below 0"),
])
def test_bad_batch_and_core_arguments_are_refused_before_tensorrt_loads(tmp_path, capsys, argv, message):
    from edge.cli import main

    try:
        rc = main(["build-engine", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse's own refusal
        rc = exc.code
    assert rc == 2 and message in capsys.readouterr().err


# -- build-engine against the fake TensorRT -----------------------------------------------------------------

# (network created strongly typed, builder flags set, ONNX file parsed) per API shape and precision.
EXPECTED_BUILD = {
    ("10.3", "fp32"): (False, set(), "model.fp32.onnx"),
    ("10.3", "fp16"): (False, {"FP16", "OBEY_PRECISION_CONSTRAINTS"}, "model.fp32.onnx"),
    ("10.3", "int8"): (False, {"INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"}, "model.int8.qdq.onnx"),
    ("11", "fp32"): (True, set(), "model.fp32.onnx"),
    ("11", "fp16"): (True, set(), "model.fp16.onnx"),
    ("11", "int8"): (True, set(), "model.int8.qdq.onnx"),
}


@pytest.mark.parametrize("api, precision", sorted(EXPECTED_BUILD))
def test_flags_network_and_onnx_file_per_precision_and_api(bundle_path, monkeypatch, api, precision):
    fake = install(monkeypatch, api=api)
    strong, flags, onnx_file = EXPECTED_BUILD[api, precision]
    plan, log = _build(bundle_path, precision)
    assert fake.parsed == [onnx_file]  # never the CPU INT8 model, and FP16 from its own file under strong typing
    assert fake.network_flags == [2 if strong else 0]  # 1 << STRONGLY_TYPED
    assert fake.config.flags == flags and fake.built == [[]]
    assert fake.config.profiling_verbosity.name == "DETAILED"  # the inspector can show layer precisions
    assert fake.config.cleared == ({"TF32"} if precision == "fp32" else set())  # an fp32 engine is FP32
    key = _engine_key(bundle_path, plan)
    assert key.typing == ("strong" if strong else "weak") and key.precision == precision
    assert set(key.flags) == flags | ({"no-TF32"} if precision == "fp32" else set())
    assert key.onnx_sha256 == load_bundle(bundle_path).manifest.file(onnx_file.split(".")[1]).sha256
    assert plan.read_bytes().startswith(b"FAKEPLAN") and f"({'strong' if strong else 'weak'} typing" in log


def test_typing_rule_follows_the_weak_flags_and_the_version(monkeypatch):
    from edge.engine import typing_mode

    def typing(**knobs) -> str:
        install(monkeypatch, **knobs)
        return typing_mode(sys.modules["tensorrt"])

    assert typing(api="10.3") == "weak"  # JetPack 6
    assert typing(api="11") == "strong"  # the weak flags are gone
    assert typing(api="10.3", version="10.12.0") == "strong"  # they are deprecated from 10.12


def test_kept_float_layers_are_pinned_to_fp32_under_weak_typing(bundle_path, monkeypatch):
    fake = install(monkeypatch, api="10.3")
    _, log = _build(bundle_path, "int8")
    layers = fake.network.layers
    kept = [layer for layer in layers if layer.name.startswith(KEPT_FLOAT)]
    quantizers = [layer for layer in kept if layer.type.name in ("QUANTIZE", "DEQUANTIZE")]
    assert quantizers, "the Q/DQ model names a quantizer after a kept tensor; it must stay int8"
    for layer in kept:
        if layer in quantizers:
            assert not layer.precision_is_set and not layer.output_types, layer.name
        else:
            assert layer.precision.name == "FLOAT" and layer.precision_is_set, layer.name
            assert set(layer.output_types.values()) == {sys.modules["tensorrt"].float32}, layer.name
    assert not any(layer.precision_is_set for layer in layers if layer not in kept)
    assert "OBEY_PRECISION_CONSTRAINTS" in fake.config.flags
    assert f"{len(kept) - len(quantizers)} layers pinned to FP32" in log


def test_nothing_is_pinned_under_strong_typing(bundle_path, monkeypatch):
    fake = install(monkeypatch, api="11")
    _build(bundle_path, "int8")
    assert not any(layer.precision_is_set or layer.output_types for layer in fake.network.layers)


def test_an_fp32_only_bundle_pins_the_front_end_and_an_old_one_says_it_cannot(source_bundle, tmp_path, monkeypatch):
    fake = install(monkeypatch, api="10.3")
    _build(_copy(source_bundle, tmp_path / "plain", fp32_only=True), "fp16")  # convert records the prefixes
    assert fake.config.flags == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    fake = install(monkeypatch, api="10.3")
    _, log = _build(_copy(source_bundle, tmp_path / "old", fp32_only=True, legacy=True), "fp16")
    assert fake.config.flags == {"FP16"} and "records no layers to keep in FP32" in log


@pytest.mark.parametrize("case, knobs, precision, message", [
    ("no fp16 model, strong typing", {"api": "11"}, "fp16", "lacks. Convert again with --fp16"),
    ("no fast fp16", {"api": "10.3", "fast_fp16": False}, "fp16", "platform_has_fast_fp16 is False"),
    ("no precision constraints flag", {"api": "10.3", "drop_flags": ("OBEY_PRECISION_CONSTRAINTS",)}, "fp16",
     "has no BuilderFlag.OBEY_PRECISION_CONSTRAINTS"),
    ("only the CPU int8 model", {"api": "10.3"}, "int8", "made for ONNX Runtime's CPU kernels"),
    ("fp32 on the DLA", {"api": "10.3", "dla_cores": 2}, "fp32", "the DLA runs fp16 and int8 only"),
])
def test_a_precision_that_cannot_be_honoured_is_refused(source_bundle, tmp_path, monkeypatch, case, knobs,
                                                          precision, message):
    drop = {"no fp16 model, strong typing": ("model.fp16.onnx",),
            "only the CPU int8 model": ("model.int8.qdq.onnx",)}.get(case, ())
    path = _copy(source_bundle, tmp_path / "b", drop=drop)
    install(monkeypatch, **knobs)
    before = _hashes(path)
    with pytest.raises(EngineError) as err:
        _build(path, precision, dla_core=0 if "DLA" in case else None)
    assert message in str(err.value), case
    assert _hashes(path) == before


def test_weak_int8_without_fast_fp16_builds_int8_alone(bundle_path, monkeypatch):
    fake = install(monkeypatch, api="10.3", fast_fp16=False)
    _build(bundle_path, "int8")
    assert fake.config.flags == {"INT8", "OBEY_PRECISION_CONSTRAINTS"}


def test_profiles_cover_only_dynamic_batch_inputs(bundle_path, monkeypatch):
    fake = install(monkeypatch, input_shapes={"image": (2, 120, 160, 3)})  # a fixed batch of 2
    with pytest.raises(EngineError, match=r"\['image'\] have a fixed batch of 2.*--max-batch 2"):
        _build(bundle_path, "fp16", max_batch=8)
    replay = GoldenReplay(bundle_path / "golden.npz")
    plan, _ = _build(bundle_path, "fp16", max_batch=2, run_plan=replay)
    (profile,) = fake.config.profiles
    assert profile.shapes == {"audio": ((1, 32000), (1, 32000), (2, 32000))}
    assert _engine_key(bundle_path, plan).batch_profile == (1, 1, 2)
    assert [n for _, n in replay.calls] == [2, 2]  # the 4 golden samples, 2 at a time


def test_an_all_fixed_batch_model_gets_no_profile(bundle_path, monkeypatch):
    fake = install(monkeypatch, input_shapes={"image": (4, 120, 160, 3), "audio": (4, 32000)})
    plan, _ = _build(bundle_path, "fp16", max_batch=4, opt_batch=2)
    assert fake.config.profiles == [] and _engine_key(bundle_path, plan).batch_profile == (4, 4, 4)


def test_dynamic_inputs_get_min_opt_max_profiles(bundle_path, monkeypatch):
    fake = install(monkeypatch)
    _build(bundle_path, "fp16", max_batch=6, opt_batch=3)
    (profile,) = fake.config.profiles
    assert profile.shapes == {"image": ((1, 120, 160, 3), (3, 120, 160, 3), (6, 120, 160, 3)),
                              "audio": ((1, 32000), (3, 32000), (6, 32000))}
    with pytest.raises(EngineError, match="got opt 7, max 6"):
        _build(bundle_path, "fp16", max_batch=6, opt_batch=7)


def test_a_mismatched_timing_cache_is_replaced_and_the_plan_installed(bundle_path, monkeypatch):
    install(monkeypatch)
    first, _ = _build(bundle_path, "fp16")
    (cache,) = (bundle_path / "engines").glob("timing-*.cache")
    assert cache.name == "timing-trt10.3.0-cc8.7-orin-8mp-7gib.cache"
    _rewrite(bundle_path, f"engines/{cache.name}", b"from another Orin")
    fake = install(monkeypatch, cache_mismatch=True)
    plan, log = _build(bundle_path, "int8")
    sets = [c for c in fake.cache_calls if c[0] == "set"]
    assert sets == [("set", b"from another Orin", False, False), ("set", b"", True, False)]  # never ignore_mismatch
    assert "made by another device or TensorRT version, or is damaged: starting from an empty one" in log
    assert plan.is_file() and first.is_file()
    assert cache.read_bytes() == b"fake-timing-cache:10.3.0"


def test_a_damaged_timing_cache_is_replaced(bundle_path, monkeypatch):
    install(monkeypatch)
    _build(bundle_path, "fp16")
    (cache,) = (bundle_path / "engines").glob("timing-*.cache")
    _rewrite(bundle_path, f"engines/{cache.name}", b"garbage")
    fake = install(monkeypatch, cache_raises_on=b"garbage")
    plan, log = _build(bundle_path, "fp32")
    assert ("create", b"garbage", "raised") in fake.cache_calls and "could not be read" in log
    assert plan.is_file() and cache.read_bytes() == b"fake-timing-cache:10.3.0"


@pytest.mark.parametrize("knob, message", [("timing_cache_none", "no timing cache to save"),
                                           ("serialize_raises", "the timing cache could not be saved")])
def test_no_timing_cache_to_save_still_installs_the_plan(bundle_path, monkeypatch, knob, message):
    install(monkeypatch, **{knob: True})
    plan, log = _build(bundle_path, "fp16")
    assert message in log and plan.is_file()
    assert list((bundle_path / "engines").glob("timing-*.cache")) == []
    assert find_engine(load_bundle(bundle_path), _engine_key(bundle_path, plan)) == plan


def _shift_target(outputs):
    outputs["target_xy"] = outputs["target_xy"] + 0.3
    return outputs


def _nan_attention(outputs):
    outputs["attention"][0, 0, 0] = np.nan
    return outputs


@pytest.mark.parametrize("alter, row", [(_shift_target, "target_xy .* FAIL"),
                                        (_nan_attention, "attention .* FAIL: 1 values are NaN or inf")])
def test_an_engine_that_disagrees_with_golden_is_not_installed(bundle_path, monkeypatch, alter, row):
    install(monkeypatch)
    before = _hashes(bundle_path)
    with pytest.raises(EngineError) as err:
        _build(bundle_path, "fp16", run_plan=GoldenReplay(bundle_path / "golden.npz", alter))
    message = str(err.value)
    assert "disagrees with the bundle's golden outputs, so it was not installed" in message
    assert re.search(row, message)
    assert "intent_logits" in message and " ok" in message and "max abs" in message and "cosine" in message
    assert _hashes(bundle_path) == before  # manifest, models and no plan or cache added; no temporary left


def test_an_engine_that_cannot_run_golden_is_not_installed(bundle_path, monkeypatch):
    install(monkeypatch)
    before = _hashes(bundle_path)

    def broken(plan, feed):
        raise RuntimeError("cuMemAlloc failed: out of memory")

    with pytest.raises(EngineError, match="could not run the golden inputs .*out of memory.*bundle is unchanged"):
        _build(bundle_path, "fp16", run_plan=broken)
    assert _hashes(bundle_path) == before


def test_key_records_typing_device_memory_and_dla(bundle_path, monkeypatch):
    from edge.engine import device_key

    agx = FakeGpu("Orin", (8, 7), 16, int(61.4 * (1 << 30)))
    fake = install(monkeypatch, gpus=[FakeGpu(), agx], dla_cores=2)
    plan, log = _build(bundle_path, "fp16", device=1, dla_core=1)
    key = _engine_key(bundle_path, plan)
    assert (key.typing, key.device_name, key.sm_count, key.total_memory_gib, key.dla_core) == \
        ("weak", "Orin", 16, 61, 1)
    assert "GPU_FALLBACK" in key.flags and "GPU_FALLBACK" in fake.config.flags
    assert fake.config.default_device_type.name == "DLA" and fake.config.DLA_core == 1
    assert ("push", 1) in fake.cuda.contexts and ("push", 0) not in fake.cuda.contexts  # device 1 throughout
    assert (bundle_path / "engines" / "timing-trt10.3.0-cc8.7-orin-16mp-61gib.cache").is_file()
    bundle = load_bundle(bundle_path)
    assert find_engine(bundle, device_key(bundle, "fp16", device=1, dla_core=1)) == plan
    with pytest.raises(EngineError, match="dla_core: engine DLA core 1, here the GPU") as err:
        find_engine(bundle, device_key(bundle, "fp16", device=1))
    assert "sm_count" not in str(err.value)
    with pytest.raises(EngineError, match="sm_count: engine 16, here 8.*total_memory_gib: engine 61, here 7") as err:
        find_engine(bundle, device_key(bundle, "fp16", device=0, dla_core=1))
    assert "--precision fp16 --dla-core 1" in str(err.value)


def test_a_device_that_is_not_there_is_refused(bundle_path, monkeypatch):
    install(monkeypatch)
    with pytest.raises(EngineError, match="there is no CUDA device 1 here \\(1 found\\); pass --device 0"):
        _build(bundle_path, "fp16", device=1)


@pytest.mark.parametrize("cores, core, message", [(0, 0, "this device has no DLA"),
                                                  (2, 2, "this device has DLA cores 0 to 1")])
def test_dla_is_refused_without_that_core(bundle_path, monkeypatch, cores, core, message):
    install(monkeypatch, dla_cores=cores)
    before = _hashes(bundle_path)
    with pytest.raises(EngineError, match=message):
        _build(bundle_path, "int8", dla_core=core)
    assert _hashes(bundle_path) == before


def test_progress_monitor_gets_tensorrts_argument_order(bundle_path, monkeypatch):
    fake = install(monkeypatch)
    _, log = _build(bundle_path, "fp16")
    assert "  Building engine: 2 steps\n    Tactic selection: 3 steps (in Building engine)" in log
    assert [result for name, _, result in fake.monitor_calls if name == "step_complete"] == [True] * 3


def test_if_missing_builds_once_per_device(bundle_path, monkeypatch, capsys):
    from edge.engine_cli import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    install(monkeypatch)
    _build(bundle_path, "int8")
    args = parser.parse_args(["build-engine", str(bundle_path), "--precision", "int8", "--if-missing"])
    assert args.func(args) == 0 and "already matches this device" in capsys.readouterr().out


def test_tensorrt_runner_refuses_an_engine_for_another_core(bundle_path, monkeypatch):
    from edge.runners import RunnerError, make_runner

    install(monkeypatch, dla_cores=2)
    _build(bundle_path, "int8", dla_core=0)
    runner = make_runner("tensorrt", load_bundle(bundle_path), "int8")
    with pytest.raises(RunnerError, match="dla_core: engine DLA core 0, here the GPU.*rebuild it here with: "
                                          "voxedge build-engine .* --precision int8$"):
        runner.activate()


def test_tensorrt_runner_names_the_fp16_model_under_strong_typing(bundle_path, monkeypatch):
    from edge.runners import RunnerError, make_runner

    install(monkeypatch, api="11")
    runner = make_runner("tensorrt", load_bundle(bundle_path), "fp16")
    with pytest.raises(RunnerError, match="no usable fp16 engine"):
        runner.activate()
    assert runner.model_path.name == "model.fp16.onnx"


def test_tensorrt_runner_without_tensorrt_points_to_the_onnxruntime_runner(bundle_path):
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    from edge.runners import RunnerError, make_runner

    runner = make_runner("tensorrt", load_bundle(bundle_path), "fp16")
    assert runner.model_path.name == "model.fp32.onnx"  # fp16 engines are built from the FP32 model (10.3)
    with pytest.raises(RunnerError, match="needs tensorrt and pycuda.*use the onnxruntime runner"):
        runner.activate()
    assert not runner.is_active


# -- the real thing -----------------------------------------------------------------------------------------


@pytest.mark.requires_tensorrt
@pytest.mark.requires_cuda
def test_build_reference_fp16_engine(hardware_bundle):
    from edge.engine import build_engine, device_key

    plan = build_engine(hardware_bundle, "fp16", max_batch=4, log=lambda *_: None)
    bundle = load_bundle(hardware_bundle)
    assert plan.is_file() and plan.stat().st_size > 100_000
    key = device_key(bundle, "fp16", (1, 1, 4))
    assert find_engine(bundle, key) == plan and key.device_name and key.sm_count > 0
    assert list((hardware_bundle / "engines").glob("timing-*.cache"))


@pytest.mark.requires_tensorrt
@pytest.mark.requires_cuda
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_runner_agrees_with_onnxruntime(hardware_bundle, precision):
    from edge.engine import build_engine
    from edge.runners import make_runner

    build_engine(hardware_bundle, precision, max_batch=4, log=lambda *_: None)  # includes the golden check
    bundle = load_bundle(hardware_bundle)
    golden = np.load(bundle.path / "golden.npz")
    feed = {"image": golden["input.image"], "audio": golden["input.audio"]}
    with make_runner("tensorrt", bundle, precision, max_batch=4) as trt_runner:
        got = trt_runner.infer(feed)
        one = trt_runner.infer({k: v[:1] for k, v in feed.items()})  # a smaller batch on the same buffers
    assert list(got) == ["intent_logits", "target_xy", "target_logit", "attention"]
    assert (got["intent_logits"].argmax(1) == golden["output.intent_logits"].argmax(1)).all()
    assert np.abs(got["target_xy"] - golden["output.target_xy"]).max() < 0.05
    np.testing.assert_allclose(one["target_xy"], got["target_xy"][:1], atol=1e-3)


def test_the_gpu_check_script_says_what_it_needs_where_there_is_no_tensorrt(tmp_path):
    """scripts/gpu_check.sh is for the first GPU machine; here it must stop at once, saying what it needs."""
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "g.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert "run this on a machine with an NVIDIA GPU, TensorRT and pycuda" in r.stderr
    assert not (tmp_path / "g.json").exists()
