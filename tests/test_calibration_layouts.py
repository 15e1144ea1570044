"""Calibration and the accuracy gates feed a model as the robot does: its input names, layout, colour order.

The models here are the reference model behind a thin front that takes the
camera frame as NCHW and/or BGR under other input names and turns it back into
what the reference model takes. Fed correctly, each scores exactly what the
reference model scores on the same set; a BGR model fed RGB frames does not.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct

import numpy as np
import pytest

from calibration.gate import DEFAULT_LIMITS, score
from calibration.sampleset import model_feed, read_set, write_set
from convert.cli import DEFAULT_CHECKPOINT
from convert.config import REFERENCE_CONFIG, ConvertConfig
from convert.pipeline import convert
from edge.audit import sample_frame
from edge.bundle import Manifest, Preprocessing, load_bundle
from edge.contract.image import prepare_image
from reference_model.model import ModelConfig, ReferenceModel
from sim.commands import INTENTS
from tests.calibration_fixtures import write_small_sets

QUIET = {"log": lambda *_: None}


class _Front(ReferenceModel):
    """The reference model taking its image as ``LAYOUT`` in ``COLOR`` order."""

    LAYOUT, COLOR = "NHWC", "RGB"

    def forward(self, image, audio):
        if self.LAYOUT == "NCHW":
            image = image.permute(0, 2, 3, 1)
        if self.COLOR == "BGR":
            image = image.flip(-1)
        return super().forward(image, audio)


class _Nchw(_Front):
    LAYOUT = "NCHW"


class _Bgr(_Front):
    COLOR = "BGR"


class _NchwBgr(_Front):
    LAYOUT, COLOR = "NCHW", "BGR"


def _build(cls):
    return lambda config=None: cls(ModelConfig.from_dict(config) if config else ModelConfig())


build_nchw, build_bgr, build_nchw_bgr = _build(_Nchw), _build(_Bgr), _build(_NchwBgr)

# name: (factory, layout, colour order, input names)
VARIANTS = {
    "nchw": ("build_nchw", "NCHW", "RGB", ("camera", "microphone")),
    "bgr": ("build_bgr", "NHWC", "BGR", ("image", "audio")),
    "nchw_bgr": ("build_nchw_bgr", "NCHW", "BGR", ("frame", "sound")),
}


def variant_config(dest, name: str):
    """A copy of the reference conversion config for the variant ``name`` (see ``VARIANTS``)."""
    factory, layout, color, (image_name, audio_name) = VARIANTS[name]
    raw = json.loads(REFERENCE_CONFIG.read_text())
    raw["factory"] = f"{__name__}:{factory}"
    image, audio = raw["inputs"]
    image.update(name=image_name, shape=[-1, 3, 120, 160] if layout == "NCHW" else [-1, 120, 160, 3],
                 meaning=f"{color} camera frame, {layout}")
    audio["name"] = audio_name
    raw["preprocessing"].update(image_layout=layout, color_order=color)
    dest.write_text(json.dumps(raw, indent=2))
    return dest


def _manifest(config_path) -> Manifest:
    c = ConvertConfig.from_file(config_path)
    return Manifest(inputs=c.inputs, outputs=c.outputs, preprocessing=c.preprocessing, heads=c.heads)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return write_small_sets(tmp_path_factory.mktemp("sets"))


@pytest.fixture(scope="module")
def reference(sets, tmp_path_factory):
    """The plain reference model's FP32 bundle and its score on the evaluation set."""
    bundle = convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("ref") / "b", **QUIET)
    return bundle, score(bundle.model_path("fp32"), read_set(sets / "eval"), bundle.manifest)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_a_recorded_frame_feeds_the_model_exactly_what_the_runtime_feeds_it(layout, color):
    base = _manifest(REFERENCE_CONFIG)
    pre = Preprocessing(160, 120, image_layout=layout, color_order=color)
    shape = [-1, 3, 120, 160] if layout == "NCHW" else [-1, 120, 160, 3]
    inputs = (dataclasses.replace(base.inputs[0], name="cam", shape=shape),
              dataclasses.replace(base.inputs[1], name="mic"))
    manifest = dataclasses.replace(base, inputs=inputs, preprocessing=pre)
    rng = np.random.default_rng(0)
    camera = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # what the camera delivers
    audio = (rng.standard_normal(32000) * 0.1).astype(np.float32)
    stored = sample_frame(camera, pre)  # what the audit log stores: RGB, the model's size, any model
    assert stored.shape == (120, 160, 3) and stored.dtype == np.uint8
    assert np.array_equal(stored, prepare_image(camera, Preprocessing(160, 120))[0])
    feed = model_feed([stored], [audio], manifest)
    assert sorted(feed) == ["cam", "mic"]
    assert np.array_equal(feed["cam"], prepare_image(camera, pre))  # the runtime's own feed
    assert list(feed["cam"].shape[1:]) == shape[1:] and feed["mic"].shape == (1, 32000)
    # Larger stored frames are resized as the camera's are; the feed is the same.
    assert np.array_equal(model_feed([camera], [audio], manifest)["cam"], feed["cam"])


def test_feeds_resize_larger_frames_and_refuse_smaller_ones(tmp_path):
    from calibration.errors import CalibrationError

    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((2, 32000)) * 0.1).astype(np.float32)
    manifest = _manifest(variant_config(tmp_path / "c.json", "nchw_bgr"))
    big = rng.integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    write_set(tmp_path / "big", big, audio)
    feed = next(read_set(tmp_path / "big").feeds(manifest, 8))
    assert feed["frame"].shape == (2, 3, 120, 160) and feed["sound"].shape == (2, 32000)
    assert np.array_equal(feed["frame"][1], prepare_image(big[1], manifest.preprocessing)[0])
    write_set(tmp_path / "small", big[:, :60, :80], audio)
    with pytest.raises(CalibrationError, match="model takes 160x120"):
        next(read_set(tmp_path / "small").feeds(manifest, 8))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_models_of_any_layout_colour_order_and_input_names_calibrate_and_pass_the_gate(name, sets, reference,
                                                                                        tmp_path):
    ref_bundle, ref_score = reference
    config = variant_config(tmp_path / f"{name}.json", name)
    bundle = convert(DEFAULT_CHECKPOINT, tmp_path / "b", config_path=config, calibration=sets / "calib",
                     eval_set=sets / "eval", fp16=False, **QUIET)
    manifest = load_bundle(bundle.path).manifest
    _, layout, color, names = VARIANTS[name]
    assert [i.name for i in manifest.inputs] == list(names)
    assert (manifest.preprocessing.image_layout, manifest.preprocessing.color_order) == (layout, color)
    gate = json.loads((bundle.path / "report.json").read_text())["accuracy_gate"]
    assert gate["passed"], gate
    assert manifest.provenance["calibration"]["quantizer"]["calibration_samples"] == 48
    # FP32 fed through the manifest sees exactly what the reference model sees: the same score.
    fp32 = gate["reference"]
    assert fp32["n_intent"] == ref_score.n_intent == 64
    assert fp32["intent_accuracy"] == ref_score.intent_accuracy
    ref_error = ref_score.target_error_width_fraction
    assert fp32["target_error_width_fraction"] == pytest.approx(ref_error, abs=1e-6)
    assert fp32["confusion"] == [list(r) for r in ref_score.confusion]
    if color == "BGR":
        # The colour order is really applied: the same model fed the stored RGB frames unswapped scores worse.
        wrong = dataclasses.replace(manifest, preprocessing=dataclasses.replace(manifest.preprocessing,
                                                                                color_order="RGB"))
        swapped = score(bundle.model_path("fp32"), read_set(sets / "eval"), wrong)
        increase = swapped.target_error_width_fraction - ref_error
        assert increase > 10 * DEFAULT_LIMITS.max_target_error_increase, swapped  # about 0.23 of the width


def test_coverage_warnings_come_from_the_samples_whatever_wrote_the_set(sets, reference, tmp_path):
    from convert.recalibrate import calibrate_bundle
    from edge.audit import AuditLog

    # make-set's own warnings and the ones recomputed on reading agree.
    calib = read_set(sets / "calib")
    assert calib.coverage(INTENTS)["warnings"] == calib.meta["warnings"]
    # Calibrating on 4 samples recorded by the robot warns as make-set would (its set.json says nothing).
    log = AuditLog(tmp_path / "audit").start()
    for i in range(4):
        image, audio, _ = calib.load(i)
        if i == 0:
            audio = np.clip(audio * 1e3, -1, 1)  # a microphone gain far too high
        assert log.record(image, audio, {"intent": "stop" if i % 2 else "go_to", "confidence": 0.9})
    log.stop()
    ref_bundle, _ = reference
    bundle_path = tmp_path / "bundle"
    shutil.copytree(ref_bundle.path, bundle_path)
    lines = []
    bundle = calibrate_bundle(bundle_path, tmp_path / "audit", log=lines.append)
    warnings = [line.strip() for line in lines if "warning (calibration set)" in line]
    assert any("only 4 samples; int8 scales want at least 256" in w for w in warnings), lines
    assert any("1 utterances are clipped" in w for w in warnings), lines
    missing = {w.split("intent ")[-1].strip("'") for w in warnings if "no sample of intent" in w}
    assert missing == set(INTENTS) - {"stop", "go_to"}, warnings
    # The report is refreshed as the conversion writes it: the INT8 model's latency, and report.png
    # redrawn with the INT8 models' error histograms and the FP32 and two INT8 confusion matrices
    # (5 panels of 600 px; was 2).
    report = json.loads((bundle.path / "report.json").read_text())
    assert set(report["latency_ms_batch1"]) == {"fp32", "int8"} and report["accuracy_gate"]["passed"]
    assert report["accuracy_gate_cpu"]["passed"]
    png = (bundle.path / "report.png").read_bytes()
    assert struct.unpack(">I", png[16:20])[0] == 3000
    assert load_bundle(bundle.path).manifest.provenance["calibration"]["n_samples"] == 4
