"""The listening sockets the service opens itself (the e-stop port, the https front); waitress opens its own."""

from __future__ import annotations

import socket

BACKLOG = 128


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` (0: any free port) and listening; OSError if it cannot be."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
