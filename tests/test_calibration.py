"""Sample sets on disk, the INT8 accuracy gate, and convert with --calibration/--eval."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from calibration.errors import CalibrationError
from calibration.gate import accuracy_gate
from calibration.sampleset import read_set, write_set
from convert.cli import DEFAULT_CHECKPOINT
from convert.config import REFERENCE_CONFIG, ConvertConfig
from convert.errors import ConvertError
from convert.export import export_onnx, golden_inputs
from convert.pipeline import convert
from edge.bundle import Manifest, load_bundle
from edge.int8_numerics import ONNXRUNTIME_CPU, cpu_int8
from reference_model.model import build_model
from sim.commands import INTENTS
from tests.calibration_fixtures import write_small_sets


def _arrays(n=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 120, 160, 3), dtype=np.uint8)
    audio = (rng.standard_normal((n, 32000)) * 0.05).astype(np.float32)
    return images, audio


def test_set_round_trip_keeps_frames_exact_and_audio_to_16_bits(tmp_path):
    images, audio = _arrays()
    labels = [{"intent": "go_to", "object": "red ball", "target_xy": (0.5, 0.6), "target_box": (0.4, 0.5, 0.6, 0.7)}] * 6
    meta = write_set(tmp_path / "s", images, audio, labels, intents=INTENTS)
    s = read_set(tmp_path / "s")
    assert len(s) == 6 and s.meta["index_sha256"] == meta["index_sha256"]
    img, wav, rate = s.load(3)
    assert np.array_equal(img, images[3]) and rate == 16000
    assert np.abs(wav - audio[3]).max() < 1.0 / 32767 + 1e-6
    batch = next(s.batches(4, (120, 160), 32000))
    assert batch["image"].shape == (4, 120, 160, 3) and batch["audio"].dtype == np.float32
    assert s.records[0].target_xy == [0.5, 0.6]
    assert any("only 6 samples" in w for w in meta["warnings"])
    assert any("no sample of intent 'stop'" in w for w in meta["warnings"])


def test_set_errors(tmp_path):
    images, audio = _arrays()
    loud = audio.copy()
    loud[0, :1000] = 1.0
    meta = write_set(tmp_path / "s", images, loud)
    assert meta["clipped_utterances"] == 1 and any("clipped" in w for w in meta["warnings"])
    s = read_set(tmp_path / "s")
    (tmp_path / "s" / s.records[1].image).write_bytes(b"x")
    with pytest.raises(CalibrationError, match="does not match its sha256"):
        s.load(1)
    with pytest.raises(CalibrationError, match="model takes 320x240"):
        next(s.batches(2, (240, 320), 32000))
    with pytest.raises(CalibrationError, match="at least one sample"):
        write_set(tmp_path / "empty", images[:0], audio[:0])
    with pytest.raises(CalibrationError, match="uint8"):
        write_set(tmp_path / "bad", images.astype(np.float32), audio)
    assert not (tmp_path / "empty").exists() and not (tmp_path / "bad").exists()
    with pytest.raises(CalibrationError, match="not a sample set"):
        read_set(tmp_path)
    (tmp_path / "s" / "index.jsonl").write_text('{"id": 1, "bogus": 2}\n')
    with pytest.raises(CalibrationError, match="index.jsonl:1"):
        read_set(tmp_path / "s")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return write_small_sets(tmp_path_factory.mktemp("sets"))


def test_convert_with_int8_passes_the_gate_and_records_provenance(sets, tmp_path):
    bundle = convert(DEFAULT_CHECKPOINT, tmp_path / "b", calibration=sets / "calib", eval_set=sets / "eval",
                     log=lambda *_: None)
    loaded = load_bundle(bundle.path)
    assert loaded.model_path("int8").name == "model.int8.qdq.onnx"  # TensorRT's: full-range weights
    assert loaded.model_path("int8", ONNXRUNTIME_CPU).name == "model.int8.cpu.qdq.onnx"  # 7-bit weights
    calib = loaded.manifest.provenance["calibration"]
    assert calib["n_samples"] == 48 and calib["index_sha256"] == read_set(sets / "calib").meta["index_sha256"]
    models = calib["models"]
    assert models["tensorrt"]["quantizer"]["weight_max_abs"] == 127
    assert models[ONNXRUNTIME_CPU]["quantizer"]["weight_max_abs"] <= 64
    here = cpu_int8()
    for model in models.values():  # which CPU each gate ran on, and whether its int8 sums saturate
        assert model["gate_passed"] and model["gate_cpu"] == {"model": here.model, "isa": here.isa,
                                                              "saturates": here.saturates}
    report = json.loads((bundle.path / "report.json").read_text())
    for gate, emulated in ((report["accuracy_gate"], True), (report["accuracy_gate_cpu"], False)):
        assert gate["passed"] and gate["reference"]["n_intent"] == 64
        assert sum(map(sum, gate["candidate"]["confusion"])) == 64
        assert gate["numerics"]["emulate_qdq"] is emulated and gate["numerics"]["cpu"]["isa"] == here.isa
    assert set(report["latency_ms_batch1"]) == {"fp32", "int8"}
    assert set(report["tensorrt_check"]) == {"fp32", "int8"}  # the CPU model is not for TensorRT
    png = (bundle.path / loaded.manifest.reports["plots"]).read_bytes()
    assert png.startswith(b"\x89PNG")


def test_gate_rejects_a_model_that_decides_differently(sets, tmp_path):
    config = ConvertConfig.from_file(REFERENCE_CONFIG)
    manifest = Manifest(inputs=config.inputs, outputs=config.outputs, preprocessing=config.preprocessing,
                        heads=config.heads)
    golden = golden_inputs(config.inputs, batch=2)
    fp32 = tmp_path / "trained.onnx"
    from convert.export import load_model

    export_onnx(load_model(DEFAULT_CHECKPOINT, config.factory)[0], config.inputs, config.outputs, fp32, golden)
    untrained = tmp_path / "untrained.onnx"
    export_onnx(build_model().eval(), config.inputs, config.outputs, untrained, golden)
    same = accuracy_gate(fp32, fp32, read_set(sets / "eval"), manifest)
    assert same.passed and same.accuracy_drop == 0
    worse = accuracy_gate(fp32, untrained, read_set(sets / "eval"), manifest)
    assert not worse.passed and worse.accuracy_drop > 0.3
    assert "FAILS" in worse.describe()


def test_int8_without_an_evaluation_set_is_refused(sets, tmp_path):
    with pytest.raises(ConvertError, match="--eval"):
        convert(DEFAULT_CHECKPOINT, tmp_path / "b", calibration=sets / "calib", log=lambda *_: None)
    assert not (tmp_path / "b").exists()


def test_calibrate_rewrites_a_bundle_and_leaves_it_untouched_on_failure(sets, tmp_path):
    from convert.recalibrate import calibrate_bundle

    path = convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None).path
    logged = []
    bundle = calibrate_bundle(path, sets / "calib", sets / "eval", log=logged.append)
    # a 64-sample gate cannot resolve its 0.5-point limit: said loudly (issue 18 point 6)
    assert any("WARNING: the accuracy gate runs on 64 samples: one sample is worth 1.56 points" in x for x in logged)
    assert bundle.manifest.file("int8").path == "model.int8.qdq.onnx"
    assert bundle.manifest.file("int8", ONNXRUNTIME_CPU).path == "model.int8.cpu.qdq.onnx"
    assert load_bundle(path).manifest.provenance["calibration"]["n_samples"] == 48
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    images, audio = _arrays(4)
    write_set(tmp_path / "wrong_size", images[:, :60, :80], audio)  # frames smaller than the model takes
    with pytest.raises(CalibrationError, match="model takes 160x120"):
        calibrate_bundle(path, tmp_path / "wrong_size", sets / "eval", log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "wrong_size"]


def test_failing_gate_keeps_the_most_sensitive_layers_float_until_it_passes(sets, tmp_path):
    import onnx

    from calibration.gate import GateLimits
    from calibration.int8 import make_int8
    from calibration.quantize import QuantSettings, output_layers

    config = ConvertConfig.from_file(REFERENCE_CONFIG)
    manifest = Manifest(inputs=config.inputs, outputs=config.outputs, preprocessing=config.preprocessing,
                        heads=config.heads)
    fp32 = convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None).model_path("fp32")
    # The heads are the layers that produce outputs; the reference config keeps them float.
    heads = output_layers(onnx.load(str(fp32)))
    assert "/intent_head/intent_head.2/Gemm" in heads and "/offset/Conv" in heads
    assert not any(n.startswith("/image_encoder/") for n in heads)
    # A limit plain INT8 cannot meet: the target point may not move at all.
    strict = GateLimits(max_accuracy_drop=0.0, max_target_error_increase=0.0)
    settings = QuantSettings(keep_output_layers_float=False)
    lines = []
    info, gate = make_int8(fp32, tmp_path / "int8.onnx", manifest, sets / "calib", sets / "eval", lines.append,
                           settings, strict)
    assert gate["passed"] and gate["target_error_increase"] <= 0.0
    kept = gate["kept_float_for_accuracy"]
    assert kept and info["kept_float_for_accuracy"] == kept
    assert set(kept) <= set(info["quantizer"]["kept_float"])
    assert any("most sensitive layers" in line for line in lines)
    # Without the search the same limits are a clear failure.
    with pytest.raises(CalibrationError, match="INT8 model rejected"):
        make_int8(fp32, tmp_path / "int8b.onnx", manifest, sets / "calib", sets / "eval", lines.append, settings,
                  strict, search=False)
    # Limits nothing can meet: the search says so.
    with pytest.raises(CalibrationError, match="no mixed-precision model passes"):
        make_int8(fp32, tmp_path / "int8c.onnx", manifest, sets / "calib", sets / "eval", lines.append, settings,
                  GateLimits(max_accuracy_drop=-1.0), search=True)


def test_calibrate_with_the_robots_audit_log_gates_on_agreement_with_fp32(sets, tmp_path):
    from convert.recalibrate import calibrate_bundle
    from edge.audit import AuditLog

    labelled = read_set(sets / "calib")
    log = AuditLog(tmp_path / "audit", max_samples=100).start()
    for i in range(len(labelled)):
        image, audio, _ = labelled.load(i)
        while not log.record(image, audio, {"intent": "go_to", "confidence": 0.9}):
            log.stop()
            log.start()
    log.stop()
    path = convert(DEFAULT_CHECKPOINT, tmp_path / "b", log=lambda *_: None).path
    lines = []
    bundle = calibrate_bundle(path, tmp_path / "audit", log=lines.append)
    calib = bundle.manifest.provenance["calibration"]
    assert calib["n_samples"] == len(labelled) and calib["eval_set"]["labels"].startswith("pseudo: FP32")
    assert any("agreement with the FP32 model" in line for line in lines)
    report = json.loads((path / "report.json").read_text())
    for gate in (report["accuracy_gate"], report["accuracy_gate_cpu"]):
        assert gate["passed"] and gate["reference"]["intent_accuracy"] == 1.0
        assert gate["candidate"]["intent_accuracy"] >= 0.995 - 1e-9
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "calibrate", str(path), "--data", str(tmp_path / "audit"),
         "--no-precision-search", "--force"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_import_set_from_a_users_pictures_and_recordings(tmp_path):
    import wave

    import cv2

    src = tmp_path / "mine"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        cv2.imwrite(str(src / f"s{i}.jpg"), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        t = np.arange(44100) / 44100.0  # 1 s of a 440 Hz tone, stereo, 44.1 kHz
        tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
        with wave.open(str(src / f"s{i}.wav"), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(44100)
            w.writeframes(np.repeat(tone, 2).tobytes())
    (src / "labels.jsonl").write_text('{"name": "s1", "intent": "go_to", "object": "red ball", "target_xy": [0.4, 0.6]}\n')
    result = subprocess.run([sys.executable, "-m", "edge.cli", "import-set", str(src), "--out", str(tmp_path / "set")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    s = read_set(tmp_path / "set")
    img, wav, rate = s.load(1)
    assert img.shape == (120, 160, 3) and rate == 16000 and wav.shape == (32000,)
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * 16000 / 32000 - 440) < 2  # the tone survived resampling
    assert np.abs(wav[:7000]).max() < 1e-3 and np.abs(wav[9000:23000]).max() > 0.4  # centred in the window
    assert s.records[1].intent == "go_to" and s.records[0].intent is None
    (src / "s0.wav").unlink()
    result = subprocess.run([sys.executable, "-m", "edge.cli", "import-set", str(src), "--out", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "s0.jpg needs s0.wav" in result.stderr and not (tmp_path / "x").exists()


@pytest.mark.parametrize("purpose, says, not_says", [
    ("calibration", "only 8 samples; int8 scales want at least 256", "INT8 gate"),
    ("evaluation", "only 8 samples; one is worth 12.50 points, so the INT8 gate's 0.5-point limit needs at least 200",
     "int8 scales"),
    (None, "int8 scales want at least 256 (for calibration; an evaluation set needs 200", None),
])
def test_a_set_warns_about_the_size_its_purpose_needs(tmp_path, purpose, says, not_says):
    images = np.zeros((8, 12, 16, 3), np.uint8)
    audio = np.zeros((8, 1600), np.float32)
    meta = write_set(tmp_path / "s", images, audio, purpose=purpose)
    assert any(says in w for w in meta["warnings"]), meta["warnings"]
    assert not_says is None or not any(not_says in w for w in meta["warnings"]), meta["warnings"]
    assert read_set(tmp_path / "s").coverage(purpose=purpose)["warnings"] == meta["warnings"]


def test_simulated_clipping_is_counted_without_microphone_advice(tmp_path):
    images = np.zeros((2, 12, 16, 3), np.uint8)
    audio = np.zeros((2, 1600), np.float32)
    audio[0, :100] = 1.0  # full scale: clipped
    recorded = write_set(tmp_path / "recorded", images, audio)
    simulated = write_set(tmp_path / "sim", images, audio, simulated=True)
    assert recorded["clipped_utterances"] == simulated["clipped_utterances"] == 1
    assert any("lower the microphone gain" in w for w in recorded["warnings"])
    assert not any("microphone" in w for w in simulated["warnings"]) and simulated["simulated"] is True
    assert not any("microphone" in w for w in read_set(tmp_path / "sim").coverage()["warnings"])


def test_a_damaged_set_json_is_named(tmp_path):
    write_set(tmp_path / "s", np.zeros((1, 12, 16, 3), np.uint8), np.zeros((1, 1600), np.float32))
    (tmp_path / "s" / "set.json").write_text("[1, 2")
    with pytest.raises(CalibrationError, match="set.json: not valid JSON"):
        read_set(tmp_path / "s")
