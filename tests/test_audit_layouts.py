"""The robot's audit log stores what the model decided from in the set format (RGB, H x W x 3), whatever the
model's layout and colour order, and that log calibrates the bundle (``voxedge calibrate --data``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from calibration.sampleset import model_feed, read_set
from convert.cli import DEFAULT_CHECKPOINT
from convert.pipeline import convert
from tests.bridge_fixtures import requires_gcc
from tests.test_calibration_layouts import variant_config

pytestmark = requires_gcc

COMMANDS = ("go to the red ball", "go to the blue cube")


def _decide(rt, mic, text: str, timeout_s: float = 10.0):
    mark = rt.events_after()[-1].id
    mic.say(text)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for e in rt.events_after(mark, timeout_s=0.2):
            if e.kind == "decision":
                return e
    raise AssertionError(f"no decision on {text!r}: {[(e.kind, e.text) for e in rt.events_after(mark)]}")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """An NCHW + BGR bundle (inputs 'frame', 'sound') served on the simulated robot with an audit log."""
    from edge.runtime import Runtime, RuntimeConfig
    from edge.sensors import make_camera, make_microphone
    from sim.world import Arena, Pose, SceneObject
    from simrobot.robot import SimRobot

    tmp = tmp_path_factory.mktemp("audit")
    config_path = variant_config(tmp / "c.json", "nchw_bgr")
    bundle = convert(DEFAULT_CHECKPOINT, tmp / "bundle", config_path=config_path, log=lambda *_: None)
    arena = Arena((SceneObject("red", "ball", 1.2, 0.25, 0.12), SceneObject("blue", "cube", 1.4, -0.5, 0.12),
                   SceneObject("green", "cone", -1.5, 1.0, 0.12)))
    robot = SimRobot(arena, Pose(0.0, 0.0, 0.0))  # never armed: it decides, but stays where it is
    link = robot.start()
    # with sensor noise, as a real camera has: a bit-identical picture means a frozen camera (held still)
    from sim.camera import Appearance

    camera = make_camera("sim", pose_fn=robot.pose, arena=arena, fps=15.0, appearance=Appearance(noise_sigma=2.0),
                         seed=0)
    mic = make_microphone("sim", noise="pink", noise_dbfs=-45.0, voice="en-us+m3")
    config = RuntimeConfig(bundle=str(bundle.path), precision="fp32", audit_log=str(tmp / "log"))
    rt = Runtime(config, link=link, camera=camera, microphone=mic).start()
    try:
        decisions = [_decide(rt, mic, text) for text in COMMANDS]
    finally:
        rt.stop()
        robot.stop()
    alerts = [e.text for e in rt.events_after() if e.kind == "alert" and "audit" in e.text]
    return bundle, tmp / "log", decisions, rt.audit, alerts


def test_the_audit_log_stores_rgb_frames_that_reproduce_the_decisions(recorded):
    import onnxruntime as ort

    bundle, log, decisions, audit, alerts = recorded
    assert alerts == [] and audit.errors == 0 and audit.written == len(COMMANDS)
    samples = read_set(log)
    assert len(samples) == len(COMMANDS)
    assert [r.decision["intent"] for r in samples.records] == ["go_to", "go_to"], [e.text for e in decisions]
    session = ort.InferenceSession(str(bundle.model_path("fp32")), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    heads = bundle.manifest.heads
    for i, (rec, event) in enumerate(zip(samples.records, decisions)):
        assert rec.decision["id"] == event.data["id"]
        assert rec.decision["target_xy"] == list(event.data["target_xy"])
        image, audio, rate = samples.load(i)
        assert image.shape == (120, 160, 3) and audio.shape == (32000,) and rate == 16000
        out = dict(zip(names, session.run(None, model_feed([image], [audio], bundle.manifest))))
        # Fed as the runtime feeds the model, the recorded frame and window give the robot's decision ...
        xy = out[heads.target_point_output][0]
        assert np.abs(xy - np.asarray(rec.decision["target_xy"])).max() < 1e-3, (xy, rec.decision)
        if rec.decision["accepted"]:
            assert heads.intent_labels[int(out[heads.intent_output][0].argmax())] == rec.decision["intent"]
        # ... and the frame is RGB: swap its colours and the model finds the red ball at the blue cube.
        if rec.decision["intent"] == "go_to":
            feed = model_feed([image[..., ::-1]], [audio], bundle.manifest)
            swapped = dict(zip(names, session.run(None, feed)))
            assert np.abs(swapped[heads.target_point_output][0][0] - xy[0]) > 0.1, (swapped, xy)


def test_voxedge_calibrate_takes_the_audit_log_of_an_nchw_bgr_bundle(recorded, tmp_path):
    bundle, log, _, _, _ = recorded
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    refused = subprocess.run([sys.executable, "-m", "edge.cli", "calibrate", str(copy), "--data", str(log)],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"has {len(COMMANDS)} samples, fewer than 64" in refused.stderr and "--force" in refused.stderr
    assert (copy / "manifest.json").read_bytes() == (bundle.path / "manifest.json").read_bytes(), "bundle touched"
    result = subprocess.run([sys.executable, "-m", "edge.cli", "calibrate", str(copy), "--data", str(log),
                             "--force"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"only {len(COMMANDS)} samples; int8 scales want at least 256" in result.stdout
    report = json.loads((copy / "report.json").read_text())
    assert report["accuracy_gate"]["passed"] and set(report["latency_ms_batch1"]) == {"fp32", "int8"}
