"""A real ``voxedge serve BUNDLE --sim`` process for end-to-end tests, and the HTTP helpers they drive it with.

``Serve(bundle, state_dir, *flags).ready()`` starts one on free ports with its own token and state directory,
waits for ``/v2/health/ready`` and reads the panel's CSRF token; ``post`` sends operator requests, ``state``
reads ``/api/state``; ``stop`` sends SIGTERM (SIGKILL after 15 s). Used by the remote-backend and ROS 2 tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# seed 5's arena (simrobot.robot.sim_setup): a green ball 2.3 m ahead, 6 degrees to the right
SEED, COMMAND = 5, "go to the green ball"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: dict | None = None, headers: dict | None = None, timeout: float = 5.0):
    """GET (or POST ``data`` as JSON); the JSON answer, or the text of any other."""
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json", **(headers or {})},
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def until(predicate, timeout_s: float, what: str, period_s: float = 0.05):
    """``predicate()``'s first truthy value, polled; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout_s} s")
        time.sleep(period_s)


def moving(state: dict) -> bool:
    """Whether the state API's setpoint is not zero."""
    sp = state.get("setpoint") or {}
    return abs(sp.get("linear_m_s") or 0.0) > 0.0 or abs(sp.get("angular_rad_s") or 0.0) > 0.0


class Serve:
    """One ``voxedge serve BUNDLE --sim`` process."""

    def __init__(self, bundle: str, state_dir: Path, *extra: str, seed: int = SEED) -> None:
        import secrets

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", bundle, "--sim", "--seed", str(seed), "--port",
             str(self.port), "--estop-port", "0", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "VOXEDGE_TOKEN": self.token, "VOXEDGE_STATE_DIR": str(state_dir)})
        threading.Thread(target=self._read, daemon=True).start()
        self.auth: dict = {}

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line.rstrip())

    def ready(self, timeout_s: float = 120.0) -> Serve:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("voxedge serve exited at start:\n" + "\n".join(self.output[-20:]))
            try:
                if request(self.url + "/v2/health/ready", timeout=1.0).get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("voxedge serve did not become ready:\n" + "\n".join(self.output[-20:]))
            time.sleep(0.2)
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', request(self.url + "/")).group(1)
        self.auth = {"Authorization": f"Bearer {self.token}", "X-CSRF-Token": csrf}
        return self

    def post(self, path: str, body: dict | None = None):
        return request(self.url + path, body if body is not None else {}, self.auth)

    def state(self) -> dict:
        return request(self.url + "/api/state", timeout=2.0)

    def arm(self) -> None:
        self.post("/api/arm")
        until(lambda: ((self.state()["link"]["telemetry"] or {}).get("state") == "ARMED"), 5.0, "armed")

    def go_to(self, command: str = COMMAND, tries: int = 3) -> dict:
        """Say ``command`` (the sim microphone) until the robot drives to it; the state then."""
        for attempt in range(tries):
            self.post("/api/say", {"text": command})
            try:
                return until(lambda: (s := self.state())["activity"]["mode"] == "go_to" and moving(s) and s, 12.0,
                             "driving to the object")
            except AssertionError:
                if attempt == tries - 1:
                    raise AssertionError(f"no go_to after {command!r}: {self.state()}\n" +
                                         "\n".join(self.output[-20:])) from None
        raise AssertionError("tries must be >= 1")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
