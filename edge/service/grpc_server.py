"""The Open Inference Protocol (KServe v2) over gRPC: Triton's ``GRPCInferenceService`` on its own port.

``voxedge serve --grpc-port 8001`` answers the stock ``tritonclient.grpc`` client (and any KServe v2 gRPC
client): liveness and readiness, server and model metadata, the model's Triton configuration, statistics,
the repository index and inference (``raw_input_contents`` or typed ``contents``).

The servicer derives from the generated ``GRPCInferenceServiceServicer`` of ``tritonclient.grpc`` rather
than from protos compiled here: those stock messages are what every Triton and KServe client speaks, so
this server and a fleet's Triton server answer the same calls byte for byte. Methods not implemented here
(shared memory, model loading, tracing, logging, streaming) keep the base class's UNIMPLEMENTED.

Every call runs in the Flask app's context and through ``edge.service.inference``'s own helpers, so both
protocols share the metadata, the configuration, the input checks, the inference worker and one set of
statistics counters (``app.extensions["voxedge_v2_stats"]``); the same ``ApiError`` answers become gRPC
status codes. Reads follow the HTTP service's rule: with read auth on they need the operator token, as
gRPC metadata ``authorization: Bearer <token>``; only the health checks (live, ready, model ready) are
open, as ``/v2/health/*`` is. A few threads serve it, and calls beyond a small bound are refused
(RESOURCE_EXHAUSTED) rather than queued, so a busy client cannot starve the robot.

grpcio and the protos come with ``pip install 'tritonclient[grpc]'`` (the ``voxedge[grpc]`` extra); the
robot's plain install does without them, and this module imports them only when the port is turned on.
"""

from __future__ import annotations

import logging
import time
from functools import wraps

import numpy as np

from edge.service.config import ServiceConfigError
from edge.service.security import ApiError, token_ok

log = logging.getLogger("voxedge.service")

GRPC_WORKERS = 4  # threads serving gRPC calls; inference itself runs in the runtime's one worker
MAX_CONCURRENT_RPCS = 16  # calls in flight (running or waiting for a thread); beyond: RESOURCE_EXHAUSTED
INSTALL_HINT = "pip install 'tritonclient[grpc]' (or voxedge[grpc])"

# v2 datatype -> the typed field of InferTensorContents (FP16 has none: it travels in raw_input_contents)
TYPED_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents"}


class GrpcUnavailableError(ServiceConfigError):
    """A gRPC port was asked for, and grpcio or the Triton protos are not installed."""


def _protos():
    """(grpc, service_pb2, service_pb2_grpc, model_config_pb2), imported on first use."""
    try:
        import grpc
        from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise GrpcUnavailableError(f"the gRPC port needs grpcio and the Triton protos ({exc}): {INSTALL_HINT}, "
                                   "or leave --grpc-port unset") from None
    return grpc, service_pb2, service_pb2_grpc, model_config_pb2


def _status(grpc, status: int):
    """The gRPC status code of an HTTP status from ``ApiError``."""
    code = grpc.StatusCode
    return {400: code.INVALID_ARGUMENT, 401: code.UNAUTHENTICATED, 403: code.PERMISSION_DENIED,
            404: code.NOT_FOUND, 409: code.FAILED_PRECONDITION, 413: code.RESOURCE_EXHAUSTED,
            429: code.RESOURCE_EXHAUSTED, 503: code.UNAVAILABLE}.get(status, code.INTERNAL)


def _bearer(context) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry (gRPC keys are lower case)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _peer_address(context) -> str:
    """The client's address from ``context.peer()`` ("ipv4:10.0.0.5:51234", "ipv6:[::1]:51234")."""
    peer = context.peer() or "?"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


def _rpc(read: bool = True):
    """A servicer method run in the app's context: the read-auth rule first (``read``), then ``ApiError`` and
    the runtime's errors as gRPC status codes with their messages."""

    def decorate(method):
        @wraps(method)
        def wrapped(self, request, context):
            from edge.runtime import NotRunningError

            grpc = self._grpc
            try:
                with self.app.app_context():
                    if read:
                        self._check_read(context)
                    return method(self, request, context)
            except ApiError as exc:
                code, message = _status(grpc, exc.status), exc.message
            except NotRunningError as exc:
                code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
            except Exception as exc:  # never a stack trace to a client
                log.exception("unhandled error in gRPC %s", method.__name__)
                code, message = grpc.StatusCode.INTERNAL, \
                    f"internal error ({type(exc).__name__}); the robot log has the details"
            context.abort(code, message)

        return wrapped

    return decorate


class InferenceServicer:
    """The KServe v2 methods, over the Flask app's runtime, settings and statistics (``edge.service.inference``).

    Used through ``servicer(app)``, which mixes it into the generated base class."""

    def __init__(self, app) -> None:
        self.app = app
        self._grpc, self._pb, _, self._config_pb = _protos()

    # -- the rules of the HTTP side ------------------------------------------------------------------

    def _check_read(self, context) -> None:
        cfg = self.app.config["VOXEDGE"]
        if cfg.read_auth_on and not token_ok(_bearer(context), cfg.token):
            raise ApiError(401, "this robot shows its model and statistics to the operator only: send gRPC "
                                "metadata 'authorization: Bearer <token>' (voxedge serve prints the token, "
                                "`voxedge token` too)")

    def _rate_limit(self, context) -> None:
        """The HTTP service's per-client limit on inference, in the same buckets (one client, both protocols)."""
        cfg = self.app.config["VOXEDGE"]
        address = _peer_address(context)
        wait = self.app.config["RATE_LIMITER"].check((address, "infer"), cfg.infer_rate_per_s, cfg.infer_burst)
        if wait > 0:
            raise ApiError(429, f"too many infer requests from {address}: at most {cfg.infer_rate_per_s:g}/s; "
                                f"retry in {max(1, round(wait))} s")

    @staticmethod
    def _version(version: str) -> str | None:
        return version or None  # "" in the proto: the latest, as the HTTP path without /versions/

    # -- health --------------------------------------------------------------------------------------

    @_rpc(read=False)
    def ServerLive(self, request, context):
        return self._pb.ServerLiveResponse(live=True)

    @_rpc(read=False)
    def ServerReady(self, request, context):
        return self._pb.ServerReadyResponse(ready=bool(self.app.config["RUNTIME"].ready))

    @_rpc(read=False)
    def ModelReady(self, request, context):
        from edge.service.inference import _check_model

        _check_model(request.name, self._version(request.version))
        return self._pb.ModelReadyResponse(ready=bool(self.app.config["RUNTIME"].ready))

    # -- metadata, configuration, statistics, repository ----------------------------------------------

    @_rpc()
    def ServerMetadata(self, request, context):
        from edge.service.inference import server_info

        return self._pb.ServerMetadataResponse(**server_info())

    @_rpc()
    def ModelMetadata(self, request, context):
        from edge.service.inference import _check_model, model_info

        _check_model(request.name, self._version(request.version))
        info = model_info(request.name)
        tensor = self._pb.ModelMetadataResponse.TensorMetadata
        return self._pb.ModelMetadataResponse(
            name=info["name"], versions=info["versions"], platform=info["platform"],
            inputs=[tensor(**t) for t in info["inputs"]], outputs=[tensor(**t) for t in info["outputs"]])

    @_rpc()
    def ModelConfig(self, request, context):
        from google.protobuf import json_format

        from edge.service.inference import _check_model, model_config

        _check_model(request.name, self._version(request.version))
        config = json_format.ParseDict(model_config(request.name), self._config_pb.ModelConfig())
        return self._pb.ModelConfigResponse(config=config)

    @_rpc()
    def ModelStatistics(self, request, context):
        from google.protobuf import json_format

        from edge.service.inference import MODEL_VERSION, _check_model, _stats

        name = request.name or self.app.config["VOXEDGE"].model_name  # "": every model this server has
        _check_model(name, self._version(request.version))
        return json_format.ParseDict({"model_stats": [_stats().model_stats(name, MODEL_VERSION)]},
                                     self._pb.ModelStatisticsResponse())

    @_rpc()
    def RepositoryIndex(self, request, context):
        from edge.service.inference import repository_entries

        index = self._pb.RepositoryIndexResponse.ModelIndex
        return self._pb.RepositoryIndexResponse(models=[index(**m) for m in repository_entries(request.ready)])

    # -- inference ------------------------------------------------------------------------------------

    @_rpc()
    def ModelInfer(self, request, context):
        from edge.service.inference import _check_model, _manifest, _run, _stats

        self._rate_limit(context)
        _check_model(request.model_name, self._version(request.model_version))
        t0 = time.perf_counter_ns()
        try:
            manifest = _manifest()
            feed = self._feed(request, manifest)
            t1 = time.perf_counter_ns()
            out, inference_ms = _run(feed)
            t2 = time.perf_counter_ns()
            response = self._response(request, manifest, out)
        except ApiError:
            _stats().fail(time.perf_counter_ns() - t0)
            raise
        _stats().record(next(iter(feed.values())).shape[0], t0, t1, t2, time.perf_counter_ns(), inference_ms)
        return response

    def _feed(self, request, manifest) -> dict:
        """The request's input tensors, checked against the manifest as the HTTP side checks them."""
        from edge.service.inference import check_feed, check_input

        specs = {t.name: t for t in manifest.inputs}
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise ApiError(400, f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs: "
                                "send one (in the order of 'inputs') for each input, or none and typed 'contents'")
        feed: dict = {}
        for i, tensor in enumerate(request.inputs):
            name, shape = tensor.name, list(tensor.shape)
            want, dtype, count = check_input(specs, feed, name, tensor.datatype, shape)
            if raw:
                data = raw[i]
                if len(data) != count * dtype.itemsize:
                    raise ApiError(400, f"input {name!r}: raw_input_contents[{i}] has {len(data)} bytes; shape "
                                        f"{shape} of {want} takes {count * dtype.itemsize}")
                array = np.frombuffer(data, dtype).reshape(shape)
            else:
                field = TYPED_CONTENTS.get(want)
                if field is None:
                    raise ApiError(400, f"input {name!r}: {want} has no typed contents in the protocol; send it "
                                        "in raw_input_contents")
                values = getattr(tensor.contents, field)
                if len(values) != count:
                    raise ApiError(400, f"input {name!r}: contents.{field} has {len(values)} values; shape "
                                        f"{shape} takes {count} (or send raw_input_contents)")
                source = np.asarray(values)
                if dtype.kind in "iu" and count and (source.min() < np.iinfo(dtype).min
                                                     or source.max() > np.iinfo(dtype).max):
                    raise ApiError(400, f"input {name!r}: contents.{field} hold values outside {want}'s range "
                                        f"{np.iinfo(dtype).min}..{np.iinfo(dtype).max}")
                array = source.astype(dtype)
                array = array.reshape(shape)
            feed[name] = np.ascontiguousarray(array)
        check_feed(specs, feed)
        return feed

    def _response(self, request, manifest, out: dict):
        from edge.service.inference import MANIFEST_TO_V2, MODEL_VERSION

        out_specs = [t.name for t in manifest.outputs]
        wanted = [o.name for o in request.outputs] or out_specs
        if any(name not in out_specs for name in wanted):
            raise ApiError(400, f"'outputs' must list outputs of the model: {sorted(out_specs)}")
        response = self._pb.ModelInferResponse(model_name=request.model_name, model_version=MODEL_VERSION,
                                               id=request.id)
        for name in wanted:
            array = np.ascontiguousarray(out[name])
            dtype = str(array.dtype)
            response.outputs.add(name=name, datatype=MANIFEST_TO_V2.get(dtype, dtype.upper()), shape=array.shape)
            response.raw_output_contents.append(array.tobytes())
        return response


def servicer(app):
    """The servicer of ``app``: ``InferenceServicer`` on the generated base class, which answers UNIMPLEMENTED
    for the methods it leaves out."""
    _, _, pb_grpc, _ = _protos()
    cls = type("VoxedgeInferenceServicer", (InferenceServicer, pb_grpc.GRPCInferenceServiceServicer), {})
    return cls(app)


class GrpcServer:
    """The gRPC port of ``voxedge serve``: bound at construction (so its port is known), served from ``start()``.

    TLS with the HTTP port's PEM files when the service has them; messages up to ``max_upload_bytes``."""

    def __init__(self, app, config) -> None:
        from concurrent.futures import ThreadPoolExecutor

        grpc, _, pb_grpc, _ = _protos()
        self.config = config
        limit = config.max_upload_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                   ("grpc.so_reuseport", 0)]  # a second server on the same port must fail, not share it
        self._executor = ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="voxedge-grpc")
        self._server = grpc.server(self._executor, options=options, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer(app), self._server)
        host = f"[{config.host}]" if ":" in config.host else config.host
        address = f"{host}:{config.grpc_port}"
        try:
            if config.tls_cert:
                with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
                    credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises RuntimeError when it cannot bind
            self._executor.shutdown(wait=False)
            raise OSError(f"cannot serve gRPC on {address} ({exc}): is the port in use, or the address not "
                          "this machine's? Choose another --grpc-port") from None
        if not self.port:  # older grpcio returns 0 instead of raising
            self._executor.shutdown(wait=False)
            raise OSError(f"cannot serve gRPC on {address}: is the port in use? Choose another --grpc-port")
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._server.start()
            self._started = True

    def stop(self, grace_s: float = 2.0) -> None:
        """Refuse new calls, give running ones ``grace_s``, then cancel the rest."""
        self._server.stop(grace_s).wait(grace_s + 1.0)
        self._executor.shutdown(wait=False)
        self._started = False
