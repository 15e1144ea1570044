"""Settings layers for voxedge serve: defaults < JSON file < VOXEDGE_* < flags, with errors naming the layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.settings import SettingsError, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_layers_override_in_order(tmp_path):
    f = tmp_path / "serve.json"
    f.write_text(json.dumps({"bundle": "from-file", "port": 9000, "camera": "/dev/video2", "allowed_hosts": ["robot"]}))
    env = {"VOXEDGE_PORT": "9100", "VOXEDGE_LINK": "/dev/robot", "VOXEDGE_ALLOWED_HOSTS": "a.local, b.local"}
    s = resolve({"port": 9200, "camera": None}, f, env)
    assert s["bundle"] == "from-file" and s["camera"] == "/dev/video2"  # flag None: not given
    assert s["port"] == 9200 and s["link"] == "/dev/robot" and s["allowed_hosts"] == ("a.local", "b.local")
    assert s["precision"] == "auto" and s["host"] == "127.0.0.1"  # defaults
    assert resolve({}, f, {"VOXEDGE_PORT": "9100"})["port"] == 9100


@pytest.mark.parametrize("content, env, message", [
    ('{"port": "eighty"}', {}, "settings file .*port='eighty' is not a valid int"),
    ('{"prot": 1}', {}, "unknown settings \\['prot'\\]"),
    ("[1, 2]", {}, "must hold a JSON object"),
    ("{oops", {}, "not valid JSON"),
    ("{}", {"VOXEDGE_PORT": "x"}, "environment variable VOXEDGE_PORT: port='x'"),
])
def test_bad_values_name_their_layer(tmp_path, content, env, message):
    f = tmp_path / "s.json"
    f.write_text(content)
    with pytest.raises(SettingsError, match=message):
        resolve({}, f, env)


def test_serve_explains_missing_and_inconsistent_sources():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "edge.cli", "serve", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin"})

    r = run()
    assert r.returncode == 2 and "give the bundle directory" in r.stderr
    r = run("bundle", "--camera", "sim", "--link", "/dev/robot")
    assert r.returncode == 2 and "use --link sim too" in r.stderr
    r = run("bundle", "--camera", "0")
    assert r.returncode == 2 and "--link /dev/robot" in r.stderr
    r = run("bundle", "--config", "/nonexistent.json")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_the_typed_loader_fills_every_section_from_every_layer(tmp_path):
    from edge.settings import load

    f = tmp_path / "serve.json"
    f.write_text(json.dumps({"bundle": "b", "camera": "csi://0", "mic": "alsa://hw:1", "link": "serial:///dev/robot",
                             "policy": {"max_linear_m_s": 0.2}, "endpointer": {"hangover_s": 0.5},
                             "port": 9000}))
    env = {"VOXEDGE_POLICY_GO_TO_TIMEOUT_S": "12", "VOXEDGE_PORT": "9100"}
    s = load({"camera_size": "1920x1080", "audit_reserve_mb": 5.0}, f, env)
    assert s.camera.source.scheme == "csi" and (s.camera.width, s.camera.height) == (1920, 1080)
    assert s.microphone.spec().options["device"] == "hw:1" and s.link.port == "/dev/robot" and not s.link.sim
    assert s.policy.max_linear_m_s == 0.2 and s.policy.go_to_timeout_s == 12.0 and s.endpointer.hangover_s == 0.5
    assert s.service.port == 9100 and s.service.token_generated
    config = s.runtime_config()
    assert config.policy is s.policy and config.link_port == "/dev/robot" and config.audit_reserve_mb == 5.0
    assert config.camera.options["kind"] == "gstreamer" and config.microphone.type == "pyaudio"
    assert s.where["port"] == "environment variable VOXEDGE_PORT" and s.where["policy.max_linear_m_s"] == \
        f"settings file {f}"


@pytest.mark.parametrize("content, env, flags, message", [
    ('{"policy": {"max_linear_m_s": -1}}', {}, {}, "policy settings: policy max_linear_m_s must be a positive "
                                                  "number, got -1.0 \\(policy.max_linear_m_s from settings file"),
    ('{"policy": {"top_speed": 1}}', {}, {}, "unknown policy settings \\['top_speed'\\]"),
    ('{"policy": 3}', {}, {}, "'policy' must be a JSON object"),
    ("{}", {"VOXEDGE_ENDPOINTER_HANGOVER_S": "soon"}, {}, "environment variable VOXEDGE_ENDPOINTER_HANGOVER_S: "
                                                          "endpointer.hangover_s='soon'"),
    ("{}", {}, {"port": 70000}, "port 70000 must be 0..65535 \\(port from flag --port\\)"),
    ('{"camera": "ftp://x"}', {}, {}, "camera: camera source 'ftp://x': unknown scheme .*\\(camera from settings"),
    ("{}", {"VOXEDGE_MIC": "pulse://x"}, {}, "unknown scheme pulse://.*\\(mic from environment variable VOXEDGE_MIC"),
    ("{}", {}, {"camera_size": "big"}, "camera_size 'big' must be WIDTHxHEIGHT.*flag --camera-size"),
    ('{"backend": "tflite"}', {}, {}, "backend 'tflite' is not one of onnxruntime, tensorrt \\(backend from settings"),
])
def test_the_typed_loader_names_the_layer_of_a_refused_value(tmp_path, content, env, flags, message):
    from edge.settings import load

    f = tmp_path / "s.json"
    f.write_text(content)
    with pytest.raises(SettingsError, match=message):
        load(flags, f, env)


def test_serve_accepts_uri_sources_and_refuses_unknown_ones():
    r = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "bundle", "--link", "sim://", "--camera",
                        "webcam://0"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "unknown scheme webcam://; use csi://N" in r.stderr
