"""waitress connections with read deadlines and a per-client cap: slow clients are dropped, not waited for.

waitress closes a connection only after ``channel_timeout`` without *any* byte, so a client sending one
header line every few seconds holds its connection, and 200 of them fill the server (issue 17). Here a
request must deliver its headers within ``head_timeout_s`` and its body within ``body_timeout_s`` of its
first byte; the server's maintenance pass (every ``cleanup_interval``) closes connections past either.
Connections from one non-loopback address beyond ``per_client`` are closed as they arrive (loopback is
exempt: the robot's own tools and a local reverse proxy share it).

The e-stop does not depend on any of this: it has its own listener (``edge.service.estop_server``).
"""

from __future__ import annotations

import time
import types

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from edge.service.security import SECURITY_HEADERS

LOOPBACK = ("127.", "::1", "::ffff:127.")


class HeaderedErrorTask(ErrorTask):
    """waitress's own replies (400 bad request, 413, 431 headers too large) with the app's security headers
    and no caching, like every reply the app itself sends."""

    def execute(self) -> None:
        self.response_headers.extend(SECURITY_HEADERS.items())
        self.response_headers.append(("Cache-Control", "no-store"))
        super().execute()


class DeadlineChannel(HTTPChannel):
    """An HTTPChannel that remembers when its current request's first byte arrived."""

    error_task_class = HeaderedErrorTask

    request_started: float | None = None
    head_timeout_s = 10.0
    body_timeout_s = 60.0
    per_client = 32

    def __init__(self, server, sock, addr, adj, map=None) -> None:  # noqa: A002 (waitress's signature)
        super().__init__(server, sock, addr, adj, map=map)
        host = str(addr[0]) if isinstance(addr, tuple) and addr else ""
        if host and not host.startswith(LOOPBACK):
            same = sum(1 for c in server.active_channels.values() if getattr(c, "addr", (None,))[0] == addr[0])
            if same > self.per_client:
                self.will_close = True  # closed by the loop before anything is read

    def received(self, data) -> bool:
        if data and self.request is None and self.request_started is None:
            self.request_started = time.time()  # waitress's maintenance clock
        done = super().received(data)
        if self.request is None:  # the request completed (handed to a worker) or nothing is pending
            self.request_started = None
        return done

    def overdue(self, now: float) -> bool:
        if self.request_started is None or self.request is None or self.requests:
            return False
        limit = self.body_timeout_s if getattr(self.request, "headers_finished", False) else self.head_timeout_s
        return now - self.request_started > limit


def install(server, head_timeout_s: float, body_timeout_s: float, per_client: int) -> None:
    """Make ``server`` (from ``waitress.server.create_server``) use deadline channels."""
    servers = [server] if hasattr(server, "channel_class") else [
        s for s in getattr(server, "map", {}).values() if hasattr(s, "channel_class")]
    channel = type("Channel", (DeadlineChannel,), {"head_timeout_s": head_timeout_s,
                                                   "body_timeout_s": body_timeout_s, "per_client": per_client})
    for s in servers:
        s.channel_class = channel
        base = s.maintenance

        def maintenance(self, now, _base=base):
            _base(now)
            for c in list(self.active_channels.values()):
                if isinstance(c, DeadlineChannel) and c.overdue(now):
                    c.will_close = True

        s.maintenance = types.MethodType(maintenance, s)
