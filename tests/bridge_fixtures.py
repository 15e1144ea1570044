"""Helpers shared by the firmware-bridge tests (imported explicitly, not a conftest).

- ``requires_gcc``: skip marker for tests that build the C firmware core.
- ``Harness``: the line-oriented C test driver (``firmware/tools/vx_harness.c``) as a persistent
  subprocess: codec cross-checks and the real core on a virtual clock.
- frame builders for host -> MCU messages, a raw serial client, and parsers for the simulator's logs.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import serial

from firmware_bridge import codec
from firmware_bridge import messages as M
from firmware_bridge.simulator import build_harness, find_compiler
from firmware_bridge.spec import SCHEMA_HASH, HeaderFlag, MsgType

if TYPE_CHECKING:
    from typing_extensions import Self

VECTORS_PATH = Path(__file__).resolve().parents[1] / "firmware_bridge" / "protocol_vectors.json"

requires_gcc = pytest.mark.skipif(
    find_compiler() is None,
    reason="no C compiler (gcc): these tests build the firmware core for this host; install gcc to run them")


def load_vectors() -> dict:
    """The committed shared test vectors."""
    return json.loads(VECTORS_PATH.read_text())


# ------------------------------------------------------------------ host -> MCU frames


def hello(seq: int, ts: int, nonce: int = 1, schema_hash: int = SCHEMA_HASH) -> bytes:
    """Wire bytes of a HELLO."""
    return codec.encode_frame(MsgType.HELLO, M.pack(M.Hello(schema_hash, nonce)), seq=seq, timestamp_ms=ts)


def setpoint(seq: int, ts: int, linear: float, angular: float, ttl_ms: int = 200, echo: bool = False) -> bytes:
    """Wire bytes of a SETPOINT."""
    return codec.encode_frame(MsgType.SETPOINT, M.pack(M.Setpoint(linear, angular, ttl_ms)), seq=seq,
                              timestamp_ms=ts, flags=HeaderFlag.ECHO_REQUEST if echo else 0)


def control(seq: int, ts: int, control_id: int, op: int, ttl_ms: int = 500, arg0: float = 0.0, arg1: float = 0.0,
            arg2: int = 0) -> bytes:
    """Wire bytes of a CONTROL."""
    return codec.encode_frame(MsgType.CONTROL, M.pack(M.Control(control_id, op, ttl_ms, arg0, arg1, arg2)),
                              seq=seq, timestamp_ms=ts)


def decode_stream(data: bytes) -> list[tuple[codec.Frame, M.Message]]:
    """Decode every frame in a byte stream (asserting none is bad)."""
    reader = codec.FrameReader()
    frames = reader.feed(data)
    assert reader.counters.crc_errors == reader.counters.malformed == reader.counters.oversize == 0, \
        reader.counters.errors
    return [(f, M.unpack(f.msg_type, f.payload)) for f in frames]


# ------------------------------------------------------------------ the C harness


class Harness:
    """The C test driver as a persistent subprocess; one command, one answer line."""

    def __init__(self, sanitize: bool = False) -> None:
        self.binary = build_harness(sanitize=sanitize)
        self.proc = subprocess.Popen([str(self.binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def cmd(self, line: str) -> str:
        """Send one command and return its answer line."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"harness died on {line[:80]!r} (exit {self.proc.wait()}): {err[-3000:]}")
        return out.rstrip("\n")

    def close(self) -> tuple[int, str]:
        """Close stdin, wait, return (exit status, stderr)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=30)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return rc, err

    # core on a virtual clock
    def core_init(self, schema_hash: int = SCHEMA_HASH, clock_start_ms: int = 1000) -> None:
        """A fresh core; the MCU clock starts at ``clock_start_ms``."""
        assert self.cmd(f"core_init {schema_hash:08x} {clock_start_ms}") == "OK"

    def rx(self, data: bytes) -> None:
        """Bytes into the core."""
        assert self.cmd(f"core_rx {data.hex() or '-'}") == "OK"

    def advance(self, ms: int, step_us: int = 1000) -> None:
        """Run the core for ``ms`` of virtual time."""
        assert self.cmd(f"core_advance {ms} {step_us}") == "OK"

    def trace(self, ms: int, step_us: int = 1000) -> list[tuple[float, float, float, int]]:
        """Run ``ms`` and return (t_ms, cmd_left, cmd_right, state) after every step."""
        out = self.cmd(f"core_trace {ms} {step_us}")
        rows = []
        for item in out.split(";"):
            t, cl, cr, st = item.split(":")
            rows.append((float(t), float(cl), float(cr), int(st)))
        return rows

    def status(self) -> dict[str, float]:
        """The core's state, motor commands, pose and counters."""
        return {k: float(v) for k, v in (kv.split("=") for kv in self.cmd("core_status").split())}

    def tx(self) -> list[tuple[codec.Frame, M.Message]]:
        """Frames the core sent since the last call, decoded by the Python codec."""
        out = self.cmd("core_tx")
        return [] if out == "-" else decode_stream(bytes.fromhex(out))

    def events(self) -> list[tuple[int, int, int, int, int, int]]:
        """Core events since the last call: (kind, id, op, result, age_ms, ttl_ms)."""
        out = self.cmd("core_events")
        if out == "-":
            return []
        return [tuple(int(x) for x in item.split(",")) for item in out.split(";")]  # type: ignore[misc]


# ------------------------------------------------------------------ raw serial client (no Link)


class RawClient:
    """Talks frames to a port directly, for tests that must send what ``Link`` never would."""

    def __init__(self, port: str) -> None:
        self.ser = serial.Serial(port, 115200, timeout=0.02, exclusive=True)
        self.ser.reset_input_buffer()
        self.reader = codec.FrameReader()
        self.seq = 1

    def next_seq(self) -> int:
        """A fresh header sequence number."""
        self.seq += 1
        return self.seq

    def send(self, data: bytes) -> None:
        """Write raw bytes."""
        self.ser.write(data)

    def collect(self, seconds: float) -> list[tuple[codec.Frame, M.Message]]:
        """Read frames for ``seconds``."""
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for f in self.reader.feed(self.ser.read(4096)):
                out.append((f, M.unpack(f.msg_type, f.payload)))
        return out

    def wait_for(self, cls: type, seconds: float = 2.0, predicate=None):
        """Read until a message of ``cls`` (matching ``predicate``) arrives; fail the test otherwise."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for f in self.reader.feed(self.ser.read(4096)):
                msg = M.unpack(f.msg_type, f.payload)
                if isinstance(msg, cls) and (predicate is None or predicate(msg)):
                    return msg
        raise AssertionError(f"no {cls.__name__} within {seconds} s")

    def close(self) -> None:
        """Close the port."""
        self.ser.close()


def now_ms() -> int:
    """Host timestamp as the Link writes it."""
    return int(time.monotonic() * 1000) & 0xFFFFFFFF


# ------------------------------------------------------------------ simulator logs


@dataclass(frozen=True)
class Event:
    """One line of the simulator's --event-log."""

    t: float  # CLOCK_MONOTONIC seconds (same clock as time.monotonic())
    kind: str
    fields: dict[str, str]

    def int(self, key: str) -> int:
        """A field as an int."""
        return int(self.fields[key])


def read_events(path: Path) -> list[Event]:
    """Parse the simulator's event log."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        out.append(Event(float(parts[0]), parts[1], fields))
    return out


class SetpointStream:
    """A 20 Hz setpoint stream on its own thread, like the actuator loop's heartbeat (zeros when idle)."""

    def __init__(self, link, linear: float = 0.0, angular: float = 0.0, ttl_s: float = 0.2,
                 period_s: float = 0.05) -> None:
        import threading

        self.link = link
        self.value = (linear, angular, ttl_s)
        self.period_s = period_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-setpoints", daemon=True)

    def set(self, linear: float, angular: float = 0.0, ttl_s: float | None = None) -> None:
        """Change the streamed setpoint."""
        self.value = (linear, angular, self.value[2] if ttl_s is None else ttl_s)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            v, w, ttl = self.value
            if self.link.send_setpoint(v, w, ttl_s=ttl):
                self.sent += 1
            next_at += self.period_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        assert not self._thread.is_alive()
