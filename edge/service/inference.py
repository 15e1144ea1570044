"""Inference over HTTP: ``POST /predict`` (multipart image + optional WAV) and the Open Inference Protocol (v2).

Both run the model in the runtime's inference worker (the runner has one
owner): a request waits behind the robot's own utterances and tracking, and is
refused with 429 when ``REQUEST_QUEUE_MAX`` already wait.

The v2 endpoints follow the KServe / Triton HTTP protocol, including the
binary tensor data extension: a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw tensors, so the stock ``tritonclient[http]`` works.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request

from edge.contract.audio import SAMPLE_RATE_HZ, pad_or_trim
from edge.contract.image import prepare_image
from edge.contract.outputs import decode_outputs
from edge.fusion import FusionError, WorkerBusyError
from edge.service.context import finite
from edge.service.context import runtime as _runtime
from edge.service.context import settings as _config
from edge.service.security import ApiError, rate_limited, require_read

bp = Blueprint("inference", __name__)
v2 = Blueprint("v2", __name__, url_prefix="/v2")

# Open Inference Protocol datatypes <-> numpy
V2_DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64}
MANIFEST_TO_V2 = {"uint8": "UINT8", "int8": "INT8", "int32": "INT32", "int64": "INT64", "float16": "FP16",
                  "float32": "FP32", "bool": "BOOL"}
MODEL_VERSION = "1"
MAX_JSON_ELEMENTS = 1_000_000  # JSON "data" arrays beyond this should use the binary extension


def _manifest():
    runtime = _runtime()
    if not runtime.ready:
        raise ApiError(503, "the model is not loaded yet; try again in a moment")
    return runtime.bundle.manifest


def _run(feed: dict) -> tuple[dict, float]:
    try:
        out, inference_ms = _runtime().infer(feed)
        metrics = current_app.extensions.get("voxedge_metrics")
        if metrics is not None:
            metrics["stage"].labels(stage="inference", kind="api").observe(inference_ms / 1e3)
        return out, inference_ms
    except WorkerBusyError as exc:
        raise ApiError(429, str(exc), {"Retry-After": "1"}) from exc
    except FusionError as exc:
        raise ApiError(503, str(exc)) from exc
    except Exception as exc:  # the runner refused the tensors (RunnerError): the client sent them
        raise ApiError(400, str(exc)) from exc


# -- POST /predict ----------------------------------------------------------------------

PREDICT_FIELDS = ("image", "audio")
MAX_FORM_PARTS = 8  # image, audio and a few harmless extras


def upload_fields() -> dict[str, bytes]:
    """The files of a ``multipart/form-data`` /predict body: {field name: bytes} for 'image' and 'audio'.

    Parsed with ``multipart`` (the parser of Bottle) rather than Werkzeug's
    ``request.files``: on a 94 kB frame + WAV body it takes 0.04 ms instead of
    0.7 ms, all of it holding the GIL that every other request thread waits
    for (about a sixth of the service's CPU per request under load). The body
    is read through ``request.stream``, which enforces ``MAX_CONTENT_LENGTH``
    (413); parts stay in memory within that limit and are never spooled to disk.
    """
    import multipart

    if request.mimetype != "multipart/form-data":
        return {}
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise ApiError(400, "the multipart/form-data body has no boundary in its Content-Type header")
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 16 * 2**20
    fields: dict[str, bytes] = {}
    try:
        parser = multipart.MultipartParser(request.stream, boundary, content_length=request.content_length or -1,
                                           strict=True, part_limit=MAX_FORM_PARTS, spool_limit=limit,
                                           memory_limit=limit, disk_limit=0)
        for part in parser:
            if part.name in PREDICT_FIELDS and part.name not in fields:  # the first of repeated fields
                fields[part.name] = part.raw
            part.close()
    except multipart.ParserLimitReached as exc:
        raise ApiError(413, f"the upload is too large or has too many parts ({exc}); send one 'image' and at "
                            "most one 'audio' part") from None
    except multipart.MultipartError as exc:
        raise ApiError(400, f"the multipart/form-data body is malformed ({exc}); send the fields 'image' (PNG "
                            "or JPEG) and optionally 'audio' (WAV)") from None
    return fields


def upload_audio(data: bytes, rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A WAV upload (8/16/32-bit PCM, 8-192 kHz, 1-8 channels, up to ``max_audio_s``) as float32 mono at ``rate``.

    The header is checked before any sample is converted or resampled (``edge.contract.wav``).
    """
    from edge.contract.wav import WavError, decode_wav, resample

    try:
        mono, src_rate = decode_wav(data, max_seconds=_config().max_audio_s)
    except WavError as exc:
        raise ApiError(400, f"'audio' is {exc}") from exc
    return resample(mono, src_rate, rate) if src_rate != rate else mono


# OpenCV decodes a JPEG straight at 1/2, 1/4 or 1/8 of its size (scaled in the DCT) with these flags
_REDUCED = ((8, "IMREAD_REDUCED_COLOR_8"), (4, "IMREAD_REDUCED_COLOR_4"), (2, "IMREAD_REDUCED_COLOR_2"))


def decode_image(data: bytes, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """A PNG or JPEG upload as BGR uint8, refused (413) from its header when larger than the configured limits.

    With ``model_size`` (width, height) the image is decoded at the largest reduction that still
    covers the model's input (a 640x480 JPEG for a 160x120 model decodes at 1/4), so a large upload is
    never held at full size; the final resize to the model's size is ``prepare_image``'s.
    """
    import cv2

    from edge.image_header import ImageHeaderError, image_dimensions

    try:
        kind, width, height = image_dimensions(data)
    except ImageHeaderError as exc:
        raise ApiError(400, f"'image' is {exc}; send a PNG or JPEG camera frame") from None
    cfg = _config()
    if width < 1 or height < 1:
        raise ApiError(400, f"'image' is a {kind} of {width}x{height} pixels: its header is damaged")
    if max(width, height) > cfg.max_image_side_px or width * height > cfg.max_image_pixels:
        raise ApiError(413, f"'image' is a {kind} of {width}x{height} pixels; the limit is "
                            f"{cfg.max_image_side_px} px a side and {cfg.max_image_pixels / 1e6:.1f} MP: send the "
                            "camera frame at its own size")
    flag = cv2.IMREAD_COLOR
    if model_size is not None:
        for factor, name in _REDUCED:
            if width // factor >= model_size[0] and height // factor >= model_size[1]:
                flag = getattr(cv2, name)
                break
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise ApiError(400, f"'image' is not a readable {kind.upper()} image (damaged or truncated)")
    return bgr


def model_frame(bgr: np.ndarray, pre) -> np.ndarray:
    """A decoded BGR upload as the model's input: resized while still BGR, so the colour swap and the
    contiguous copy happen at the model's size, not the upload's."""
    import cv2

    if bgr.shape[:2] != (pre.image_height, pre.image_width):
        bgr = cv2.resize(bgr, (pre.image_width, pre.image_height), interpolation=cv2.INTER_AREA)
    return prepare_image(np.ascontiguousarray(bgr[:, :, ::-1]), pre)


def decision_fields(out: dict, heads) -> dict:
    """Intent, confidence, target and presence from the model's outputs for one sample."""
    d = decode_outputs(out, heads)
    fields = {"intent": d.intent, "model_intent": d.model_intent, "confidence": d.confidence,
              "accepted": d.accepted, "probabilities": d.probabilities}
    if d.target_xy is not None:
        fields["target_xy"] = list(d.target_xy)
    if d.presence is not None:
        fields["presence"] = d.presence
    return fields


@bp.post("/predict")
@require_read
@rate_limited("infer")
def predict():
    t0 = time.perf_counter()
    manifest = _manifest()
    pre = manifest.preprocessing
    files = upload_fields()
    data = files.get("image")
    if data is None:
        raise ApiError(400, "send the camera image as multipart form field 'image' (PNG or JPEG); 'audio' (WAV) "
                            "is optional")
    bgr = decode_image(data, (pre.image_width, pre.image_height))
    if "audio" in files:
        audio = pad_or_trim(upload_audio(files["audio"], pre.audio_sample_rate_hz), pre.audio_window_samples)
        source = "upload"
    else:
        audio = pad_or_trim(_runtime().recent_audio(pre.audio_window_samples), pre.audio_window_samples)
        source = "microphone (the last 2 s)"
    t1 = time.perf_counter()
    feed = {manifest.inputs[0].name: model_frame(bgr, pre),
            manifest.inputs[1].name: audio[None]}
    t2 = time.perf_counter()
    out, inference_ms = _run(feed)
    t3 = time.perf_counter()
    body = decision_fields(out, manifest.heads)
    body.update(audio_source=source, model=_runtime().bundle.path.name,
                timings_ms={"decode": 1e3 * (t1 - t0), "preprocess": 1e3 * (t2 - t1), "inference": inference_ms,
                            "queue_and_inference": 1e3 * (t3 - t2), "total": 1e3 * (time.perf_counter() - t0)})
    return jsonify(finite(body))


# -- Open Inference Protocol v2 ----------------------------------------------------------------

V2_EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
STATS_KEY = "voxedge_v2_stats"


class InferStats:
    """Triton's statistics extension for the /v2 infer endpoint: counts and nanoseconds, under a lock."""

    PHASES = ("queue", "compute_input", "compute_infer", "compute_output")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = {k: [0, 0] for k in ("success", "fail", *self.PHASES)}
        self._batches: dict[int, dict[str, list[int]]] = {}
        self._inferences = self._executions = self._last_ms = 0

    def success(self, batch: int, total_ns: int, **phase_ns: int) -> None:
        with self._lock:
            self._inferences += batch
            self._executions += 1
            self._last_ms = int(time.time() * 1e3)
            self._add(self._totals["success"], total_ns)
            per_batch = self._batches.setdefault(batch, {k: [0, 0] for k in self.PHASES[1:]})
            for phase, ns in phase_ns.items():
                self._add(self._totals[phase], ns)
                if phase in per_batch:
                    self._add(per_batch[phase], ns)

    def record(self, batch: int, t0: int, t1: int, t2: int, t4: int, inference_ms: float) -> None:
        """A successful request from its perf_counter_ns marks: t0 at the start, t1 after parsing, t2 after the
        model ran (queue and inference), t4 when the response was built."""
        infer_ns = int(inference_ms * 1e6)
        self.success(batch, t4 - t0, compute_input=t1 - t0, queue=(t2 - t1) - infer_ns, compute_infer=infer_ns,
                     compute_output=t4 - t2)

    def fail(self, total_ns: int) -> None:
        with self._lock:
            self._add(self._totals["fail"], total_ns)

    @staticmethod
    def _add(pair: list[int], ns: int) -> None:
        pair[0] += 1
        pair[1] += max(0, int(ns))

    def model_stats(self, name: str, version: str) -> dict:
        def cn(pair):
            return {"count": pair[0], "ns": pair[1]}

        with self._lock:
            return {"name": name, "version": version, "last_inference": self._last_ms,
                    "inference_count": self._inferences, "execution_count": self._executions,
                    "inference_stats": {**{k: cn(v) for k, v in self._totals.items()},
                                        "cache_hit": cn([0, 0]), "cache_miss": cn([0, 0])},
                    "batch_stats": [{"batch_size": b, **{k: cn(v) for k, v in phases.items()}}
                                    for b, phases in sorted(self._batches.items())],
                    "memory_usage": []}


@v2.record_once
def _init_stats(state) -> None:
    state.app.extensions[STATS_KEY] = InferStats()


def _stats() -> InferStats:
    return current_app.extensions[STATS_KEY]


def server_info() -> dict:
    """The server metadata of both protocols (HTTP and gRPC)."""
    return {"name": "voxedge", "version": "0.1.0", "extensions": V2_EXTENSIONS}


@v2.get("")
@require_read
def server_metadata():
    return jsonify(**server_info())


@v2.get("/health/live")
def live():
    return jsonify(live=True)


@v2.get("/health/ready")
def ready():
    if not _runtime().ready:
        raise ApiError(503, "not ready: the model is loading")
    return jsonify(ready=True)


def _check_model(name: str, version: str | None) -> None:
    expected = current_app.config["VOXEDGE"].model_name
    if name != expected:
        raise ApiError(404, f"unknown model {name!r}; this robot serves {expected!r}")
    if version not in (None, MODEL_VERSION):
        raise ApiError(404, f"model {name!r} has no version {version!r}; it has version {MODEL_VERSION}")


def _tensor_meta(specs) -> list[dict]:
    return [{"name": t.name, "datatype": MANIFEST_TO_V2.get(t.dtype, t.dtype.upper()), "shape": list(t.shape)}
            for t in specs]


@v2.get("/models/<name>")
@v2.get("/models/<name>/versions/<version>")
@require_read
def model_metadata(name: str, version: str | None = None):
    _check_model(name, version)
    return jsonify(**model_info(name))


def model_info(name: str) -> dict:
    """The model metadata of both protocols (HTTP and gRPC): versions, platform, inputs and outputs."""
    m = _manifest()
    platform = "tensorrt_plan" if _runtime().config.backend == "tensorrt" else "onnxruntime_onnx"
    return {"name": name, "versions": [MODEL_VERSION], "platform": platform, "inputs": _tensor_meta(m.inputs),
            "outputs": _tensor_meta(m.outputs)}


def model_config(name: str) -> dict:
    """The served model's Triton ModelConfig (``edge.triton``): the platform of the runtime's backend, the
    precision its runner loaded, and batches as large as the runner takes (the service does not batch
    requests together, so no dynamic batching)."""
    from edge.triton import DEFAULT_MAX_BATCH
    from edge.triton import model_config as triton_config

    manifest = _manifest()
    runtime = _runtime()
    tensorrt = runtime.config.backend == "tensorrt"
    runner = runtime.runner
    precision = getattr(runner, "precision", None)
    if precision not in ("fp32", "fp16", "int8"):
        precision = "fp32"
    max_batch = getattr(runner, "max_batch", None)
    if not isinstance(max_batch, int) or max_batch < 1:
        max_batch = DEFAULT_MAX_BATCH
    model_path = getattr(runner, "model_path", None)
    return triton_config(manifest, name=name, precision=precision, max_batch=max_batch,
                         platform="tensorrt_plan" if tensorrt else "onnxruntime_onnx", gpu=tensorrt,
                         dynamic_batching=False, model_file=model_path.name if model_path is not None else None)


@v2.get("/models/<name>/config")
@v2.get("/models/<name>/versions/<version>/config")
@require_read
def model_configuration(name: str, version: str | None = None):
    _check_model(name, version)
    return jsonify(model_config(name))


@v2.get("/models/stats")
@v2.get("/models/<name>/stats")
@v2.get("/models/<name>/versions/<version>/stats")
@require_read
def stats(name: str | None = None, version: str | None = None):
    if name is None:  # every model this server has: the one
        name = current_app.config["VOXEDGE"].model_name
    _check_model(name, version)
    return jsonify(model_stats=[_stats().model_stats(name, MODEL_VERSION)])


@v2.post("/repository/index")
@require_read
def repository_index():
    body = request.get_data(cache=False)
    try:
        req = json.loads(body) if body.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the repository index request must be empty or a JSON object like {\"ready\": true}") \
            from None
    if not isinstance(req, dict) or not isinstance(req.get("ready", False), bool):
        raise ApiError(400, "the repository index request must be empty or a JSON object like {\"ready\": true}")
    return jsonify(repository_entries(req.get("ready", False)))


def repository_entries(ready_only: bool) -> list[dict]:
    """The repository index of both protocols (HTTP and gRPC): this robot's one model, or none when only
    ready models are asked for and it is still loading."""
    ready = _runtime().ready
    if ready_only and not ready:
        return []
    return [{"name": current_app.config["VOXEDGE"].model_name, "version": MODEL_VERSION,
             "state": "READY" if ready else "LOADING", "reason": "" if ready else "the model is loading"}]


@v2.get("/models/<name>/ready")
@v2.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    _check_model(name, version)
    _manifest()
    return jsonify(name=name, ready=True)


def _parameters(obj: dict, what: str) -> dict:
    """An object's optional 'parameters' (a JSON object), or 400."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ApiError(400, f"{what}: 'parameters' must be a JSON object, got {type(params).__name__}")
    return params


def _parse_infer_request(manifest) -> tuple[dict, dict]:
    body = request.get_data(cache=False)
    header_len = request.headers.get("Inference-Header-Content-Length")
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise ApiError(400, f"Inference-Header-Content-Length={header_len!r} is not an integer") from None
        if not 0 < n <= len(body):
            raise ApiError(400, f"Inference-Header-Content-Length={n} but the body has {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the inference request is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "the inference request's JSON is nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise ApiError(400, "the inference request must be a JSON object with an 'inputs' list")
    specs = {t.name: t for t in manifest.inputs}
    feed, offset = {}, 0
    for item in req["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ApiError(400, "each input must be an object with a 'name' (a string), 'shape' and 'datatype'")
        name = item["name"]
        shape = item.get("shape")
        want, dtype, count = check_input(specs, feed, name, item.get("datatype"), shape)
        size = _parameters(item, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
                raise ApiError(400, f"input {name!r}: binary_data_size {size!r} does not match shape {shape} of "
                                    f"{want} ({count * dtype.itemsize} bytes)")
            if offset + size > len(binary):
                raise ApiError(400, f"input {name!r}: the body holds {len(binary) - offset} binary bytes, "
                                    f"{size} announced")
            array = np.frombuffer(binary[offset : offset + size], dtype).reshape(shape)
            offset += size
        else:
            data = item.get("data")
            if data is None:
                raise ApiError(400, f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            if count > MAX_JSON_ELEMENTS:
                raise ApiError(413, f"input {name!r} is too large for JSON data; use the binary tensor extension")
            try:
                array = np.asarray(data, dtype=dtype).reshape(shape)
            except (ValueError, TypeError, OverflowError) as exc:  # ragged, not numbers, out of the type's range
                raise ApiError(400, f"input {name!r}: 'data' does not fit shape {shape} of {want} ({exc})") from None
        feed[name] = np.ascontiguousarray(array)
    if offset != len(binary):
        raise ApiError(400, f"the body has {len(binary) - offset} binary bytes that no input claims")
    check_feed(specs, feed)
    return req, feed


def check_input(specs: dict, feed: dict, name: str, datatype, shape) -> tuple[str, np.dtype, int]:
    """One input of an infer request (HTTP or gRPC) against the manifest's ``specs`` ({name: spec}) and the
    inputs already in ``feed``: (its v2 datatype, numpy dtype, element count), or 400 saying what to send."""
    spec = specs.get(name)
    if spec is None:
        raise ApiError(400, f"unknown input {name!r}; the model takes {sorted(specs)}")
    if name in feed:
        raise ApiError(400, f"input {name!r} is given twice")
    want = MANIFEST_TO_V2.get(spec.dtype)
    if datatype != want:
        raise ApiError(400, f"input {name!r} must have datatype {want}, got {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ApiError(400, f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(s != -1 and s != d for s, d in zip(spec.shape, shape)) \
            or not shape or shape[0] < 1:
        raise ApiError(400, f"input {name!r} has shape {shape}; the model takes {list(spec.shape)} "
                            "(-1: any batch size >= 1)")
    # Python integers: a shape of huge dimensions cannot overflow
    return want, np.dtype(V2_DTYPES[want]), math.prod(shape)


def check_feed(specs: dict, feed: dict) -> None:
    """A parsed request's inputs (HTTP or gRPC) are all there and share one batch size, or 400."""
    missing = sorted(set(specs) - set(feed))
    if missing:
        raise ApiError(400, f"missing inputs {missing}")
    if len({a.shape[0] for a in feed.values()}) != 1:
        raise ApiError(400, "all inputs must have the same batch size")


@v2.post("/models/<name>/infer")
@v2.post("/models/<name>/versions/<version>/infer")
@require_read
@rate_limited("infer")
def infer(name: str, version: str | None = None):
    _check_model(name, version)
    t0 = time.perf_counter_ns()
    try:
        response, batch, t1, t2, inference_ms = _infer(name)
    except ApiError:
        _stats().fail(time.perf_counter_ns() - t0)
        raise
    _stats().record(batch, t0, t1, t2, time.perf_counter_ns(), inference_ms)
    return response


def _infer(name: str):
    """The work of ``infer``: (the response, batch size, t1, t2, inference ms); the perf_counter_ns marks are
    for the statistics: t1 after parsing, t2 after the model ran (queue and inference)."""
    manifest = _manifest()
    req, feed = _parse_infer_request(manifest)
    t1 = time.perf_counter_ns()
    out, inference_ms = _run(feed)
    t2 = time.perf_counter_ns()
    batch = next(iter(feed.values())).shape[0]
    out_specs = {t.name: t for t in manifest.outputs}
    wanted = req.get("outputs")
    if wanted is None:
        wanted = [{"name": n} for n in out_specs]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                               and o["name"] in out_specs for o in wanted):
        raise ApiError(400, f"'outputs' must list outputs of the model: {sorted(out_specs)}")
    default_binary = bool(_parameters(req, "the request").get("binary_data_output", False))
    outputs, chunks = [], []
    for o in wanted:
        array = np.ascontiguousarray(out[o["name"]])
        entry = {"name": o["name"], "datatype": MANIFEST_TO_V2.get(str(array.dtype), str(array.dtype).upper()),
                 "shape": list(array.shape)}
        if _parameters(o, f"output {o['name']!r}").get("binary_data", default_binary):
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    head = {"model_name": name, "model_version": MODEL_VERSION, "outputs": outputs}
    if "id" in req:
        head["id"] = req["id"]
    head_bytes = json.dumps(finite(head)).encode()
    if not chunks:
        return Response(head_bytes, mimetype="application/json"), batch, t1, t2, inference_ms
    return (Response(head_bytes + b"".join(chunks), mimetype="application/octet-stream",
                     headers={"Inference-Header-Content-Length": str(len(head_bytes))}),
            batch, t1, t2, inference_ms)
