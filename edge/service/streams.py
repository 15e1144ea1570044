"""Long-lived responses: the MJPEG live view (one shared encoder, capped viewers) and Server-Sent Events.

The live view is encoded once for all viewers by one thread that runs only
while someone watches; each viewer waits for the next JPEG and drops frames it
was too slow for (never a queue per viewer). Both kinds of stream are capped:
over the cap the answer is 503, so streams cannot starve the request threads.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from flask import Blueprint, Response, current_app, request

from edge.service.config import MJPEG_WIDTH_PX
from edge.service.context import finite
from edge.service.security import ApiError, require_read

bp = Blueprint("streams", __name__)

# A comment line this often on a quiet event stream: besides keeping proxies from timing it out, a write is
# how the server learns that the client left (waitress raises on writing to a closed channel), so a
# departed client's slot is freed within about this long.
SSE_KEEPALIVE_S = 0.5
SSE_WAIT_SLICE_S = 0.5
VIEW_MAX_DECISION_AGE_S = 1.5  # overlay the attention map only this long after its decision
ENCODER_IDLE_STOP_S = 2.0
JPEG_QUALITY = 80


class StreamState:
    """Viewer and subscriber counts, and the shared MJPEG encoder."""

    def __init__(self, runtime, config) -> None:
        self.runtime = runtime
        self.config = config
        self.lock = threading.Condition()
        self.viewers = 0
        self.sse_clients = 0
        self.jpeg: bytes | None = None
        self.jpeg_seq = 0
        self.encoder: threading.Thread | None = None
        self.closing = threading.Event()
        self.frames_encoded = 0

    # -- MJPEG ---------------------------------------------------------------------
    def join_viewers(self) -> None:
        with self.lock:
            if self.viewers >= self.config.max_mjpeg_viewers:
                raise ApiError(503, f"the live view already has {self.viewers} viewers (the limit); close another "
                                    "panel or try again later", {"Retry-After": "5"})
            self.viewers += 1
            if self.encoder is None or not self.encoder.is_alive():
                self.encoder = threading.Thread(target=self._encode_loop, name="voxedge-mjpeg", daemon=True)
                self.encoder.start()

    def leave_viewers(self) -> None:
        with self.lock:
            self.viewers -= 1
            self.lock.notify_all()

    def _encode_loop(self) -> None:
        period = 1.0 / self.config.mjpeg_fps
        idle_since = None
        last_seq = -1
        while not self.closing.is_set():
            with self.lock:
                if self.viewers == 0:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > ENCODER_IDLE_STOP_S:
                        self.encoder = None
                        return
                else:
                    idle_since = None
            t0 = time.monotonic()
            try:
                frame = self.runtime.camera.buffer.latest()
                if frame.seq != last_seq:
                    last_seq = frame.seq
                    jpeg = render_view(frame, self.runtime.last_view, self.config.mjpeg_width_px)
                    with self.lock:
                        self.jpeg, self.jpeg_seq = jpeg, self.jpeg_seq + 1
                        self.frames_encoded += 1
                        self.lock.notify_all()
            except Exception:  # no frame yet, or the camera is reconnecting: try again next period
                pass
            self.closing.wait(max(0.0, period - (time.monotonic() - t0)))

    def next_jpeg(self, after_seq: int, timeout_s: float = 2.0) -> tuple[int, bytes | None]:
        with self.lock:
            self.lock.wait_for(lambda: self.jpeg_seq > after_seq or self.closing.is_set(), timeout_s)
            return self.jpeg_seq, self.jpeg

    # -- SSE -------------------------------------------------------------------------
    def join_sse(self) -> None:
        with self.lock:
            if self.sse_clients >= self.config.max_sse_clients:
                raise ApiError(503, f"{self.sse_clients} event streams are open (the limit); close a panel tab",
                               {"Retry-After": "5"})
            self.sse_clients += 1

    def leave_sse(self) -> None:
        with self.lock:
            self.sse_clients -= 1


def render_view(frame, decision, width: int = MJPEG_WIDTH_PX) -> bytes:
    """The live view: the frame enlarged, the attention map and target point of a recent decision, its age."""
    import cv2

    image = frame.image
    h = round(width * image.shape[0] / image.shape[1])
    view = cv2.resize(image[:, :, ::-1], (width, h), interpolation=cv2.INTER_LINEAR)  # to BGR for OpenCV
    if decision is not None and time.monotonic() - decision.t_decided < VIEW_MAX_DECISION_AGE_S:
        if decision.attention is not None:
            att = np.asarray(decision.attention, np.float32)
            att = att / max(float(att.max()), 1e-6)
            heat = cv2.applyColorMap((cv2.resize(att, (width, h)) * 255).astype(np.uint8), cv2.COLORMAP_JET)
            mask = cv2.resize(att, (width, h))[..., None]
            view = (view * (1 - 0.45 * mask) + heat * 0.45 * mask).astype(np.uint8)
        if decision.target_xy is not None and (decision.presence is None or decision.presence >= 0.5):
            x, y = int(decision.target_xy[0] * width), int(decision.target_xy[1] * h)
            cv2.drawMarker(view, (x, y), (255, 255, 255), cv2.MARKER_CROSS, 22, 3)
            cv2.drawMarker(view, (x, y), (0, 0, 255), cv2.MARKER_CROSS, 20, 1)
        label = f"{decision.intent} {100 * decision.confidence:.0f}%"
        cv2.putText(view, label, (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
    age_ms = 1e3 * (time.monotonic() - frame.t)
    cv2.putText(view, f"frame {frame.seq}  age {age_ms:.0f} ms", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 2, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the live view")
    return buf.tobytes()


def init_app(app) -> None:
    app.extensions["voxedge_streams"] = StreamState(app.config["RUNTIME"], app.config["VOXEDGE"])


def state() -> StreamState:
    return current_app.extensions["voxedge_streams"]


def counts() -> dict:
    s = state()
    return {"viewers": s.viewers, "max_viewers": s.config.max_mjpeg_viewers, "sse_clients": s.sse_clients,
            "max_sse_clients": s.config.max_sse_clients}


MJPEG_MIMETYPE = "multipart/x-mixed-replace; boundary=frame"
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@bp.get("/stream.mjpg")
@require_read
def mjpeg():
    s = state()
    if getattr(s.runtime, "camera", None) is None:
        raise ApiError(503, "no camera is running")
    if request.method == "HEAD":  # headers only: no slot taken (a HEAD's body is never iterated, so never freed)
        return Response(mimetype=MJPEG_MIMETYPE, headers=STREAM_HEADERS)
    s.join_viewers()

    def generate():
        seq = 0
        try:
            while not s.closing.is_set():
                seq, jpeg = s.next_jpeg(seq)
                if jpeg is None:
                    continue
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                       + b"\r\n\r\n" + jpeg + b"\r\n")
        finally:
            s.leave_viewers()

    return Response(generate(), mimetype=MJPEG_MIMETYPE, headers=STREAM_HEADERS)


@bp.get("/api/events")
@require_read
def events():
    s = state()
    try:
        after = int(request.headers.get("Last-Event-ID") or request.args.get("after", 0))
    except ValueError:
        raise ApiError(400, "Last-Event-ID must be an event id (an integer)") from None
    if request.method == "HEAD":
        return Response(mimetype="text/event-stream", headers=STREAM_HEADERS)
    s.join_sse()

    def generate():
        last = after
        try:
            yield "retry: 2000\n\n"
            quiet_since = time.monotonic()
            while not s.closing.is_set():
                # Short waits, so a stopping server ends this stream within a second.
                batch = s.runtime.events_after(last, timeout_s=SSE_WAIT_SLICE_S)
                if not batch:
                    if time.monotonic() - quiet_since >= SSE_KEEPALIVE_S:
                        quiet_since = time.monotonic()
                        yield ": keep-alive\n\n"
                    continue
                quiet_since = time.monotonic()
                for e in batch:
                    last = e.id
                    body = json.dumps(finite({"id": e.id, "t": e.t, "wall": e.wall, "kind": e.kind, "text": e.text,
                                              "data": e.data}), default=str)
                    yield f"id: {e.id}\nevent: {e.kind}\ndata: {body}\n\n"
        finally:
            s.leave_sse()

    return Response(generate(), mimetype="text/event-stream", headers=STREAM_HEADERS)
