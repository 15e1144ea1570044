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
