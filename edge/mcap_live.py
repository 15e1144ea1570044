"""A live session as an MCAP recording with ROS 2 messages (``voxedge serve --record-mcap OUT.mcap``).

``voxedge record-mcap`` (``edge.mcap_record``) converts an audit log afterwards: one frame
and audio window per decision. ``LiveRecorder`` records the running robot instead, with
the same topics, types and clock, and what the audit log does not keep:

| topic | type | what |
|---|---|---|
| ``/camera/image/compressed`` | ``sensor_msgs/msg/CompressedImage`` | the camera, JPEG, at most ``fps`` a second |
| ``/audio`` | ``audio_common_msgs/msg/AudioDataStamped`` | every microphone sample, 16-bit PCM in chunks |
| ``/audio/info`` | ``audio_common_msgs/msg/AudioInfo`` | once, at the start |
| ``/voxedge/command`` | ``std_msgs/msg/String`` | each decision's summary as JSON (utterances and tracking) |
| ``/voxedge/attention`` | ``sensor_msgs/msg/Image`` | a decision's attention map, ``mono8`` scaled to its maximum |
| ``/voxedge/setpoint`` | ``geometry_msgs/msg/Twist`` | the actuator's setpoint, sampled at ``setpoint_hz`` |
| ``/voxedge/telemetry`` | ``std_msgs/msg/String`` | each new robot telemetry report as JSON (the panel's fields) |

The setpoint is on ``/voxedge/setpoint``, not ``/cmd_vel``, so that ``ros2 bag play`` of a
session never drives a robot.

Times are the robot's monotonic clock (``edge.sensors.clock``, seconds since boot) in ns, as
in the offline converter: a frame at its capture time; an audio chunk stamped with its first
sample's capture time and logged at its last's (the ring's time map); a decision and its
attention map logged when decided (the map stamped with its frame's time); a telemetry report
when it arrived; a setpoint when it was sampled.

The robot's threads never wait for the recording: decisions reach it through a bounded queue
(``put_nowait``; what does not fit is counted in ``dropped``), and everything else is read by
the recorder's own thread: the camera's latest frame, the microphone ring by sample index
(each sample written once, none skipped unless the ring overwrote it first, which is counted),
the actuator's state. The file is written next to ``OUT`` (``.OUT.XXXX.tmp``) and renamed into
place at ``stop()``: a crash leaves no half-written ``OUT`` (an MCAP file needs its footer).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.mcap_record import (
    AUDIO_INFO_TOPIC,
    AUDIO_TOPIC,
    CAMERA_FRAME,
    CAMERA_TOPIC,
    COMMAND_TOPIC,
    DEFAULT_CHUNK_MS,
    MICROPHONE_FRAME,
    McapRecordError,
    check_out,
    file_mode,
    mcap_writer,
    ros_stamp,
)
from edge.mcap_schemas import AUDIO_DATA_STAMPED, AUDIO_INFO, COMPRESSED_IMAGE, MSGDEFS, SEPARATOR, STRING

log = logging.getLogger(__name__)

ATTENTION_TOPIC = "/voxedge/attention"
SETPOINT_TOPIC = "/voxedge/setpoint"
TELEMETRY_TOPIC = "/voxedge/telemetry"

IMAGE = "sensor_msgs/msg/Image"
TWIST = "geometry_msgs/msg/Twist"
_HEADER_DEPS = (f"{SEPARATOR}\nMSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n"
                f"{SEPARATOR}\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n")
LIVE_MSGDEFS = {
    **MSGDEFS,
    IMAGE: "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\n"
           "uint32 step\nuint8[] data\n" + _HEADER_DEPS,
    TWIST: f"Vector3 linear\nVector3 angular\n{SEPARATOR}\nMSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\n"
           "float64 z\n",
}

DEFAULT_FPS = 5.0
DEFAULT_SETPOINT_HZ = 20.0
DEFAULT_JPEG_QUALITY = 80
DEFAULT_QUEUE = 64
LOOP_S = 0.01  # the recorder's thread wakes this often (and at once for a decision)


def _ns(t: float) -> int:
    return int(round(t * 1e9))


@dataclass
class LiveStats:
    """What a ``LiveRecorder`` wrote (``stop()`` returns it; ``stats()`` while it runs)."""

    path: Path
    messages: dict[str, int] = field(default_factory=dict)  # per topic
    dropped: int = 0  # decisions that found the queue full
    audio_first_index: int | None = None  # the microphone ring's index of the first sample written
    audio_samples: int = 0
    audio_lost: int = 0  # samples the ring overwrote before the recorder read them
    error: str | None = None  # why the recording stopped early (nothing was kept)


class LiveRecorder:
    """Records ``runtime`` (started) to the MCAP file ``path`` until ``stop()``; see the module docstring.

    Raises ``McapRecordError`` (at construction) where ``path`` cannot be written or is an existing file that is
    not an MCAP recording (unless ``force``), or the ``mcap`` packages are missing.
    """

    def __init__(self, path: str | os.PathLike, runtime, *, fps: float = DEFAULT_FPS,
                 chunk_ms: int = DEFAULT_CHUNK_MS, setpoint_hz: float = DEFAULT_SETPOINT_HZ,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY, queue_size: int = DEFAULT_QUEUE,
                 force: bool = False) -> None:
        if not fps > 0 or not setpoint_hz > 0 or chunk_ms < 1 or not 1 <= jpeg_quality <= 100:
            raise McapRecordError(f"bad recorder settings: fps={fps}, setpoint_hz={setpoint_hz}, "
                                  f"chunk_ms={chunk_ms}, jpeg_quality={jpeg_quality}")
        self.path = Path(path)
        check_out(self.path, force)
        self._Writer = mcap_writer()
        self.runtime = runtime
        self.fps, self.chunk_ms, self.setpoint_hz, self.jpeg_quality = fps, chunk_ms, setpoint_hz, jpeg_quality
        self._decisions: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stats = LiveStats(self.path)
        self._lock = threading.Lock()  # the stats, read by other threads
        self._stop = threading.Event()
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._tmp: Path | None = None

    # -- the robot's side: never blocks -------------------------------------------------------
    def _on_decision(self, decision) -> None:
        if not self._accepting:  # the runtime keeps its listeners; after stop() this one does nothing
            return
        try:
            self._decisions.put_nowait(decision)
        except queue.Full:
            with self._lock:
                self._stats.dropped += 1

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LiveRecorder:
        if self._thread is not None:
            raise McapRecordError("the recorder is already started")
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        f = os.fdopen(fd, "wb")
        try:
            writer = self._Writer(f)
            schemas = {name: writer.register_msgdef(name, text) for name, text in LIVE_MSGDEFS.items()}
        except BaseException:
            f.close()
            self._tmp.unlink(missing_ok=True)
            raise
        self._accepting = True
        self.runtime.add_decision_listener(self._on_decision)
        self._thread = threading.Thread(target=self._run, args=(f, writer, schemas), name="voxedge-mcap",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> LiveStats:
        """Write what is left, finish the file and rename it into place; idempotent. Returns the stats."""
        self._accepting = False
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                raise McapRecordError(f"the MCAP recorder did not finish {self.path} within {timeout_s} s")
        return self.stats()

    def stats(self) -> LiveStats:
        with self._lock:
            s = self._stats
            return LiveStats(s.path, dict(s.messages), s.dropped, s.audio_first_index, s.audio_samples,
                             s.audio_lost, s.error)

    # -- the recorder's thread ---------------------------------------------------------------
    def _run(self, f, writer, schemas) -> None:
        try:
            with f:
                _Session(self, writer, schemas).run()
                writer.finish()
                f.flush()
                os.fsync(f.fileno())
            os.chmod(self._tmp, file_mode(self.path))  # mkstemp's 0600 would make the recording private
            os.replace(self._tmp, self.path)
            self._accepting = False  # also when the runtime stopped first and the thread ended by itself
        except BaseException as exc:  # a full disk, a bug: the recording ends, the robot goes on
            self._accepting = False
            self._tmp.unlink(missing_ok=True)
            with self._lock:
                self._stats.error = f"{type(exc).__name__}: {exc}"
            report = getattr(self.runtime, "report", None)
            text = f"the MCAP recording {self.path} stopped: {exc}"
            if report is not None:
                report("mcap-recorder", text, exc)
            else:
                log.warning("%s", text, exc_info=exc)


class _Session:
    """The recorder thread's state: what has been written so far."""

    def __init__(self, rec: LiveRecorder, writer, schemas) -> None:
        self.rec, self.writer, self.schemas = rec, writer, schemas
        runtime = rec.runtime
        self.frames = runtime.camera.buffer if runtime.camera is not None else None
        self.ring = runtime.microphone.ring if runtime.microphone is not None else None
        self.next_index: int | None = None  # the next audio sample to write
        self.last_seq: int | None = None  # the last frame written
        self.last_telemetry = None
        self.next_frame_t = self.next_setpoint_t = 0.0

    def emit(self, topic: str, schema: str, message: dict, log_ns: int) -> None:
        stats = self.rec._stats
        seq = stats.messages.get(topic, 0)
        self.writer.write_message(topic, self.schemas[schema], message, log_time=log_ns, publish_time=log_ns,
                                  sequence=seq)
        with self.rec._lock:
            stats.messages[topic] = seq + 1

    def run(self) -> None:
        rec = self.rec
        started = time.monotonic()
        if self.ring is not None:
            self.next_index = self.ring.end_index
            with rec._lock:
                rec._stats.audio_first_index = self.next_index
            rate = self.ring.sample_rate
            self.emit(AUDIO_INFO_TOPIC, AUDIO_INFO, {"channels": 1, "sample_rate": rate, "sample_format": "S16LE",
                                                     "bitrate": 16 * rate, "coding_format": "wave"}, _ns(started))
        while True:
            stopping = rec._stop.is_set() or not getattr(rec.runtime, "running", True)
            now = time.monotonic()
            self.decisions()
            if now >= self.next_frame_t:
                self.next_frame_t = now + 1.0 / rec.fps
                self.frame()
            if now >= self.next_setpoint_t:
                self.next_setpoint_t = now + 1.0 / rec.setpoint_hz
                self.actuator(now)
            self.audio(final=stopping)
            if stopping:
                break
            rec._stop.wait(LOOP_S)
        self.decisions()
        with rec._lock:
            s = rec._stats
            meta = {"samples_audio": str(s.audio_samples), "audio_first_index": str(s.audio_first_index),
                    "audio_lost_samples": str(s.audio_lost), "dropped_decisions": str(s.dropped)}
        self.writer.add_metadata("voxedge", {
            "source": "voxedge serve --record-mcap (live)", **meta,
            "clock": "the robot's monotonic clock (seconds since boot): capture, decision and arrival times",
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def decisions(self) -> None:
        while True:
            try:
                d = self.rec._decisions.get_nowait()
            except queue.Empty:
                return
            t_ns = _ns(d.t_decided or time.monotonic())
            self.emit(COMMAND_TOPIC, STRING, {"data": json.dumps(d.summary(), sort_keys=True)}, t_ns)
            if d.attention is not None:
                att = np.asarray(d.attention, np.float64)
                if att.ndim == 2 and att.size:
                    top = float(np.nanmax(att)) if np.isfinite(att).any() else 0.0
                    scaled = np.nan_to_num(att / top if top > 0 else np.zeros_like(att))
                    mono = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
                    h, w = mono.shape
                    self.emit(ATTENTION_TOPIC, IMAGE, {
                        "header": {"stamp": ros_stamp(_ns(d.t_frame)), "frame_id": CAMERA_FRAME},
                        "height": h, "width": w, "encoding": "mono8", "is_bigendian": 0, "step": w,
                        "data": mono.tobytes()}, t_ns)

    def frame(self) -> None:
        if self.frames is None:
            return
        try:
            frame = self.frames.latest()
        except Exception:  # no frame yet: the camera's own health check says why
            return
        if frame.seq == self.last_seq:
            return
        self.last_seq = frame.seq
        import cv2

        ok, jpeg = cv2.imencode(".jpg", frame.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.rec.jpeg_quality])
        if ok:
            t_ns = _ns(frame.t)
            self.emit(CAMERA_TOPIC, COMPRESSED_IMAGE, {"header": {"stamp": ros_stamp(t_ns), "frame_id": CAMERA_FRAME},
                                                       "format": "jpeg", "data": jpeg.tobytes()}, t_ns)

    def actuator(self, now: float) -> None:
        actuator = self.rec.runtime.actuator
        if actuator is None:
            return
        state = actuator.state()
        sp = state.setpoint
        self.emit(SETPOINT_TOPIC, TWIST, {"linear": {"x": float(sp.linear_m_s), "y": 0.0, "z": 0.0},
                                          "angular": {"x": 0.0, "y": 0.0, "z": float(sp.angular_rad_s)}}, _ns(now))
        t = state.telemetry
        if t is not None and t is not self.last_telemetry:
            self.last_telemetry = t
            from edge.service.state import telemetry_json

            when = getattr(t, "received_at", None)
            self.emit(TELEMETRY_TOPIC, STRING, {"data": json.dumps(telemetry_json(t), sort_keys=True)},
                      _ns(when if isinstance(when, (int, float)) else now))

    def audio(self, final: bool = False) -> None:
        ring = self.ring
        if ring is None:
            return
        from edge.contract.wav import pcm16
        from edge.sensors.errors import AudioRangeError

        step = max(1, int(round(ring.sample_rate * self.rec.chunk_ms / 1000)))
        end = ring.end_index
        while end - self.next_index >= step or (final and end > self.next_index):
            oldest = ring.oldest_index
            if self.next_index < oldest:  # the ring went round before this thread came back: count the gap
                with self.rec._lock:
                    self.rec._stats.audio_lost += oldest - self.next_index
                self.next_index = oldest
                continue
            lo = self.next_index
            hi = min(end, lo + step)
            try:
                pcm = pcm16(ring.read(lo, hi))
            except AudioRangeError:  # overwritten between the check and the read: counted on the next turn
                continue
            self.emit(AUDIO_TOPIC, AUDIO_DATA_STAMPED,
                      {"header": {"stamp": ros_stamp(_ns(ring.time_of(lo))), "frame_id": MICROPHONE_FRAME},
                       "audio": {"data": pcm.tobytes()}}, _ns(ring.time_of(hi - 1)))
            self.next_index = hi
            with self.rec._lock:
                self.rec._stats.audio_samples += hi - lo
