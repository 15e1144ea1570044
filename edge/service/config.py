"""Service settings: a dataclass with its limits; ``edge.settings`` fills it from defaults, a file, ``VOXEDGE_*`` and flags."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # a 640x480 PNG plus a 6 s WAV fit easily
MAX_MJPEG_VIEWERS = 4
MAX_SSE_CLIENTS = 8
MJPEG_FPS = 12.0
MJPEG_WIDTH_PX = 480  # live view width (frames are upscaled from the model size for people)
INFER_RATE_PER_S = 20.0  # sustained inference requests per client
INFER_BURST = 40
MOTION_RATE_PER_S = 25.0  # hold-to-move refreshes every 100 ms; arm/disarm are rare
MOTION_BURST = 25
SAY_RATE_PER_S = 1.0
SAY_BURST = 3
WORKER_THREADS = 8  # waitress threads for ordinary requests (streams get their own on top)
MAX_IMAGE_SIDE_PX = 4096  # uploads larger than this in either side are refused before decoding ...
MAX_IMAGE_PIXELS = 4096 * 4096  # ... or with more pixels (16.8 MP: 50 MB once decoded as BGR)
MAX_AUDIO_S = 30.0  # uploaded WAVs longer than this are refused before they are converted


class ServiceConfigError(ValueError):
    """A bad service setting; the message names it and the allowed values."""


@dataclass
class ServiceConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # The e-stop listener's port (edge.service.estop_server); -1: the HTTP port + 1 (any free port when the
    # HTTP port is 0). Never shared with the main server, whose connections and threads can be exhausted.
    estop_port: int = -1
    # The gRPC port (KServe v2 GRPCInferenceService, edge.service.grpc_server); None: off, 0: any free port.
    grpc_port: int | None = None
    token: str | None = None  # bearer token for arming, motion and configuration; None: generated
    allowed_hosts: tuple[str, ...] = ()  # extra Host header names accepted (DNS rebinding defence)
    # Whether reading the robot (live view, utterance audio, state, events, /predict, /metrics) needs the
    # operator token: auto = only when bound beyond loopback, where anyone on the network could watch.
    read_auth: str = "auto"
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_image_side_px: int = MAX_IMAGE_SIDE_PX
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_audio_s: float = MAX_AUDIO_S
    request_head_timeout_s: float = 10.0  # a request's headers must arrive within this of its first byte ...
    request_body_timeout_s: float = 60.0  # ... and its body within this (8 MB at ~1 Mbit/s)
    max_connections_per_client: int = 32  # open connections from one non-loopback address
    max_mjpeg_viewers: int = MAX_MJPEG_VIEWERS
    max_sse_clients: int = MAX_SSE_CLIENTS
    mjpeg_fps: float = MJPEG_FPS
    infer_rate_per_s: float = INFER_RATE_PER_S
    infer_burst: int = INFER_BURST
    motion_rate_per_s: float = MOTION_RATE_PER_S
    motion_burst: int = MOTION_BURST
    say_rate_per_s: float = SAY_RATE_PER_S  # the simulated microphone's say box
    say_burst: int = SAY_BURST
    mjpeg_width_px: int = MJPEG_WIDTH_PX
    model_name: str = "voxedge"
    tls_cert: str | None = None  # PEM certificate: https on the HTTP and e-stop ports (edge.service.tls)
    tls_key: str | None = None
    token_generated: bool = field(default=False, repr=False)
    token_file: str | None = field(default=None, repr=False)  # where the token is kept (edge.service.token_store)

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ServiceConfigError(f"port {self.port!r} must be 0..65535")
        if not isinstance(self.estop_port, int) or not -1 <= self.estop_port <= 65535 \
                or (self.estop_port and self.estop_port == self.port):
            raise ServiceConfigError(f"estop_port {self.estop_port!r} must be 0..65535 and not the HTTP port "
                                     "(-1: the HTTP port + 1)")
        if self.estop_port == -1 and self.port == 65535:
            raise ServiceConfigError("with HTTP port 65535 give the e-stop port explicitly (--estop-port)")
        grpc = self.grpc_port
        if grpc is not None and (not isinstance(grpc, int) or isinstance(grpc, bool) or not 0 <= grpc <= 65535
                                 or (grpc and grpc in (self.port, self.estop_bind_port))):
            raise ServiceConfigError(f"grpc_port {self.grpc_port!r} must be 0..65535 and neither the HTTP port nor "
                                     "the e-stop port (0: any free port; unset: no gRPC)")
        if self.token is not None:
            from edge.service.security import token_strength_problem

            problem = token_strength_problem(self.token)
            if problem:
                raise ServiceConfigError(problem)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServiceConfigError("TLS needs both --tls-cert and --tls-key (PEM files)")
        if self.read_auth not in ("auto", "on", "off"):
            raise ServiceConfigError(f"read_auth {self.read_auth!r} must be auto, on or off")
        if self.token is None:
            self.token = secrets.token_urlsafe(24)
            self.token_generated = True
        for name in ("max_upload_bytes", "max_mjpeg_viewers", "max_sse_clients", "infer_burst", "motion_burst", "say_burst", "mjpeg_width_px",
                     "max_image_side_px", "max_image_pixels", "max_audio_s", "request_head_timeout_s",
                     "request_body_timeout_s", "max_connections_per_client"):
            if int(getattr(self, name)) < 1:
                raise ServiceConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        self.allowed_hosts = tuple(h.lower() for h in self.allowed_hosts)

    @property
    def estop_bind_port(self) -> int:
        """The port the e-stop listener binds (0: any free one)."""
        if self.estop_port != -1:
            return self.estop_port
        return self.port + 1 if self.port else 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def read_auth_on(self) -> bool:
        return self.read_auth == "on" or (self.read_auth == "auto" and self.lan)

    @property
    def lan(self) -> bool:
        return self.host not in ("127.0.0.1", "localhost", "::1")
