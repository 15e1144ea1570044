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
