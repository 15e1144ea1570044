"""The e-stop listener: its own socket and its own thread, which nothing on the main HTTP server can exhaust.

The main server (waitress) has a connection limit and a pool of worker threads; 200 slow sockets, or a
few slow uploads with the stream slots held, once kept ``POST /api/estop`` waiting for seconds. So the
e-stop is also served here, on a second port (by default the HTTP port + 1), by one thread running a
non-blocking ``selectors`` loop:

- every connection gets ``REQUEST_DEADLINE_S`` to deliver one small request (``MAX_REQUEST_BYTES``) and
  is then closed, answered or not: a slow socket costs a file descriptor for two seconds, never a thread;
- past ``MAX_CONNECTIONS`` the oldest connection is dropped to make room, so a flood of this port
  itself delays an e-stop by at most one deadline;
- the work per request is a flag and a call to the link (``Actuator.estop``), done in this thread.

It answers ``POST /api/estop`` (stop now; no token, no CSRF header, as on the main port: stopping is
always allowed), ``GET /api/estop`` (whether the robot is e-stopped and the link's state, for a panel
that cannot reach the main port) and the CORS preflight, with ``Access-Control-Allow-Origin: *`` so the
panel, served from the main port, can call it. It never serves anything else.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict
from typing import Callable

from edge.service.sockets import listen

log = logging.getLogger("voxedge.estop")

REQUEST_DEADLINE_S = 2.0  # a connection must deliver its request within this long
MAX_REQUEST_BYTES = 8192  # request line, headers and body together
MAX_CONNECTIONS = 256  # open at once; the oldest is dropped for a new one
POLL_S = 0.1  # the loop wakes this often to expire deadlines and notice stop()
PATH = "/api/estop"
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error"}


class EStopServerError(OSError):
    """The e-stop port cannot be opened; the message says which and what to do."""


class _Conn:
    __slots__ = ("sock", "peer", "deadline", "rx", "tx", "handshaken")

    def __init__(self, sock: socket.socket, peer: str, deadline: float, handshaken: bool) -> None:
        self.sock, self.peer, self.deadline = sock, peer, deadline
        self.rx = bytearray()
        self.tx: bytes | None = None
        self.handshaken = handshaken  # a plain connection, or a TLS one whose handshake is done


class EStopServer:
    """``on_estop(peer)`` stops the robot; ``status()`` gives the JSON-ready state for ``GET``."""

    def __init__(self, host: str, port: int, on_estop: Callable[[str], object], status: Callable[[], dict],
                 tls: ssl.SSLContext | None = None) -> None:
        self._on_estop, self._status, self._tls = on_estop, status, tls
        try:
            self._listener = listen(host, port)
        except OSError as exc:
            raise EStopServerError(f"cannot open the e-stop port {host}:{port}: {exc.strerror or exc}; choose "
                                   "another with --estop-port (0: any free port)") from exc
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._conns: OrderedDict[int, _Conn] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.estops = self.requests = self.dropped = 0

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def start(self) -> EStopServer:
        self._thread = threading.Thread(target=self._run, name="voxedge-estop", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        self._listener.close()

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._selector.select(POLL_S)
            except OSError:  # the selector was closed by stop()
                return
            for key, mask in events:
                if key.data is None:
                    self._accept()
                elif mask & selectors.EVENT_READ and key.data.tx is None:
                    self._read(key.data)
                elif mask & selectors.EVENT_WRITE:
                    self._write(key.data)
            now = time.monotonic()
            while self._conns:
                oldest = next(iter(self._conns.values()))
                if oldest.deadline > now:
                    break
                self.dropped += 1
                self._close(oldest)

    def _accept(self) -> None:
        for _ in range(64):  # a burst of connections, without starving the others
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: the deadlines free some soon
                log.warning("e-stop listener: accept failed: %s", exc)
                return
            sock.setblocking(False)
            if self._tls is not None:  # the handshake runs in _read, step by step, within the same deadline
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            if len(self._conns) >= MAX_CONNECTIONS:
                self.dropped += 1
                self._close(next(iter(self._conns.values())))
            conn = _Conn(sock, str(addr[0]), time.monotonic() + REQUEST_DEADLINE_S, handshaken=self._tls is None)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        if not conn.handshaken:
            try:
                conn.sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return  # more of the handshake is on its way (the deadline still runs)
            except OSError:  # not TLS, or a bad client
                self._close(conn)
                return
            conn.handshaken = True
        data = bytearray()
        while True:  # a TLS record may decrypt to more than one recv: take all that is there
            try:
                chunk = conn.sock.recv(4096)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                if not data:
                    self._close(conn)
                    return
                break
            data += chunk
            if len(data) > MAX_REQUEST_BYTES or not (self._tls and conn.sock.pending()):
                break
        if not data:
            return
        conn.rx += data
        if len(conn.rx) > MAX_REQUEST_BYTES:
            self._respond(conn, 413, {"error": f"an e-stop request is at most {MAX_REQUEST_BYTES} bytes"})
            return
        end = conn.rx.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(conn.rx[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._respond(conn, 400, {"error": "not an HTTP/1.x request"})
            return
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._respond(conn, 400, {"error": "a bad Content-Length"})
            return
        if len(conn.rx) - (end + 4) < length:
            return  # the body is still coming (within the deadline and the size cap)
        self._handle(conn, parts[0], parts[1].split("?", 1)[0])

    def _handle(self, conn: _Conn, method: str, path: str) -> None:
        self.requests += 1
        if path != PATH:
            self._respond(conn, 404, {"error": f"this port serves {PATH} only; the panel and API are on the main "
                                               "port"})
        elif method == "POST":
            try:
                self._on_estop(conn.peer)
            except Exception as exc:  # the flag is set before the link is tried: report, never hang
                log.exception("e-stop listener: stopping failed")
                self._respond(conn, 500, {"error": f"the e-stop flag is set but the link call failed: {exc}"})
                return
            self.estops += 1
            self._respond(conn, 200, {"ok": True})
        elif method == "GET":
            try:
                body = self._status()
            except Exception as exc:
                body = {"error": f"state unavailable: {exc}"}
            self._respond(conn, 200, body)
        elif method == "OPTIONS":
            self._respond(conn, 204, None)
        else:
            self._respond(conn, 405, {"error": f"{method} is not allowed on {PATH}; POST stops the robot"})

    def _respond(self, conn: _Conn, status: int, body: dict | None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Connection: close", "Cache-Control: no-store",
                "X-Content-Type-Options: nosniff", f"Content-Length: {len(payload)}",
                *(f"{k}: {v}" for k, v in CORS.items())]
        if payload:
            head.append("Content-Type: application/json")
        conn.tx = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.tx)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            self._close(conn)
            return
        conn.tx = conn.tx[sent:]
        if not conn.tx:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        conn.sock.close()
