"""A remote backend: the model runs on an Open Inference Protocol (KServe v2) server, over HTTP or gRPC.

``voxedge serve BUNDLE --backend kserve://HOST:PORT/MODEL`` (``kserve+https://`` for TLS;
``kserve+grpc://`` and ``kserve+grpcs://`` for gRPC, Triton's port 8001 or ``voxedge serve --grpc-port``)
sends each inference to Triton (with the repository ``voxedge export-triton`` writes), KServe, or another
voxedge, with the stock ``tritonclient`` (HTTP with the binary tensor extension, or gRPC). The local bundle is still required:
its manifest drives preprocessing and the decoding of the outputs, and ``activate`` checks that the remote
model takes and gives the same tensors (names, datatypes, shapes).

Each request has a short timeout (``remote_timeout_s``, default ``DEFAULT_TIMEOUT_S``): a request that
times out or cannot connect raises ``RunnerError`` (the worker counts an inference error), and
``problem()`` says so until a request succeeds again. The runtime shows that problem as the health item
"remote" (one alert) and, without a fallback (``holds``), holds the robot still while it lasts, as it does
for a stalled local model: a go_to is suspended at once and resumes only on a fresh view. With a fallback
precision (``remote_fallback``) a local ONNX Runtime runner of that precision is loaded at ``activate``
and runs instead while the remote fails; the remote is tried again every ``RETRY_S``.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import numpy as np

from edge.runners.base import Runner, RunnerError

SCHEMES = {"kserve": "http", "kserve+http": "http", "kserve+https": "https", "kserve+grpc": "grpc",
           "kserve+grpcs": "grpcs"}
FORMS = ("kserve://HOST:PORT/MODEL (HTTP), kserve+https://HOST:PORT/MODEL, kserve+grpc://HOST:PORT/MODEL or "
         "kserve+grpcs://HOST:PORT/MODEL (gRPC, with TLS)")
DEFAULT_TIMEOUT_S = 0.3  # connect and network timeout of one request: below the actuator's 0.5 s stall limit
RETRY_S = 2.0  # with a fallback: how long the local model runs before the remote is tried again
INSTALL_HINT = "pip install 'tritonclient[http,grpc]'"
# manifest dtype -> Open Inference Protocol datatype
V2_DATATYPES = {"uint8": "UINT8", "int8": "INT8", "int32": "INT32", "int64": "INT64", "float16": "FP16",
                "float32": "FP32", "bool": "BOOL"}


def is_remote(backend: str | None) -> bool:
    """Whether a ``backend`` setting names a remote server (a kserve URL) rather than a local backend."""
    return isinstance(backend, str) and backend.partition("://")[0] in SCHEMES and "://" in backend


def parse_url(url: str) -> tuple[str, str, int, str, str | None]:
    """``kserve://HOST:PORT/MODEL[/VERSION]`` -> (http, https, grpc or grpcs, host, port, model, version or None);
    ValueError naming the accepted forms."""
    scheme = url.partition("://")[0]
    if scheme not in SCHEMES:
        raise ValueError(f"{url!r} is not a remote backend; use {FORMS}")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}; use {FORMS}") from None
    path = [p for p in parts.path.split("/") if p]
    if not host or not port or not 1 <= len(path) <= 2 or parts.query or parts.fragment:
        raise ValueError(f"{url!r} must name the host, port and model: {FORMS}")
    return SCHEMES[scheme], host, port, path[0], path[1] if len(path) == 2 else None


def _client_module(transport: str = "http"):
    try:
        if transport.startswith("grpc"):
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise RunnerError(f"the kserve backend needs the Triton {transport[:4]} client, which is not installed "
                          f"({exc}): {INSTALL_HINT}") from exc
    return client


def _matches(local: list[int], remote: list[int]) -> bool:
    return len(local) == len(remote) and all(a == b or -1 in (a, b) for a, b in zip(local, remote))


def compare_metadata(manifest, metadata: dict, where: str) -> list[str]:
    """How the remote model's metadata (``GET /v2/models/M``) differs from the bundle's manifest: every
    manifest input exactly, every manifest output present, with the same datatype and shape (-1: any)."""
    problems = []
    for kind, specs, exact in (("inputs", manifest.inputs, True), ("outputs", manifest.outputs, False)):
        remote = {t.get("name"): t for t in metadata.get(kind) or []}
        extra = sorted(set(remote) - {s.name for s in specs}) if exact else []
        if extra:
            problems.append(f"{where} has {kind} {extra} that the bundle's model does not")
        for spec in specs:
            r = remote.get(spec.name)
            want = (V2_DATATYPES.get(spec.dtype, spec.dtype.upper()), list(spec.shape))
            if r is None:
                problems.append(f"{kind[:-1]} {spec.name!r} ({want[0]} {want[1]}) is missing on {where} "
                                f"(it has {sorted(remote)})")
            elif r.get("datatype") != want[0] or not _matches(want[1], [int(d) for d in r.get("shape") or []]):
                problems.append(f"{kind[:-1]} {spec.name!r} is {r.get('datatype')} {r.get('shape')} on {where}, "
                                f"{want[0]} {want[1]} in the bundle")
    return problems


class KServeRunner(Runner):
    """Sends the bundle's model inputs to a remote Open Inference Protocol server; see the module docstring."""

    backend = "kserve"

    def __init__(self, bundle, precision: str = "fp32", url: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
                 fallback: str | None = None, intra_op_threads: int = 1, token: str | None = None) -> None:
        from edge.precision import AUTO

        try:
            self.scheme, self.host, self.port, self.model, self.version = parse_url(url)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        if not timeout_s > 0:
            raise RunnerError(f"the remote timeout must be > 0 s, not {timeout_s!r}")
        self.url, self.timeout_s, self.fallback_precision = url, float(timeout_s), fallback
        self.intra_op_threads = intra_op_threads
        # the remote voxedge's operator token, when it guards reading (read_auth on: any bind beyond loopback);
        # lower case: gRPC metadata keys must be, HTTP does not mind
        self._headers = {"authorization": f"Bearer {token}"} if token else None
        self._grpc = self.scheme.startswith("grpc")
        # The remote decides which file it runs; locally the manifest's tensors are the same for every
        # precision, so the runner describes itself by the bundle's fp32 model (``auto`` is not timed: one
        # remote model, and timing it would measure the network).
        super().__init__(bundle, "fp32" if precision == AUTO else precision)
        self.model_note = f"remote model {self.model!r} at {self.scheme}://{self.host}:{self.port}" + \
            (f" (local {fallback} fallback)" if fallback else "")
        self._client = None
        self._client_thread: int | None = None
        self._fallback: Runner | None = None
        self._problem: str | None = None
        self._retry_at = 0.0
        self.remote_failures = 0  # requests that failed (timeout, connection, server error)
        self.fallback_runs = 0  # inferences the local fallback served

    # -- what the runtime reads (edge.runtime: health "remote" and hold_reason) --------------------
    def problem(self) -> str | None:
        """The remote's problem now, in words for the operator; None while its last request succeeded."""
        return self._problem

    @property
    def holds(self) -> bool:
        """Whether the problem holds the robot still: yes without a local fallback."""
        return self._problem is not None and self._fallback is None

    # -- the client ----------------------------------------------------------------------------
    def _new_client(self):
        client = _client_module(self.scheme)
        if self._grpc:  # timeouts are per call (client_timeout)
            return client.InferenceServerClient(f"{self.host}:{self.port}", ssl=self.scheme == "grpcs")
        return client.InferenceServerClient(f"{self.host}:{self.port}", ssl=self.scheme == "https",
                                            connection_timeout=self.timeout_s, network_timeout=self.timeout_s)

    def _per_call(self) -> dict:
        """Keyword arguments of every request: the token, and for gRPC the deadline and JSON metadata."""
        return {"headers": self._headers, **({"client_timeout": self.timeout_s} if self._grpc else {})}

    def _thread_client(self):
        """The client of the calling thread (tritonclient's connections belong to the thread, a gevent hub's)."""
        if self._client is None or self._client_thread != threading.get_ident():
            self._close_client()
            self._client, self._client_thread = self._new_client(), threading.get_ident()
        return self._client

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a broken connection closes as well as it can
                pass

    def _activate_impl(self) -> None:
        where = f"the remote model {self.model!r} at {self.scheme}://{self.host}:{self.port}"
        client = self._new_client()  # the activating thread's; inference makes its own in the worker thread
        try:
            try:
                metadata = client.get_model_metadata(self.model, self.version or "", **self._per_call(),
                                                     **({"as_json": True} if self._grpc else {}))
            except Exception as exc:
                raise RunnerError(f"cannot use {where}: {type(exc).__name__}: {exc} (is the server running and "
                                  f"does it serve that model? the remote timeout is {self.timeout_s:g} s)") from exc
        finally:
            client.close()
        problems = compare_metadata(self.bundle.manifest, metadata, where)
        if problems:
            raise RunnerError(f"{where} does not match the bundle {self.bundle.path}: " + "; ".join(problems))
        self._output_names = [o.name for o in self.bundle.manifest.outputs]
        if self.fallback_precision:
            from edge.runners.onnxruntime import OnnxRuntimeRunner

            fallback = OnnxRuntimeRunner(self.bundle, self.fallback_precision, intra_op_threads=self.intra_op_threads)
            self._fallback = fallback.activate()
            self.model_note = f"remote model {self.model!r} at {self.scheme}://{self.host}:{self.port} " \
                              f"(local fallback: {fallback.model_note})"

    def _remote(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        client_module = _client_module(self.scheme)
        binary = {} if self._grpc else {"binary_data": True}  # gRPC always sends raw bytes
        inputs = []
        for spec in self.bundle.manifest.inputs:
            array = np.ascontiguousarray(feed[spec.name])
            i = client_module.InferInput(spec.name, list(array.shape), V2_DATATYPES.get(spec.dtype, "FP32"))
            i.set_data_from_numpy(array, **binary)
            inputs.append(i)
        outputs = [client_module.InferRequestedOutput(name, **binary) for name in self._output_names]
        result = self._thread_client().infer(self.model, inputs, model_version=self.version or "", outputs=outputs,
                                             **self._per_call())
        out = {}
        for name in self._output_names:
            array = result.as_numpy(name)
            if array is None:
                raise RunnerError(f"the remote model {self.model!r} sent no output {name!r}")
            out[name] = array
        return out

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._fallback is not None and self._problem is not None and time.monotonic() < self._retry_at:
            self.fallback_runs += 1
            return self._fallback.infer(feed)
        try:
            out = self._remote(feed)
        except Exception as exc:  # timeout, refused or reset connection, an error status: the remote failed
            self._close_client()  # a timed-out connection may be half-read: the next request opens a new one
            self.remote_failures += 1
            detail = f"{type(exc).__name__}: {str(exc) or 'no detail'}"
            server = f"{self.scheme}://{self.host}:{self.port}"
            if self._fallback is None:
                self._problem = (f"remote inference server {server} failed ({detail}; timeout "
                                 f"{self.timeout_s:g} s): the robot is held still until it answers again")
                raise RunnerError(f"remote inference failed: {detail}") from exc
            self._problem = (f"remote inference server {server} failed ({detail}): running the local "
                             f"{self._fallback.precision} model instead, retrying the server every {RETRY_S:g} s")
            self._retry_at = time.monotonic() + RETRY_S
            self.fallback_runs += 1
            return self._fallback.infer(feed)
        self._problem = None
        return out

    def _deactivate_impl(self) -> None:
        self._close_client()
        if self._fallback is not None:
            self._fallback.deactivate()
            self._fallback = None
