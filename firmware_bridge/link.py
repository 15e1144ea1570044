"""Host side of the serial link to the robot's microcontroller.

``Link`` owns the serial port in one I/O thread ("bridge-io"): it opens the port
exclusively, does the handshake, streams setpoints, sends and retries controls,
decodes telemetry, and reconnects after a cable pull. Callers on other threads
only touch bounded slots and get immutable snapshots back (``firmware_bridge.values``)::

    with Link("/dev/robot") as link:
        link.arm().result(timeout=1.0).raise_for_status()
        while driving:
            link.send_setpoint(0.2, 0.0)          # every 50 ms; latest-only, never retransmitted
            pose = link.telemetry                 # frozen snapshot with .age_s
        link.estop()                              # jumps the queue, repeated until acknowledged

Traffic classes
    Setpoints are latest-only: a newer one replaces an unsent older one, and none
    is ever resent. Each carries the host time it was issued and a TTL; the MCU
    drops stale, out-of-order and duplicated ones. Controls (arm, disarm, clear
    failsafe, gripper, config) are queued, sent one at a time and retried with the
    same id until acknowledged or reported failed; e-stop overtakes everything and
    is repeated until acknowledged (``firmware_bridge.control_queue``).

Reconnects
    A missing port path is polled and failed opens or handshakes back off
    (``firmware_bridge.port``). A connection with no valid frame for
    ``LINK_SILENCE_TIMEOUT_MS`` is dropped and reopened. Pending controls fail when
    the link drops (never replayed on a new connection) and the MCU disarms on every
    handshake: after a reconnect the robot stays disarmed until ``arm()``.

Clocks, TTL and staleness
    Every host frame carries the host's ``time.monotonic()`` in ms (modulo 2**32,
    compared with serial-number arithmetic) at which the command was *issued*: a
    setpoint's is the ``send_setpoint()`` call, a retried control keeps its first
    send's. The two clocks are never synchronised; instead the MCU estimates their
    offset (``firmware/core/vx_core.c``, ``clock_observe``):

    - each HELLO and SETPOINT gives a sample ``s = mcu_rx_ms - host_ts_ms``, i.e. the
      true offset plus that frame's one-way delay (queueing, USB, UART);
    - the estimate ``o`` is the lower envelope of the samples: a smaller sample replaces
      it at once, but one frame may lower it by at most ``CLOCK_STEP_MAX_MS`` (a
      setpoint further ahead is rejected ``AHEAD``, as is one more than
      ``SEQ_AHEAD_MAX`` sequence numbers ahead); it may rise only by the clock drift the MCU allows for
      (``CLOCK_DRIFT_MAX_PPM``, 0.5 %, banked per elapsed ms, capped at ``TTL_MAX_MS``);
      a handshake restarts it;
    - a frame's age is ``s - o``: its delay beyond the fastest recent frame.

    Bounds: the age is never over-estimated (o >= the true offset plus the smallest
    delay seen, up to drift). It is under-estimated by at most that smallest one-way
    delay (a pseudo-terminal: well under 1 ms; a 115200-baud UART: the ~2 ms a frame
    takes on the wire) plus the drift allowance banked since the last undelayed frame
    (5 us per ms, i.e. 0.25 ms between two 20 Hz setpoints). A link that is slow from
    the very first frame on is not seen as stale, but a stall that builds up is:
    a setpoint stuck 300 ms in a buffer arrives 300 ms "old" and is dropped when its
    TTL is shorter. On top of the TTL the MCU requires setpoints in increasing
    sequence number *and* host time (duplicates and reordered ones are dropped),
    expires an applied setpoint when its TTL runs out (motors ramp to zero), and its
    250 ms watchdog latches a failsafe whatever the clocks say.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import select
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from enum import Enum
from typing import TYPE_CHECKING

import serial

from firmware_bridge import messages as M
from firmware_bridge.codec import FrameReader, encode_frame
from firmware_bridge.control_queue import (
    ACK_TIMEOUT_S,
    CONTROL_ATTEMPTS,
    CONTROL_QUEUE_MAX,
    ControlQueue,
    PendingControl,
)
from firmware_bridge.errors import (
    BridgeError,
    BridgeTimeoutError,
    HandshakeError,
    InvalidValueError,
    LinkStateError,
    NotConnectedError,
    PortError,
)
from firmware_bridge.port import (
    WRITE_TIMEOUT_S,
    ReconnectSchedule,
    close_port,
    device_of,
    open_error,
    open_port,
)
from firmware_bridge.spec import (
    CONST,
    SCHEMA_HASH,
    Capability,
    EchoResult,
    HeaderFlag,
    MsgType,
    Op,
    Result,
    State,
)
from firmware_bridge.values import (
    ControlResult,
    HandshakeInfo,
    LinkCounters,
    LinkStats,
    Outcome,
    Telemetry,
)

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

BAUD_RATE = int(CONST["BAUD_RATE"])
TTL_DEFAULT_S = CONST["TTL_DEFAULT_MS"] / 1000.0
TTL_MAX_S = CONST["TTL_MAX_MS"] / 1000.0
MAX_LINEAR_M_S = float(CONST["MAX_LINEAR_M_S"])
MAX_ANGULAR_RAD_S = float(CONST["MAX_ANGULAR_RAD_S"])
HANDSHAKE_RETRY_S = CONST["HANDSHAKE_RETRY_MS"] / 1000.0
HANDSHAKE_TIMEOUT_S = CONST["HANDSHAKE_TIMEOUT_MS"] / 1000.0
LINK_SILENCE_TIMEOUT_S = CONST["LINK_SILENCE_TIMEOUT_MS"] / 1000.0
TELEMETRY_PERIOD_MIN_S = CONST["TELEMETRY_PERIOD_MIN_MS"] / 1000.0
TELEMETRY_PERIOD_MAX_S = CONST["TELEMETRY_PERIOD_MAX_MS"] / 1000.0

IO_TICK_S = 0.05  # the I/O thread wakes at least this often
JOIN_TIMEOUT_S = 3.0  # bounded join of the I/O thread
ECHO_PENDING_MAX = 64  # echo requests remembered while waiting for their answer
# The MCU rejecting this many echoed setpoints in a row as stale, out of order or ahead (with echo_every=10:
# 1.5 s of setpoints) means its clock estimate or sequence state no longer fits ours (a frame that moved it,
# an old firmware without the CLOCK_STEP_MAX_MS bound): handshake again, which resets both.
LOCKOUT_ECHOES = 3
_LOCKOUT_RESULTS = frozenset({EchoResult.STALE, EchoResult.OUT_OF_ORDER, EchoResult.AHEAD})
RX_REORDER_WINDOW = 64  # an MCU frame this many sequence numbers behind the last is a counter restart
_U32 = 0xFFFFFFFF


def host_ms() -> int:
    """The host timestamp carried in frames: ``time.monotonic()`` in ms modulo 2**32."""
    return int(time.monotonic() * 1000.0) & _U32


def _s32(value: int) -> int:
    """Interpret a 32-bit difference as signed (serial-number arithmetic)."""
    value &= _U32
    return value - (1 << 32) if value >= (1 << 31) else value


class _Phase(Enum):
    CLOSED = 0
    HANDSHAKING = 1
    CONNECTED = 2


class _LinkLost(Exception):
    """Internal: the current connection is unusable (the I/O thread reconnects)."""


def _echo_name(code: int) -> str:
    try:
        return EchoResult(code).name
    except ValueError:
        return f"code {code}"


def _check_finite(name: str, value: float, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{name}={value!r} is not a number: pass a value in {unit}") from exc
    if not math.isfinite(v):
        raise InvalidValueError(f"{name}={value!r} is not a finite number: pass a value in {unit}")
    return v


class Link:
    """The serial link to the MCU; see the module docstring.

    Args:
        port: serial device path; prefer a stable one (``/dev/robot`` from the udev rule,
            ``/dev/serial/by-id/...``), since reconnects reopen the same path.
        baudrate: UART speed (the firmware uses ``BAUD_RATE``).
        connect_timeout_s: how long :meth:`connect` waits for the first handshake.
        ack_timeout_s: wait for an ack before resending a control.
        control_attempts: sends of a control before it is reported failed.
        echo_every: ask the MCU to echo every Nth setpoint (round-trip statistics); 0 turns it off.
        schema_hash: the protocol schema hash announced in HELLO (tests override it).
    """

    def __init__(self, port: str, *, baudrate: int = BAUD_RATE, connect_timeout_s: float = HANDSHAKE_TIMEOUT_S + 1.0,
                 ack_timeout_s: float = ACK_TIMEOUT_S, control_attempts: int = CONTROL_ATTEMPTS,
                 echo_every: int = 10, schema_hash: int = SCHEMA_HASH) -> None:
        if not isinstance(port, (str, os.PathLike)) or not str(port):
            raise InvalidValueError(f"port={port!r}: pass a serial device path such as '/dev/robot'")
        if int(baudrate) <= 0:
            raise InvalidValueError(f"baudrate={baudrate!r} must be positive, e.g. {BAUD_RATE}")
        if not 0.0 < ack_timeout_s <= 5.0:
            raise InvalidValueError(f"ack_timeout_s={ack_timeout_s!r}: use a value in (0, 5] seconds")
        if not 1 <= int(control_attempts) <= 50:
            raise InvalidValueError(f"control_attempts={control_attempts!r}: use 1 to 50")
        if control_attempts * ack_timeout_s * 1000 > CONST["TTL_MAX_MS"]:
            raise InvalidValueError(
                f"control_attempts * ack_timeout_s = {control_attempts * ack_timeout_s:.3f} s exceeds the firmware's "
                f"TTL limit of {TTL_MAX_S} s: use fewer attempts or a shorter timeout")
        if int(echo_every) < 0:
            raise InvalidValueError(f"echo_every={echo_every!r} must be >= 0 (0 disables echo requests)")
        self._port = os.fspath(port)
        self._baudrate = int(baudrate)
        self._connect_timeout_s = float(connect_timeout_s)
        self._ack_timeout_s = float(ack_timeout_s)
        self._attempts = int(control_attempts)
        self._echo_every = int(echo_every)
        self._schema_hash = int(schema_hash) & _U32
        self._nonce = secrets.randbits(32)  # new per Link: the MCU forgets the control ids of older sessions

        self._lock = threading.Lock()
        self._telemetry_cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._first_done = threading.Event()
        self._first_error: BaseException | None = None
        self._crash: BaseException | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None

        # shared with callers (under _lock)
        self._phase = _Phase.CLOSED
        self._setpoint: tuple[float, float, int, int] | None = None
        self._telemetry: Telemetry | None = None
        self._handshake: HandshakeInfo | None = None
        self._n = LinkCounters()
        self._reader = FrameReader()
        self._controls = ControlQueue(self._lock, self._n, ack_timeout_s=self._ack_timeout_s,
                                      attempts=self._attempts)

        # owned by the I/O thread
        self._ser: serial.Serial | None = None
        self._tx_seq = 1
        self._rx_seq: int | None = None
        self._hello_seqs: dict[int, float] = {}
        self._hs_started = 0.0
        self._hs_bad_frames = 0  # the reader's bad-frame count when the handshake started
        self._next_hello = 0.0
        self._last_rx = 0.0
        self._echo_sent: OrderedDict[int, float] = OrderedDict()
        self._rejected_run = 0  # echoed setpoints rejected in a row (LOCKOUT_ECHOES)
        self._setpoint_count = 0
        self._ever_connected = False
        self._reconnect = ReconnectSchedule()

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> str:
        """The serial port path given to the constructor."""
        return self._port

    @property
    def is_connected(self) -> bool:
        """True while a handshaken connection is up (False while reconnecting)."""
        with self._lock:
            return self._phase is _Phase.CONNECTED

    def connect(self) -> Link:
        """Start the I/O thread, open the port and complete the first handshake.

        Later cable pulls are handled in the background (see the module docstring).

        Raises:
            LinkStateError: already connected.
            PortError: the port is missing, not permitted or busy.
            HandshakeError: the MCU did not answer in time.
        """
        if self._thread is not None and self._thread.is_alive():
            raise LinkStateError(f"link to {self._port!r} is already connected: call disconnect() first")
        self._stop.clear()
        self._first_done.clear()
        self._ever_connected = False  # connect() reports the first attempt's failure to its caller
        self._reconnect.reset()
        self._first_error = None
        self._crash = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="bridge-io", daemon=True)
        self._thread.start()
        if not self._first_done.wait(self._connect_timeout_s):
            self._shutdown()
            raise HandshakeError(f"no handshake with the MCU on {self._port!r} within {self._connect_timeout_s:.1f} s: "
                                 "check that the firmware is flashed and running, and the baud rate "
                                 f"({self._baudrate})")
        if self._first_error is not None:
            err = self._first_error
            self._shutdown()
            raise err
        info = self.handshake
        if info is not None and not info.schema_match:
            log.warning("firmware %s has protocol schema 0x%08X, host has 0x%08X: arming is refused until the "
                        "firmware is rebuilt from this checkout", info.build_id, info.schema_hash, info.host_schema_hash)
        return self

    def disconnect(self, *, disarm: bool = True) -> None:
        """Disarm (best effort, when armed), stop the I/O thread and close the port. Idempotent."""
        if self._thread is None:
            return
        if disarm and self.is_connected:
            telemetry = self.telemetry
            if telemetry is not None and telemetry.armed:
                try:
                    self.disarm().result(timeout=self._ack_timeout_s * self._attempts + 0.5)
                except (BridgeError, TimeoutError) as exc:
                    log.warning("disarm before disconnecting failed: %s", exc)
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.error("bridge I/O thread did not stop within %.1f s", JOIN_TIMEOUT_S)
        self._thread = None
        fds = (self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = None  # before closing: a late _wake() must not hit a reused fd number
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"Link({self._port!r}, connected={self.is_connected})"

    # ------------------------------------------------------------------ motion

    def send_setpoint(self, linear_m_s: float, angular_rad_s: float, ttl_s: float = TTL_DEFAULT_S) -> bool:
        """Offer the latest motion setpoint (non-blocking; replaces an unsent older one; never retransmitted).

        Values are clamped to the hard limits (``MAX_LINEAR_M_S``, ``MAX_ANGULAR_RAD_S``);
        the firmware clamps again. Call it at the stream rate (20 Hz), zeros when idle.

        Returns:
            True when queued for sending, False when the link is down (reconnecting).

        Raises:
            InvalidValueError: a value is not finite, or ``ttl_s`` is not in (0, TTL_MAX_S].
            NotConnectedError: ``connect()`` was never called (or ``disconnect()`` was).
        """
        v = _check_finite("linear_m_s", linear_m_s, "m/s")
        w = _check_finite("angular_rad_s", angular_rad_s, "rad/s")
        ttl = _check_finite("ttl_s", ttl_s, "s")
        if not 0.001 <= ttl <= TTL_MAX_S:
            raise InvalidValueError(f"ttl_s={ttl_s!r}: use a time-to-live in [0.001, {TTL_MAX_S}] s "
                                    f"(default {TTL_DEFAULT_S} s)")
        issued = host_ms()
        self._require_started()
        cv = min(max(v, -MAX_LINEAR_M_S), MAX_LINEAR_M_S)
        cw = min(max(w, -MAX_ANGULAR_RAD_S), MAX_ANGULAR_RAD_S)
        with self._lock:
            if cv != v or cw != w:
                self._n.setpoints_clamped += 1
            if self._phase is not _Phase.CONNECTED:
                self._n.setpoints_dropped += 1
                return False
            if self._setpoint is not None:
                self._n.setpoints_superseded += 1
            self._setpoint = (cv, cw, round(ttl * 1000), issued)
        self._wake()
        return True

    # ------------------------------------------------------------------ controls

    def arm(self) -> Future[ControlResult]:
        """Ask the MCU to arm (refused on a schema mismatch, while e-stopped, or without a handshake)."""
        info = self.handshake
        if info is not None and not info.schema_match:
            detail = (f"arming refused: firmware {info.build_id!r} has protocol schema 0x{info.schema_hash:08X}, "
                      f"this host 0x{info.host_schema_hash:08X}; flash firmware built from this checkout "
                      "(python -m firmware_bridge.spec --write regenerates the header)")
            return self._controls.resolved(Op.ARM, Outcome.REFUSED, Result.REFUSED_SCHEMA, detail)
        return self._submit(Op.ARM)

    def disarm(self) -> Future[ControlResult]:
        """Ask the MCU to disarm (motors ramp to zero)."""
        return self._submit(Op.DISARM)

    def clear_failsafe(self) -> Future[ControlResult]:
        """Leave FAILSAFE or ESTOP for DISARMED (arming is a separate, explicit step)."""
        return self._submit(Op.CLEAR_FAILSAFE)

    def gripper(self, open: bool) -> Future[ControlResult]:
        """Open (True) or close (False) the gripper."""
        return self._submit(Op.GRIPPER_OPEN if open else Op.GRIPPER_CLOSE)

    def configure(self, *, max_linear_m_s: float = MAX_LINEAR_M_S, max_angular_rad_s: float = MAX_ANGULAR_RAD_S,
                  telemetry_period_s: float = CONST["TELEMETRY_PERIOD_MS"] / 1000.0) -> Future[ControlResult]:
        """Lower the firmware's speed/turn clamps and set the telemetry period.

        Raises:
            InvalidValueError: a limit is not in (0, hard limit] or the period not in [0.02, 1] s.
        """
        v = _check_finite("max_linear_m_s", max_linear_m_s, "m/s")
        w = _check_finite("max_angular_rad_s", max_angular_rad_s, "rad/s")
        p = _check_finite("telemetry_period_s", telemetry_period_s, "s")
        if not 0.0 < v <= MAX_LINEAR_M_S:
            raise InvalidValueError(f"max_linear_m_s={max_linear_m_s!r}: use a value in (0, {MAX_LINEAR_M_S}] m/s")
        if not 0.0 < w <= MAX_ANGULAR_RAD_S:
            raise InvalidValueError(
                f"max_angular_rad_s={max_angular_rad_s!r}: use a value in (0, {MAX_ANGULAR_RAD_S}] rad/s")
        if not TELEMETRY_PERIOD_MIN_S <= p <= TELEMETRY_PERIOD_MAX_S:
            raise InvalidValueError(f"telemetry_period_s={telemetry_period_s!r}: use a value in "
                                    f"[{TELEMETRY_PERIOD_MIN_S}, {TELEMETRY_PERIOD_MAX_S}] s")
        return self._submit(Op.CONFIG, (v, w, round(p * 1000)))

    def estop(self) -> Future[ControlResult]:
        """Emergency stop: sent before anything else, repeated until acknowledged (also across reconnects).

        Returns the pending e-stop's future if one is already in progress.

        Raises:
            NotConnectedError: ``connect()`` was never called (or ``disconnect()`` was).
        """
        self._require_started()
        fut = self._controls.request_estop()
        self._wake()
        return fut

    # ------------------------------------------------------------------ state

    @property
    def telemetry(self) -> Telemetry | None:
        """The latest telemetry snapshot (None before the first one); see ``Telemetry.age_s``."""
        with self._lock:
            return self._telemetry

    @property
    def handshake(self) -> HandshakeInfo | None:
        """What the firmware announced at the latest handshake (None before the first)."""
        with self._lock:
            return self._handshake

    @property
    def stats(self) -> LinkStats:
        """A snapshot of the link statistics."""
        with self._lock:
            telemetry = self._telemetry
            return self._n.snapshot(connected=self._phase is _Phase.CONNECTED, rx=self._reader.counters,
                                    mcu=telemetry.counters if telemetry else None)

    def wait_for_telemetry(self, predicate=None, timeout_s: float = 1.0) -> Telemetry:
        """Block until a telemetry report newer than the current one (and satisfying ``predicate``) arrives.

        Raises:
            BridgeTimeoutError: none arrived within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with self._telemetry_cond:
            start = self._telemetry
            while True:
                t = self._telemetry
                if t is not None and t is not start and (predicate is None or predicate(t)):
                    return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BridgeTimeoutError(
                        f"no matching telemetry from {self._port!r} within {timeout_s:.2f} s "
                        f"(latest: {'none' if t is None else f'state={t.state.name}, age={t.age_s:.2f} s'})")
                self._telemetry_cond.wait(left)

    # ------------------------------------------------------------------ caller-side helpers

    def _require_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            if self._crash is not None:
                raise NotConnectedError(f"the I/O thread of the link to {self._port!r} stopped after an internal "
                                        f"error ({self._crash!r}, logged with its traceback): disconnect() and "
                                        "connect() again, and report the error")
            raise NotConnectedError(f"link to {self._port!r} is not started: call connect() first")

    def _submit(self, op: Op, args: tuple[float, float, int] = (0.0, 0.0, 0)) -> Future:
        self._require_started()
        with self._lock:  # the phase cannot change before the control is queued (a drop fails the queue)
            phase = None if self._phase is _Phase.CONNECTED else self._phase.name.lower()
            fut = self._controls.enqueue(op, args) if phase is None else None
        if fut is None:
            detail = (f"{op.name} not sent: the link to {self._port!r} is {phase}; retry once link.is_connected"
                      if phase is not None else
                      f"{op.name} not sent: {CONTROL_QUEUE_MAX} controls already waiting; wait for their results")
            return self._controls.resolved(op, Outcome.FAILED, None, detail)
        self._wake()
        return fut

    def _wake(self) -> None:
        fd = self._wake_w
        if fd is not None:
            try:
                os.write(fd, b"\x01")
            except (BlockingIOError, OSError):
                pass  # already has a pending wake-up (or shutting down)

    # ------------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._ser is None:
                    self._try_open()
                    continue
                try:
                    self._service()
                except _LinkLost as exc:
                    self._drop(str(exc))
                except (serial.SerialException, OSError) as exc:
                    self._drop(f"port error: {exc}")
        except BaseException as exc:  # report, never die silently
            log.exception("bridge I/O thread crashed")
            self._crash = exc
            self._report_first(BridgeError(f"bridge I/O thread crashed: {exc!r}"))
        finally:
            self._close_port()
            self._controls.fail_all("the link was disconnected", include_estop=True)
            with self._lock:
                self._phase = _Phase.CLOSED

    def _report_first(self, error: BaseException | None) -> None:
        if not self._first_done.is_set():
            self._first_error = error
            self._first_done.set()

    def _try_open(self) -> None:
        now = time.monotonic()
        device = device_of(self._port)
        if device is None and not self._ever_connected:
            self._report_first(open_error(self._port, OSError(errno.ENOENT, "no such file")))
            self._stop.set()
            return
        wait_s = self._reconnect.wait_s(device, now)
        if wait_s > 0.0:
            self._stop.wait(wait_s)
            return
        try:
            self._ser = open_port(self._port, self._baudrate)
        except PortError as exc:
            self._attempt_failed(exc)
            return
        self._reader.reset()
        self._rx_seq = None
        self._hello_seqs.clear()
        self._echo_sent.clear()
        self._rejected_run = 0
        self._hs_started = time.monotonic()
        self._hs_bad_frames = 0  # the reader was just reset
        self._next_hello = self._hs_started
        self._last_rx = self._hs_started
        with self._lock:
            self._phase = _Phase.HANDSHAKING

    def _attempt_failed(self, error: BridgeError) -> None:
        with self._lock:
            self._n.connect_failures += 1
        if not self._ever_connected:
            self._report_first(error)
            self._stop.set()
            return
        log.info("reconnect to %s failed (%s); next try in %.1f s", self._port, error, self._reconnect.backoff_s)
        self._reconnect.failed(time.monotonic())

    def _close_port(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            close_port(ser)

    def _drop(self, reason: str) -> None:
        was_connected = self._phase is _Phase.CONNECTED
        self._close_port()
        self._controls.fail_inflight(f"link lost before an ack ({reason}); it may or may not have executed")
        self._controls.fail_all(f"link lost ({reason}) before it was sent", include_estop=False)
        with self._lock:
            self._phase = _Phase.CLOSED
            self._setpoint = None
            if was_connected:
                self._n.link_losses += 1
        if not self._ever_connected:
            self._report_first(HandshakeError(f"handshake with the MCU on {self._port!r} failed: {reason}"))
            self._stop.set()
            return
        log.warning("link to %s lost: %s; reconnecting", self._port, reason)
        if was_connected:
            self._reconnect.lost(time.monotonic())
        else:
            self._attempt_failed(HandshakeError(reason))

    def _write(self, msg_type: int, payload: bytes, *, timestamp_ms: int, flags: int = 0) -> int:
        assert self._ser is not None
        seq = self._tx_seq
        self._tx_seq = (seq + 1) & _U32
        data = encode_frame(msg_type, payload, seq=seq, timestamp_ms=timestamp_ms, flags=flags)
        try:
            self._ser.write(data)
        except serial.SerialTimeoutException as exc:
            raise _LinkLost(f"write blocked for {WRITE_TIMEOUT_S} s") from exc
        with self._lock:
            self._n.frames_sent += 1
        return seq

    def _service(self) -> None:
        assert self._ser is not None and self._wake_r is not None
        timeout = self._next_deadline() - time.monotonic()
        ready, _, _ = select.select([self._ser.fileno(), self._wake_r], [], [], min(max(timeout, 0.0), IO_TICK_S))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 256):
                    pass
            except BlockingIOError:
                pass
        if self._ser.fileno() in ready:
            data = self._ser.read(4096)
            if data:
                with self._lock:
                    frames = self._reader.feed(data)
                now = time.monotonic()
                for frame in frames:
                    self._on_frame(frame, now)
        if self._ser is None:
            return
        now = time.monotonic()
        if self._phase is _Phase.CONNECTED and now - self._last_rx > LINK_SILENCE_TIMEOUT_S:
            raise _LinkLost(f"no valid frame from the MCU for {LINK_SILENCE_TIMEOUT_S:.1f} s")
        self._send_estop(now)
        if self._phase is _Phase.HANDSHAKING:
            if now - self._hs_started > HANDSHAKE_TIMEOUT_S:
                rc = self._reader.counters
                bad = rc.crc_errors + rc.malformed + rc.oversize - self._hs_bad_frames
                if bad > 0:  # bytes arrive but never a valid frame: the classic symptom of a baud mismatch
                    raise _LinkLost(f"no HELLO_ACK within {HANDSHAKE_TIMEOUT_S:.1f} s, and {bad} garbled frame(s) "
                                    f"arrived: the baud rates most likely differ (host {self._baudrate}, the firmware "
                                    f"is built for {BAUD_RATE}; see firmware_bridge/deploy/README.md)")
                raise _LinkLost(f"no HELLO_ACK within {HANDSHAKE_TIMEOUT_S:.1f} s (is the firmware running at "
                                f"{self._baudrate} baud?)")
            if now >= self._next_hello:
                seq = self._write(MsgType.HELLO, M.pack(M.Hello(self._schema_hash, self._nonce)),
                                  timestamp_ms=host_ms())
                self._hello_seqs[seq] = now
                self._next_hello = now + HANDSHAKE_RETRY_S
            return
        self._send_setpoint()
        self._send_control(time.monotonic())

    def _next_deadline(self) -> float:
        now = time.monotonic()
        deadline = now + IO_TICK_S
        if self._phase is _Phase.HANDSHAKING:
            deadline = min(deadline, self._next_hello)
        deadline = min(deadline, self._controls.next_send_at(now))
        if self._setpoint is not None:
            deadline = now
        return deadline

    def _send_estop(self, now: float) -> None:
        e = self._controls.due_estop(now)
        if e is not None:
            self._write_control(e, now)

    def _send_setpoint(self) -> None:
        with self._lock:
            sp, self._setpoint = self._setpoint, None
        if sp is None:
            return
        v, w, ttl_ms, issued = sp
        self._setpoint_count += 1
        echo = self._echo_every > 0 and self._setpoint_count % self._echo_every == 0
        seq = self._write(MsgType.SETPOINT, M.pack(M.Setpoint(v, w, ttl_ms)), timestamp_ms=issued,
                          flags=HeaderFlag.ECHO_REQUEST if echo else 0)
        if echo:
            self._echo_sent[seq] = time.monotonic()
            while len(self._echo_sent) > ECHO_PENDING_MAX:
                self._echo_sent.popitem(last=False)
        with self._lock:
            self._n.setpoints_sent += 1

    def _send_control(self, now: float) -> None:
        p = self._controls.due_control(now)
        if p is not None:
            self._write_control(p, now)

    def _write_control(self, p: PendingControl, now: float) -> None:
        if p.issued_ms is None:
            p.issued_ms = host_ms()
        a0, a1, a2 = p.args
        self._write(MsgType.CONTROL, M.pack(M.Control(p.control_id, p.op, p.ttl_ms, a0, a1, a2)),
                    timestamp_ms=p.issued_ms)
        self._controls.sent(p, now)

    # ------------------------------------------------------------------ received frames

    def _on_frame(self, frame, now: float) -> None:
        try:
            msg = M.unpack(frame.msg_type, frame.payload)
        except BridgeError:
            return  # decode_frame already checked type and size; unreachable in practice
        self._last_rx = now
        if isinstance(msg, M.HelloAck):
            self._on_hello_ack(msg, frame, now)
            return
        if self._rx_seq is not None:
            d = _s32(frame.seq - self._rx_seq)
            if -RX_REORDER_WINDOW < d <= 0:
                with self._lock:
                    self._n.stale_rx += 1
                return  # a duplicated or reordered MCU frame: never act on it twice or go back in time
            if d > 1:
                with self._lock:
                    self._n.seq_gaps += d - 1
        self._rx_seq = frame.seq
        if isinstance(msg, M.Ack):
            reason = self._controls.on_ack(msg, now)
            if reason is not None:
                self._rehandshake(now, reason, lockout=True)
        elif isinstance(msg, M.SetpointEcho):
            sent = self._echo_sent.pop(msg.echo_seq, None)
            if sent is not None:
                with self._lock:
                    self._n.add_rtt(now - sent)
                self._rejected_run = self._rejected_run + 1 if msg.result in _LOCKOUT_RESULTS else 0
                if self._rejected_run >= LOCKOUT_ECHOES:
                    self._rehandshake(now, f"the MCU rejected {self._rejected_run} setpoints in a row as "
                                           f"{_echo_name(msg.result)} although they were fresh", lockout=True)
        elif isinstance(msg, M.TelemetryMsg):
            self._on_telemetry(msg, frame, now)

    def _on_hello_ack(self, msg: M.HelloAck, frame, now: float) -> None:
        sent = self._hello_seqs.get(msg.echo_seq)
        if self._phase is not _Phase.HANDSHAKING or sent is None:
            return
        first_sent = min(self._hello_seqs.values())
        self._rx_seq = frame.seq
        self._hello_seqs.clear()
        try:
            caps = frozenset(c for c in Capability if msg.capabilities & c)
            state = State(msg.state)
        except ValueError:
            state = State.DISARMED
        info = HandshakeInfo(build_id=msg.build_id, schema_hash=msg.schema_hash, host_schema_hash=self._schema_hash,
                             capabilities=caps, state=state, max_linear_m_s=msg.max_linear_m_s,
                             max_angular_rad_s=msg.max_angular_rad_s, port=os.path.realpath(self._port),
                             rtt_s=now - first_sent, completed_at=now)
        with self._lock:
            self._handshake = info
            self._phase = _Phase.CONNECTED
            self._n.connects += 1
            if self._ever_connected:
                self._n.reconnects += 1
        self._reconnect.connected()
        if self._ever_connected:
            log.info("link to %s re-established (firmware %s); the robot stays disarmed until arm()",
                     self._port, info.build_id)
        self._ever_connected = True
        self._report_first(None)

    def _on_telemetry(self, msg: M.TelemetryMsg, frame, now: float) -> None:
        try:
            t = Telemetry.from_message(msg, mcu_time_ms=frame.timestamp_ms, seq=frame.seq, received_at=now)
        except ValueError:
            return  # a newer firmware's enum value: keep the previous snapshot
        with self._telemetry_cond:
            self._telemetry = t
            self._telemetry_cond.notify_all()
        if self._phase is _Phase.CONNECTED and not t.session:
            self._rehandshake(now, "the MCU reports no session (reset?)", lockout=False)

    def _rehandshake(self, now: float, reason: str, *, lockout: bool) -> None:
        """Handshake again on the same port (the MCU was reset, or it locked motion out): the robot is
        disarmed by the handshake and stays so until ``arm()``."""
        if self._phase is not _Phase.CONNECTED:
            return
        log.warning("link to %s: %s; handshaking again (the robot stays disarmed until arm())", self._port, reason)
        self._controls.fail_inflight(f"the link was reset before it was acknowledged ({reason})")
        self._controls.fail_all(f"not sent: the link was reset ({reason})", include_estop=False)
        self._rejected_run = 0
        with self._lock:
            self._phase = _Phase.HANDSHAKING
            self._setpoint = None
            self._n.link_losses += 1
            self._n.lockouts += int(lockout)
        self._hs_started = now
        rc = self._reader.counters
        self._hs_bad_frames = rc.crc_errors + rc.malformed + rc.oversize
        self._next_hello = now
        self._rx_seq = None


__all__ = ["BAUD_RATE", "Link", "host_ms"]
