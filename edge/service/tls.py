"""TLS for a LAN bind (``voxedge serve --tls-cert FILE --tls-key FILE``), in front of waitress.

waitress speaks plain HTTP only, and its maintainers point to a TLS proxy in front. This is that proxy,
in the process, so the robot needs no second service: ``TLSFront`` listens on the public address,
completes the TLS handshake (within ``HANDSHAKE_TIMEOUT_S``, so a client that opens a socket and says
nothing is dropped), and relays the decrypted bytes to waitress bound on loopback. All of waitress's
defences (read deadlines, body limits, stream slots) still apply to the relayed connection, and a
connection that waitress closes is closed here.

The client's own address is kept: the front records which loopback port each relayed connection comes
from, and ``ClientAddress`` (WSGI middleware) puts the real address back in ``REMOTE_ADDR`` (rate
limits, logs and the e-stop log name the client, not 127.0.0.1) and marks the request ``https``. The
per-client connection cap, which waitress cannot apply to relayed connections (they all come from
loopback), is applied here.

One thread per connection: at most ``max_connections`` (waitress's own connection limit), so the
memory stays bounded; each relays both directions with ``select`` and gives up on a client that does
not read what it asked for within ``SEND_TIMEOUT_S``.

The e-stop listener (``edge.service.estop_server``) speaks TLS with the same context itself: the panel,
served over https, may only call an https e-stop.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from pathlib import Path

from edge.service.config import ServiceConfigError
from edge.service.sockets import listen

log = logging.getLogger("voxedge.tls")

HANDSHAKE_TIMEOUT_S = 10.0  # the same deadline waitress gives a request's headers
SEND_TIMEOUT_S = 30.0  # a client that reads nothing of a reply for this long is dropped
RELAY_CHUNK_BYTES = 64 * 1024
POLL_S = 0.5  # relays and the accept loop wake this often to notice stop()
LOOPBACK = ("127.", "::1", "::ffff:127.")
TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte of every TLS ClientHello
_PLAIN_HTTP_BODY = b"this port speaks https: open the same address with https:// instead of http://\n"
PLAIN_HTTP_REPLY = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(_PLAIN_HTTP_BODY)).encode() + b"\r\n\r\n" + _PLAIN_HTTP_BODY)


class TLSConfigError(ServiceConfigError):
    """The certificate or key cannot be used; the message names the file and what to do."""


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer, Python's default ciphers) from PEM files, or TLSConfigError."""
    for what, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        if not Path(path).is_file():
            raise TLSConfigError(f"{what} {path}: no such file; give a PEM file (a self-signed pair: openssl req "
                                 "-x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -keyout "
                                 "key.pem -out cert.pem -subj /CN=robot.local)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise TLSConfigError(f"--tls-cert {cert_file} / --tls-key {key_file}: not a matching PEM certificate and "
                             f"private key ({exc.reason or exc})") from None
    except OSError as exc:
        raise TLSConfigError(f"--tls-cert {cert_file} / --tls-key {key_file}: cannot be read "
                             f"({exc.strerror or exc})") from None
    return context


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> bool:
    """Write ``data`` to a non-blocking (TLS) socket before ``deadline``; False if the client did not take it."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
            continue
        except (ssl.SSLWantWriteError, BlockingIOError):
            waiting = ([], [sock])
        except ssl.SSLWantReadError:  # TLS needs the peer's bytes first (a key update)
            waiting = ([sock], [])
        except OSError:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        select.select(waiting[0], waiting[1], [], min(remaining, POLL_S))
    return True


class TLSFront:
    """Accepts TLS on ``(host, port)`` and relays each connection to ``127.0.0.1:upstream_port``."""

    def __init__(self, host: str, port: int, upstream_port: int, context: ssl.SSLContext, per_client: int,
                 max_connections: int) -> None:
        self._context, self._upstream_port = context, upstream_port
        self._per_client, self._max = per_client, max_connections
        try:
            self._listener = listen(host, port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open the https port {host}:{port}: {exc.strerror or exc}; choose "
                                     "another with --port") from None
        self._lock = threading.Lock()
        self._peers: dict[int, str] = {}  # loopback port of a relayed connection -> the client's address
        self._open: dict[str, int] = {}  # client address -> connections open
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused = self.handshake_failures = 0

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def client_of(self, upstream_port: int) -> str | None:
        """The client a relayed connection (seen by waitress from loopback port ``upstream_port``) serves."""
        with self._lock:
            return self._peers.get(upstream_port)

    def start(self) -> TLSFront:
        self._thread = threading.Thread(target=self._accept_loop, name="voxedge-tls", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], POLL_S)
                if not ready:
                    continue
                conn, addr = self._listener.accept()
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(POLL_S)  # out of file descriptors: the relays free some
                continue
            client = str(addr[0])
            with self._lock:
                total = sum(self._open.values())
                mine = self._open.get(client, 0)
                if total >= self._max or (mine >= self._per_client and not client.startswith(LOOPBACK)):
                    self.refused += 1
                    conn.close()
                    continue
                self._open[client] = mine + 1
            threading.Thread(target=self._relay, args=(conn, client), name="voxedge-tls-conn", daemon=True).start()

    def _relay(self, conn: socket.socket, client: str) -> None:
        tls = upstream = None
        local_port = None
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                first = conn.recv(1, socket.MSG_PEEK)
                if first and first != TLS_HANDSHAKE_RECORD:  # e.g. "G" of a plain-HTTP GET: say what is wrong
                    conn.sendall(PLAIN_HTTP_REPLY)
                    return
                tls = self._context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError) as exc:  # plain HTTP on the TLS port, a bad client, a timeout
                self.handshake_failures += 1
                log.debug("TLS handshake with %s failed: %s", client, exc)
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port), timeout=5.0)
            local_port = upstream.getsockname()[1]
            with self._lock:
                self._peers[local_port] = client
            tls.setblocking(False)
            upstream.settimeout(SEND_TIMEOUT_S)
            self._pump(tls, upstream)
        except OSError as exc:
            log.debug("relay for %s ended: %s", client, exc)
        finally:
            with self._lock:
                if local_port is not None:
                    self._peers.pop(local_port, None)
                left = self._open.get(client, 1) - 1
                if left:
                    self._open[client] = left
                else:
                    self._open.pop(client, None)
            for s in (tls, upstream, conn):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _pump(self, tls: ssl.SSLSocket, upstream: socket.socket) -> None:
        while not self._stop.is_set():
            # decrypted bytes OpenSSL already holds do not make the socket readable: take them first
            ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], POLL_S)[0]
            for sock in ready:
                if sock is tls:
                    try:
                        data = tls.recv(RELAY_CHUNK_BYTES)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        continue  # a partial TLS record: the rest is on its way
                    if not data:
                        return  # the client closed
                    upstream.sendall(data)
                else:
                    data = upstream.recv(RELAY_CHUNK_BYTES)
                    if not data or not _send_all(tls, data, time.monotonic() + SEND_TIMEOUT_S):
                        return  # waitress closed (after its reply), or the client stopped reading


class ClientAddress:
    """WSGI middleware: a request relayed by ``front`` gets its client's address and the ``https`` scheme."""

    def __init__(self, app, front: TLSFront | None = None) -> None:
        self.app, self.front = app, front  # the front is made after waitress, which it relays to

    def __call__(self, environ, start_response):
        if self.front is not None and str(environ.get("REMOTE_ADDR", "")).startswith(LOOPBACK):
            try:
                client = self.front.client_of(int(environ.get("REMOTE_PORT", -1)))
            except ValueError:
                client = None
            if client is not None:
                environ["REMOTE_ADDR"] = client
                environ["wsgi.url_scheme"] = "https"
        return self.app(environ, start_response)
