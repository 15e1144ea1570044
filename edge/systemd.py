"""systemd readiness and watchdog notifications (``sd_notify``), sent from the actuator loop.

The protocol is one datagram per message to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (see ``sd_notify(3)``). It is a few lines, so it is done
here rather than through python-systemd, which needs libsystemd headers to
build on the robot. Without ``$NOTIFY_SOCKET`` (not started by systemd) every
call does nothing.

With ``WatchdogSec=`` in the unit, systemd restarts the service when the pings
stop; they come from the actuator loop, so a hung loop (the robot's heartbeat)
is exactly what triggers the restart, and the MCU has already stopped the
motors by its own watchdog by then.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends READY, STOPPING, STATUS and watchdog pings to systemd, if systemd is listening."""

    def __init__(self, environ=None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC")
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) recommends.
        self.period_s = int(usec) / 2e6 if usec and usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0
        self._sock = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message.encode(), self.address)
            return True
        except OSError:
            return False  # systemd gone (shutting down): nothing to tell

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self, now: float | None = None) -> bool:
        """Ping if the period has come; call it every loop iteration."""
        if self._sock is None or self.period_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.period_s:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
