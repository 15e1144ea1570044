"""Opening the serial port, and when to try again after it went away.

The link opens its port exclusively (a second program on the same adapter would
corrupt both streams), with non-blocking reads and bounded writes, and throws
away whatever the MCU sent while nobody listened. An open that fails says why
and what to do (``open_error``): missing, not permitted, or busy.

Reconnects
    While the port path is missing it is polled every ``PORT_POLL_MS`` (a replugged
    adapter is back within a fraction of a second); opening or handshaking failures
    back off from 0.5 s to 5 s (``ReconnectSchedule``). When the path comes back, or
    resolves to another device node (cable replugged, symlink re-pointed), the next
    try is at once, with a fresh backoff.
"""

from __future__ import annotations

import errno
import os

import serial

from firmware_bridge.errors import PortBusyError, PortError, PortNotFoundError, PortPermissionError
from firmware_bridge.spec import CONST

BACKOFF_MIN_S = CONST["RECONNECT_BACKOFF_MIN_MS"] / 1000.0
BACKOFF_MAX_S = CONST["RECONNECT_BACKOFF_MAX_MS"] / 1000.0
PORT_POLL_S = CONST["PORT_POLL_MS"] / 1000.0
WRITE_TIMEOUT_S = 0.5  # a write blocked this long means the port is wedged: reconnect

Device = tuple[int, int, int]  # identity of the node a port path resolves to: (st_dev, st_ino, st_rdev)


def open_error(port: str, exc: Exception) -> PortError:
    """The ``PortError`` for a failed open of ``port``, saying what to do about it."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT:
        return PortNotFoundError(
            f"serial port {port!r} does not exist: check the cable and `ls -l /dev/serial/by-id/`, install the "
            "udev rule in firmware_bridge/deploy/ for a stable /dev/robot, or try `voxedge bridge --sim`")
    if code in (errno.EACCES, errno.EPERM):
        return PortPermissionError(
            f"no permission to open {port!r}: add your user to the dialout group "
            "(`sudo usermod -aG dialout $USER`, then log in again) or install the udev rule in firmware_bridge/deploy/")
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        return PortBusyError(
            f"{port!r} is in use by another process (the link opens it exclusively): stop the other program "
            f"(`fuser -v {port}`); ModemManager and brltty grab USB serial adapters, see firmware_bridge/deploy/README.md")
    return PortError(f"cannot open serial port {port!r}: {text}")


def device_of(port: str) -> Device | None:
    """The device node ``port`` resolves to (following /dev/robot, /dev/serial/by-id/... links); None if missing."""
    try:
        st = os.stat(port)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_rdev


def open_port(port: str, baudrate: int) -> serial.Serial:
    """Open ``port`` exclusively, with non-blocking reads and writes bounded by ``WRITE_TIMEOUT_S``.

    Raises:
        PortError: it cannot be opened (see ``open_error``).
    """
    try:
        ser = serial.Serial(port, baudrate, timeout=0, write_timeout=WRITE_TIMEOUT_S, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise open_error(port, exc) from exc
    try:
        ser.reset_input_buffer()  # bytes the MCU sent while nobody listened are stale
    except (serial.SerialException, OSError) as exc:
        ser.close()
        raise open_error(port, exc) from exc
    return ser


def close_port(ser: serial.Serial) -> None:
    """Close ``ser``, ignoring errors (the device may be gone already)."""
    try:
        ser.close()
    except (serial.SerialException, OSError):
        pass


class ReconnectSchedule:
    """When to try opening the port next: poll a missing path, back off after failures (see the module docstring).

    Used by the link's I/O thread only.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the past attempts (a new ``connect()``)."""
        self.backoff_s = BACKOFF_MIN_S
        self._next_attempt = 0.0
        self._path_absent = False
        self._device: Device | None = None

    def wait_s(self, device: Device | None, now: float) -> float:
        """Seconds to wait before the next try (0: try now), given the node the path resolves to (None: missing)."""
        if device is None:
            self._path_absent = True
            return PORT_POLL_S
        if self._path_absent or device != self._device:
            # The device node came back or now is another one (cable replugged, symlink re-pointed):
            # try at once, with a fresh backoff.
            self._path_absent = False
            self._device = device
            self.backoff_s = BACKOFF_MIN_S
            self._next_attempt = now
        if now < self._next_attempt:
            return min(self._next_attempt - now, PORT_POLL_S)
        return 0.0

    def failed(self, now: float) -> None:
        """An open or a handshake failed: wait ``backoff_s`` before the next try, and twice as long after that."""
        self._next_attempt = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2.0, BACKOFF_MAX_S)

    def connected(self) -> None:
        """A handshake succeeded: the next failure backs off from the minimum again."""
        self.backoff_s = BACKOFF_MIN_S

    def lost(self, now: float) -> None:
        """A working connection was lost: the first try is at once (the backoff applies to failures)."""
        self._next_attempt = now
