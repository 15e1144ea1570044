"""Helpers of the benchmarks that start a real ``voxedge serve`` (they run as scripts, so this sits beside them)."""

from __future__ import annotations

import json
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port free on loopback now (for ``voxedge serve --port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_json(path: str | Path, result: dict) -> Path:
    """Save a benchmark's result (bench/results/ is git-ignored) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def request(url: str, data: dict | None = None, headers: dict | None = None, timeout: float = 5.0):
    """GET (or POST ``data`` as JSON); the JSON answer, or the text of any other."""
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json", **(headers or {})},
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def wait_ready(url: str, timeout_s: float, gone=lambda: False) -> str | None:
    """Poll ``url``'s /v2/health/ready: None once it says ready, else why not (``gone()`` true: the server
    exited; or the time ran out)."""
    import time
    import urllib.error

    deadline = time.monotonic() + timeout_s
    while True:
        if gone():
            return "exited at start"
        try:
            if request(url + "/v2/health/ready", timeout=1.0).get("ready"):
                return None
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            return f"did not become ready within {timeout_s:.0f} s"
        time.sleep(0.2)


class ServeProcess:
    """One ``voxedge serve`` process on a free port with its own operator token (given, so never printed).

    ``args`` follow ``voxedge serve`` (the bundle, sources, flags; not ``--port``). Its output is read on a
    thread into ``output``; ``ready()`` waits for ``/v2/health/ready`` and reads the panel's CSRF token, after
    which ``post`` sends operator requests. ``stop()`` sends a signal (SIGTERM), ``kill()`` SIGKILL.
    """

    def __init__(self, args: list[str], env: dict | None = None, root: Path | None = None) -> None:
        import os
        import secrets
        import subprocess
        import sys
        import threading

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The e-stop listener defaults to the HTTP port + 1, which free_port() did not check: another
        # socket may hold it (a CI run failed so), so it takes any free port unless the caller gave one.
        estop = [] if "--estop-port" in args else ["--estop-port", "0"]
        self.token = secrets.token_hex(16)
        self.output: list[str] = []
        self.auth: dict = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", *args, *estop, "--port", str(self.port)],
            cwd=root or Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, **(env or {}), "VOXEDGE_TOKEN": self.token})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line.rstrip())

    def ready(self, timeout_s: float = 120.0):
        import re

        why = wait_ready(self.url, timeout_s, gone=lambda: self.proc.poll() is not None)
        if why is not None:
            raise RuntimeError(f"voxedge serve {why}:\n" + "\n".join(self.output[-20:]))
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', request(self.url + "/")).group(1)
        self.auth = {"Authorization": f"Bearer {self.token}", "X-CSRF-Token": csrf}
        return self

    def post(self, path: str, body: dict | None = None):
        return request(self.url + path, body if body is not None else {}, self.auth)

    def state(self) -> dict:
        return request(self.url + "/api/state", timeout=2.0)

    def kill(self) -> float:
        """SIGKILL now; the monotonic time it was sent."""
        import signal
        import time

        t = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return t

    def stop(self, sig: int | None = None) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if sig is None else sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
