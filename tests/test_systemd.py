"""sd_notify: READY, watchdog pings at half WatchdogSec, nothing without systemd, and the same from a running
``voxedge serve``; the unit (checked by systemd-analyze) and the example config."""

from __future__ import annotations

import configparser
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.settings import SECTION_NAMES, SERVE_SETTINGS, load
from edge.systemd import Notifier
from tests.service_fixtures import sim_bundle  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_notifications_reach_the_socket_and_pings_are_paced(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert n.enabled and n.period_s == 1.0
    assert n.ready("serving bundle")
    assert sock.recv(256) == b"READY=1\nSTATUS=serving bundle"
    assert n.watchdog(now=10.0) and not n.watchdog(now=10.5) and n.watchdog(now=11.0)
    assert [sock.recv(64), sock.recv(64)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    assert n.stopping() and sock.recv(64) == b"STOPPING=1"
    n.close()
    sock.close()


def test_without_systemd_nothing_happens():
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()


def test_the_unit_is_a_notify_service_with_a_watchdog_and_the_example_config_is_valid():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "voxedge.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "always" and int(service["WatchdogSec"]) >= 2
    assert "voxedge serve --config /etc/voxedge/serve.json" in service["ExecStart"]
    example = ROOT / "deploy" / "serve.example.json"
    assert set(json.loads(example.read_text())) <= {*SERVE_SETTINGS, *SECTION_NAMES}
    s = load({}, example, {})
    assert s.link.port == "/dev/robot" and s.backend == "tensorrt" and s.service.allowed_hosts == ("robot.local",)
    assert s.camera.spec().options["source"] == "/dev/video0" and s.policy.go_to_timeout_s == 25


def _verify_output(unit_text: str, tmp_path: Path) -> str:
    unit = tmp_path / "voxedge.service"
    unit.write_text(unit_text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return (r.stdout + r.stderr).strip() + ("" if r.returncode == 0 else f"\n(rc {r.returncode})")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_line_of_the_unit(tmp_path):
    """systemd's own checker reads the unit: an unknown or misspelt key, a bad value or a bad section is
    reported. Only ExecStart's program is pointed at this checkout's (systemd checks that it exists)."""
    text = (ROOT / "deploy" / "voxedge.service").read_text()
    assert "ExecStart=/opt/voxedge/.venv/bin/voxedge " in text
    here = text.replace("/opt/voxedge/.venv/bin/voxedge", str(Path(sys.executable).with_name("voxedge")))
    assert _verify_output(here, tmp_path) == ""
    # and the checker would have said so (the test can fail): a misspelt key
    assert "Unknown key" in _verify_output(here.replace("WatchdogSec=", "WatchdogSecs="), tmp_path)


def test_voxedge_serve_tells_systemd_ready_pings_its_watchdog_and_says_stopping(sim_bundle, tmp_path):  # noqa: F811
    """``voxedge serve --sim`` run the way the unit runs it (Type=notify, WatchdogSec): READY once the
    runtime is up, WATCHDOG pings from the actuator loop at half the period, STOPPING on SIGTERM, rc 0."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(90.0)  # start-up: loading the bundle and the firmware simulator
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    env = {k: v for k, v in env.items() if not k.startswith("VOXEDGE_")}
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "serve", str(sim_bundle.path), "--sim", "--port", "0",
                             "--precision", "fp32"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        messages = []
        while not messages or not messages[-1].startswith("READY=1"):
            messages.append(sock.recv(256).decode())
        assert messages[-1] == f"READY=1\nSTATUS=serving {sim_bundle.path.name}", messages
        assert all(m == "WATCHDOG=1" for m in messages[:-1]), messages  # nothing else before READY
        sock.settimeout(10.0)
        pings = []
        for _ in range(4):
            assert sock.recv(256) == b"WATCHDOG=1"
            pings.append(time.monotonic())
        # paced at WatchdogSec / 2 = 0.5 s: never faster (the upper side is the scheduler's, not ours)
        assert min(b - a for a, b in itertools.pairwise(pings)) >= 0.4, pings
        proc.send_signal(signal.SIGTERM)
        tail = []
        while True:
            m = sock.recv(256)
            tail.append(m)
            if m == b"STOPPING=1":
                break
        assert set(tail[:-1]) <= {b"WATCHDOG=1"}, tail
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-3000:]
        from edge.int8_numerics import cpu_int8

        # what runs, and on what: the CPU's int8 arithmetic, then the model file
        assert f"cpu: {cpu_int8().describe()}" in out and "model (onnxruntime): fp32: model.fp32.onnx" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
