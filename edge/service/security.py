"""Who may do what: bearer token, Host allowlist, CSRF header, security headers, rate limits.

- Arming, motion and configuration need ``Authorization: Bearer <token>``,
  compared in constant time. E-stop needs nothing: it must always work.
- Every request's Host header must name this robot (defeats DNS rebinding:
  a page on evil.example resolving to the robot's address still sends
  ``Host: evil.example``).
- Panel actions also need ``X-CSRF-Token`` (the token the panel page carries).
  A custom header cannot be sent cross-site without a CORS preflight, which
  this service never grants.
- Rate limits are token buckets per client address and kind of request.
"""

from __future__ import annotations

import hmac
import secrets
import socket
import threading
import time
from functools import wraps

from flask import current_app, request

CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class ApiError(Exception):
    """An error the service answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def local_host_names(bind_host: str) -> set[str]:
    """Host names a client may legitimately use for this service."""
    names = {"localhost", "127.0.0.1", "::1", "[::1]"}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(bind_host.lower())
        return names
    try:
        hostname = socket.gethostname()
        names.update({hostname.lower(), socket.getfqdn().lower(), f"{hostname.lower()}.local"})
        names.update(socket.gethostbyname_ex(hostname)[2])
    except OSError:
        pass
    return names


def host_name(host_header: str) -> str:
    """A Host header's name without its port, lower case: "[::1]:8080" -> "[::1]", "Robot.local:80" -> "robot.local"."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # more colons: a bare IPv6 address


def host_allowed(host_header: str, allowed: set[str]) -> bool:
    name = host_name(host_header)
    return name in allowed or name.strip("[]") in allowed


def token_ok(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def bearer() -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def require_token(view):
    """The request must carry the operator's bearer token."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not token_ok(bearer(), current_app.config["VOXEDGE"].token):
            raise ApiError(401, "this action needs the operator token: send 'Authorization: Bearer <token>' "
                                "(voxedge serve prints it at start)", {"WWW-Authenticate": 'Bearer realm="voxedge"'})
        return view(*args, **kwargs)

    return wrapped


SESSION_COOKIE = "voxedge_session"
SESSION_MAX = 64  # sessions remembered (browsers that entered the token); the oldest is forgotten first


class Sessions:
    """Browser sessions of people who entered the operator token: what lets ``<img>`` and ``EventSource``,
    which cannot send an Authorization header, read the robot when read access needs the token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, float] = {}

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._ids[sid] = time.monotonic()
            while len(self._ids) > SESSION_MAX:
                del self._ids[next(iter(self._ids))]
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            return any(hmac.compare_digest(sid.encode(), known.encode()) for known in self._ids)

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._ids.pop(sid or "", None)


def read_allowed() -> bool:
    """Whether this request may read the robot (camera, audio, state, events, metrics, inference)."""
    cfg = current_app.config["VOXEDGE"]
    if not cfg.read_auth_on:
        return True
    return token_ok(bearer(), cfg.token) or current_app.config["SESSIONS"].valid(request.cookies.get(SESSION_COOKIE))


def require_read(view):
    """Read access: open on a loopback bind by default; with read_auth on (any other bind by default) it needs
    the operator token, as a bearer header or as the session cookie the panel gets for it."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not read_allowed():
            raise ApiError(401, "this robot shows its camera, microphone and state to the operator only: send "
                                "'Authorization: Bearer <token>', or enter the token in the panel",
                           {"WWW-Authenticate": 'Bearer realm="voxedge"'})
        return view(*args, **kwargs)

    return wrapped


def token_strength_problem(token: str) -> str | None:
    """Why ``token`` is too weak to guard the robot, or None: at least 16 characters and 64 bits of
    (Shannon) entropy over its characters, which a 16-character run of one letter does not have."""
    import math
    from collections import Counter

    if len(token) < 16:
        return f"the token has {len(token)} characters; use at least 16"
    counts = Counter(token)
    bits = -sum(n * math.log2(n / len(token)) for n in counts.values())
    if bits < 64:
        return (f"the token is too predictable ({bits:.0f} bits of entropy over its characters; at least 64 needed): "
                "use a random one, e.g. from `openssl rand -hex 16`")
    return None


def require_csrf(view):
    """A panel action: the request must carry the page's CSRF token in ``X-CSRF-Token``."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not token_ok(request.headers.get("X-CSRF-Token"), current_app.config["CSRF_TOKEN"]):
            raise ApiError(403, "missing or wrong X-CSRF-Token header: reload the panel and try again")
        return view(*args, **kwargs)

    return wrapped


class RateLimiter:
    """Token buckets keyed by (client, kind)."""

    MAX_KEYS = 4096  # forget idle clients beyond this many

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def check(self, key: tuple[str, str], rate_per_s: float, burst: int) -> float:
        """0 if allowed (and counted), else seconds until a token is free."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / rate_per_s
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.MAX_KEYS:
                oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.MAX_KEYS // 2]
                for k in oldest:
                    del self._buckets[k]
            return 0.0


def rate_limited(kind: str):
    """Limit a view per client address; 429 with Retry-After when over."""

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            cfg = current_app.config["VOXEDGE"]
            rate, burst = {"infer": (cfg.infer_rate_per_s, cfg.infer_burst),
                           "motion": (cfg.motion_rate_per_s, cfg.motion_burst),
                           "say": (cfg.say_rate_per_s, cfg.say_burst)}[kind]
            wait = current_app.config["RATE_LIMITER"].check((request.remote_addr or "?", kind), rate, burst)
            if wait > 0:
                raise ApiError(429, f"too many {kind} requests from {request.remote_addr}: at most {rate:g}/s",
                               {"Retry-After": str(max(1, round(wait)))})
            return view(*args, **kwargs)

        return wrapped

    return decorate


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)
