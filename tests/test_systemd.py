"""sd_notify: READY, watchdog pings at half WatchdogSec, nothing without systemd; the unit and example config."""

from __future__ import annotations

import configparser
import json
import socket
from pathlib import Path

from edge.settings import SERVE_SETTINGS, resolve
from edge.systemd import Notifier

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
    assert set(json.loads(example.read_text())) <= set(SERVE_SETTINGS)
    s = resolve({}, example, {})
    assert s["link"] == "/dev/robot" and s["backend"] == "tensorrt" and s["allowed_hosts"] == ("robot.local",)
