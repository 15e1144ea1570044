"""Serving the app with waitress (never Flask's development server), in the foreground or a background thread."""

from __future__ import annotations

import logging
import threading

from edge.service.config import WORKER_THREADS, ServiceConfig

log = logging.getLogger("voxedge.service")

CONNECTION_LIMIT = 200  # open HTTP connections (waitress's limit, and the TLS front's)


class Server:
    """waitress around the app; ``start()`` serves in a background thread, ``stop()`` ends streams and joins it."""

    def __init__(self, app, config: ServiceConfig) -> None:
        from waitress.server import create_server

        self.app = app
        self.config = config
        context, wsgi, host, port = None, app, config.host, config.port
        if config.tls_cert:  # waitress on loopback behind the TLS front (edge.service.tls)
            from edge.service.tls import ClientAddress, server_context

            context = server_context(config.tls_cert, config.tls_key)
            wsgi, host, port = ClientAddress(app), "127.0.0.1", 0
        # Each open stream holds a thread: give streams their own on top of the ordinary workers.
        threads = WORKER_THREADS + config.max_mjpeg_viewers + config.max_sse_clients
        self._server = create_server(wsgi, host=host, port=port, threads=threads, ident="voxedge",
                                     channel_timeout=30, cleanup_interval=1, connection_limit=CONNECTION_LIMIT,
                                     clear_untrusted_proxy_headers=True,
                                     # refuse an oversized body from its Content-Length, before waitress
                                     # spools it to a temp file (its default allows 1 GB)
                                     max_request_body_size=config.max_upload_bytes)
        from edge.service.channels import install

        install(self._server, config.request_head_timeout_s, config.request_body_timeout_s,
                config.max_connections_per_client)
        self.tls = None
        if context is not None:
            from edge.service.tls import TLSFront

            self.tls = TLSFront(config.host, config.port, self._server.effective_port, context,
                                config.max_connections_per_client, CONNECTION_LIMIT)
            wsgi.front = self.tls
        self._thread: threading.Thread | None = None
        from edge.service.estop_server import EStopServer

        runtime = app.config["RUNTIME"]
        self.estop = EStopServer(config.host, config.estop_bind_port, runtime.estop,
                                 lambda: estop_status(runtime), tls=context)
        app.config["ESTOP_PORT"] = self.estop.port  # the panel's E-STOP button calls it there too
        self.grpc = None
        if config.grpc_port is not None:  # grpcio and the Triton protos are imported only then
            from edge.service.grpc_server import GrpcServer

            try:
                self.grpc = GrpcServer(app, config)
            except BaseException:
                self.estop.stop()  # bound but never started: release its port
                raise

    @property
    def port(self) -> int:
        return self.tls.port if self.tls is not None else self._server.effective_port

    @property
    def _display_host(self) -> str:
        """Where a person on this machine reaches the server: a wildcard bind becomes loopback."""
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def estop_url(self) -> str:
        return f"{self.config.scheme}://{self._display_host}:{self.estop.port}/api/estop"

    @property
    def url(self) -> str:
        return f"{self.config.scheme}://{self._display_host}:{self.port}"

    @property
    def grpc_address(self) -> str | None:
        """HOST:PORT of the gRPC port (what ``tritonclient.grpc`` takes), or None when it is off."""
        return f"{self._display_host}:{self.grpc.port}" if self.grpc is not None else None

    def serve_forever(self) -> None:
        """Serve in this thread until ``stop()`` (from another thread) or KeyboardInterrupt."""
        self._thread = threading.current_thread()
        self.estop.start()
        if self.grpc is not None:
            self.grpc.start()
        if self.tls is not None:
            self.tls.start()
        try:
            self._server.run()
        finally:
            if self._thread is threading.current_thread():
                self._thread = None

    def start(self) -> Server:
        self.estop.start()
        if self.grpc is not None:
            self.grpc.start()
        if self.tls is not None:
            self.tls.start()
        self._thread = threading.Thread(target=self._server.run, name="voxedge-http", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the streams, let running requests finish, then close every socket from the server's own loop.

        Closing from another thread while the loop sits in select() makes it fail with EBADF, so
        the sockets are closed by a thunk the loop runs itself (waitress's trigger); the loop
        then finds its map empty and returns.
        """
        from waitress import wasyncore

        self.estop.stop()
        if self.grpc is not None:
            self.grpc.stop()
        if self.tls is not None:
            self.tls.stop()
        streams = self.app.extensions.get("voxedge_streams")
        if streams is not None:
            streams.closing.set()
            with streams.lock:
                streams.lock.notify_all()
        server = self._server
        server.task_dispatcher.shutdown(timeout=timeout_s)
        if self._thread is not None and self._thread.is_alive():
            try:
                server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
            except OSError as exc:  # the trigger's pipe is gone: close from here, the loop then ends on its own
                log.warning("could not wake the HTTP loop to stop it (%s); closing its sockets directly", exc)
                wasyncore.close_all(server._map, ignore_all=True)
            self._thread.join(timeout_s)
        else:
            wasyncore.close_all(server._map)
        self._thread = None


def estop_status(runtime) -> dict:
    """What the e-stop port tells a panel that cannot reach the main port."""
    telemetry = getattr(runtime.link, "telemetry", None)
    return {"estopped": runtime.estopped,
            "link_connected": bool(getattr(runtime.link, "is_connected", False)),
            "robot_state": telemetry.state.name if telemetry is not None else None}


def lan_address() -> str | None:
    """This machine's address on its default route, or None: what another machine on the LAN would open.

    A UDP socket "connected" to a documentation-only address (RFC 5737) sends nothing; the kernel only picks
    the source address its routing table would use.
    """
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
    except OSError:  # no route: an isolated robot
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def banner(config: ServiceConfig, url: str, estop_url: str | None = None, grpc_address: str | None = None) -> str:
    import sys

    lines = [f"voxedge is serving the panel and API at {url}"]
    if config.host in ("0.0.0.0", "::"):
        port = url.rsplit(":", 1)[1]
        lan = lan_address()
        where = lan or "<this machine's address>"
        there = f"{config.scheme}://{where}:{port}"
        lines.append(f"listening on every interface ({config.host}): from other machines open {there}")
    if config.token_file:
        # on a terminal, the person starting it needs it now; anywhere else (systemd, docker) stdout is a log
        if sys.stdout.isatty():
            lines.append(f"operator token (arming and motion): {config.token}  (kept in {config.token_file})")
        else:
            lines.append(f"operator token (arming and motion): kept in {config.token_file} (mode 0600); "
                         "`voxedge token` prints it")
    elif config.token_generated:
        lines.append(f"operator token (arming and motion): {config.token}")
    if grpc_address is not None:
        lines.append(f"KServe v2 / Triton gRPC at {grpc_address}" + (" (TLS)" if config.tls_cert else "")
                     + (": it needs the operator token as 'authorization: Bearer <token>' metadata"
                        if config.read_auth_on else ""))
    if config.read_auth_on:
        lines.append("viewing the robot (live view, state, events, /predict, /metrics) needs the operator token")
    lines.append("e-stop: the red button in the panel, or: curl -X POST " + (estop_url or url + "/api/estop"))
    return "\n".join(lines)
