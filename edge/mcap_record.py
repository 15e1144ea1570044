"""An audit log as an MCAP recording with ROS 2 messages (``voxedge record-mcap``), for Foxglove and ``ros2 bag``.

Each audit sample (``edge.audit``: the frame and audio window a decision was
made from, and the decision's summary) becomes, at the sample's recorded time:

| topic | type | what |
|---|---|---|
| ``/camera/image/compressed`` | ``sensor_msgs/msg/CompressedImage`` | the frame as JPEG, ``frame_id`` "camera" |
| ``/audio`` | ``audio_common_msgs/msg/AudioDataStamped`` | the audio window as 16-bit PCM in chunks |
| ``/audio/info`` | ``audio_common_msgs/msg/AudioInfo`` | once, at the start: channels, rate, "S16LE" |
| ``/voxedge/command`` | ``std_msgs/msg/String`` | the decision summary as JSON, as the log holds it |

Audio is ``audio_common_msgs`` (the ROS 2 audio driver's types; ``edge.mcap_schemas``
says why): raw little-endian 16-bit mono PCM, which the audit WAV files already are, so
the chunks are the recorded samples exactly. The window is cut into chunks (100 ms by
default) whose times end at the decision's time; the header stamp is a chunk's first
sample, the log time its last. Windows of decisions closer together than a window
overlap in time: the part already written is left out, so ``/audio`` stays one stream
with no sample twice and no time going back.

Times: the audit log keeps each sample's capture time on the robot's monotonic clock
(seconds since boot, ``t``), so the recording's times are that clock, not wall time.
A log that spans a reboot (the clock starts again) shifts each later session to follow
the one before; samples without a time (a calibration set) are placed one window and a
second apart. What was shifted is said in ``Conversion.warnings``.

The audit log records neither the attention maps nor the setpoints and telemetry the
actuator sent, so this recording has no topics for them; ``voxedge serve --record-mcap``
(``edge.mcap_live``) records those too, live, with the same topics and clock.

``mcap`` and ``mcap-ros2-support`` are optional (``pip install mcap mcap-ros2-support``)
and imported only when a recording is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge.mcap_schemas import AUDIO_DATA_STAMPED, AUDIO_INFO, COMPRESSED_IMAGE, MSGDEFS, STRING
from edge.samples import INDEX_NAME, SET_META_NAME, SampleRecord

MCAP_MAGIC = b"\x89MCAP0\r\n"
PIP_COMMAND = "pip install mcap mcap-ros2-support"
DEFAULT_CHUNK_MS = 100
DEFAULT_JPEG_QUALITY = 90

CAMERA_TOPIC = "/camera/image/compressed"
AUDIO_TOPIC = "/audio"
AUDIO_INFO_TOPIC = "/audio/info"
COMMAND_TOPIC = "/voxedge/command"
CAMERA_FRAME = "camera"
MICROPHONE_FRAME = "microphone"


class McapRecordError(Exception):
    """The audit log cannot be read or the recording cannot be written; the message says why."""


@dataclass
class Conversion:
    """What ``write_mcap`` wrote."""

    path: Path
    samples: int = 0
    messages: dict[str, int] = field(default_factory=dict)  # per topic
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0


def mcap_writer():
    try:
        from mcap_ros2.writer import Writer
    except ImportError as exc:
        raise McapRecordError(f"writing MCAP needs the mcap and mcap-ros2-support packages ({exc}); install "
                              f"them with: {PIP_COMMAND}") from exc
    return Writer


def read_index(audit_dir: str | Path) -> tuple[list[SampleRecord], dict]:
    """The samples an audit log (or any sample set) names, in order, and its ``set.json`` (``{}`` if none)."""
    path = Path(audit_dir)
    if not path.exists():
        raise McapRecordError(f"{path} does not exist; give the audit log directory (serve --audit-log DIR)")
    if not path.is_dir():
        raise McapRecordError(f"{path} is not a directory; give the audit log directory (serve --audit-log DIR)")
    index = path / INDEX_NAME
    if not index.is_file():
        raise McapRecordError(f"{path} is not an audit log: it has no {INDEX_NAME}")
    try:
        text = index.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise McapRecordError(f"cannot read {index}: {getattr(exc, 'strerror', None) or exc}") from exc
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = SampleRecord(**json.loads(line))
            if not isinstance(rec.id, str) or not isinstance(rec.image, str) or not isinstance(rec.audio, str):
                raise TypeError("id, image and audio must be strings")
        except (json.JSONDecodeError, TypeError) as exc:
            raise McapRecordError(f"{index}:{n}: not a sample record ({exc}); opening the log with "
                                  "`voxedge serve --audit-log` repairs a damaged index") from exc
        records.append(rec)
    if not records:
        raise McapRecordError(f"{index} lists no samples: nothing to record")
    meta: dict = {}
    try:
        loaded = json.loads((path / SET_META_NAME).read_text())
        meta = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass  # the summary is optional; the index is the set
    return records, meta


@dataclass
class _Sample:
    record: SampleRecord
    bgr: np.ndarray
    pcm: np.ndarray  # int16
    rate: int


def _load(audit_dir: Path, rec: SampleRecord) -> _Sample | str:
    """A sample's frame and audio, or why it was skipped."""
    import cv2

    from edge.contract.wav import WavError, decode_wav, pcm16

    root = audit_dir.resolve()
    data = {}
    for kind, rel in (("image", rec.image), ("audio", rec.audio)):
        file = (audit_dir / rel).resolve()
        if root not in file.parents:
            return f"its {kind} path {rel!r} is outside the log"
        try:
            data[kind] = file.read_bytes()
        except FileNotFoundError:
            return f"its {kind} file {rel} is gone (the ring may have dropped it while converting)"
        except OSError as exc:
            return f"cannot read {rel}: {exc.strerror or exc}"
        want = (rec.sha256 or {}).get(kind) if isinstance(rec.sha256, dict) else None
        if want and hashlib.sha256(data[kind]).hexdigest() != want:
            return f"its {kind} file {rel} does not match the index's sha256 (damaged)"
    bgr = cv2.imdecode(np.frombuffer(data["image"], np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return f"its frame {rec.image} is not a readable image"
    try:
        audio, rate = decode_wav(data["audio"])
    except WavError as exc:
        return f"its audio {rec.audio} is not a readable WAV ({exc})"
    pcm = pcm16(audio)  # decoding divides by 2^15, pcm16 multiplies by it: the file's samples exactly
    return _Sample(rec, bgr, pcm, rate)


def ros_stamp(ns: int) -> dict:
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


class _Clock:
    """Recording times (ns) from the samples' ``t``: monotonic across reboots and missing times."""

    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings
        self.offset_s = 0.0
        self.last_s: float | None = None
        self.restarts = self.untimed = 0

    def time_ns(self, t, window_s: float) -> int:
        gap_s = window_s + 1.0
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
            self.untimed += 1
            now = (self.last_s + gap_s) if self.last_s is not None else gap_s
        else:
            now = t + self.offset_s
            if self.last_s is None and now < window_s:  # the first window must not start before time 0
                self.offset_s += window_s - now
                now = window_s
            elif self.last_s is not None and now < self.last_s:  # the robot's clock started again: a reboot
                self.restarts += 1
                self.offset_s += self.last_s + gap_s - now
                now = self.last_s + gap_s
        self.last_s = now
        return int(round(now * 1e9))

    def finish(self) -> None:
        if self.restarts:
            self.warnings.append(f"the robot's clock went back {self.restarts} time(s) (a reboot between "
                                 "sessions); each later session is shifted to follow the one before")
        if self.untimed:
            self.warnings.append(f"{self.untimed} sample(s) have no recorded time; they are placed one audio "
                                 "window and a second after the sample before")


def write_mcap(audit_dir: str | Path, out: str | Path, *, chunk_ms: int = DEFAULT_CHUNK_MS,
               jpeg_quality: int = DEFAULT_JPEG_QUALITY, force: bool = False,
               progress: Callable[[int, int], None] | None = None) -> Conversion:
    """Write the audit log at ``audit_dir`` as the MCAP file ``out`` (replaced atomically).

    ``out`` may replace an earlier MCAP file; any other existing file is refused unless
    ``force``. ``progress(done, total)`` is called after each sample.
    """
    audit_dir, out = Path(audit_dir), Path(out)
    if chunk_ms < 1:
        raise McapRecordError(f"the audio chunk must be at least 1 ms, got {chunk_ms}")
    if not 1 <= jpeg_quality <= 100:
        raise McapRecordError(f"the JPEG quality must be 1 to 100, got {jpeg_quality}")
    records, meta = read_index(audit_dir)
    check_out(out, force)
    Writer = mcap_writer()
    import cv2

    result = Conversion(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer = Writer(f)
            schemas = {name: writer.register_msgdef(name, text) for name, text in MSGDEFS.items()}
            counts = result.messages
            clock = _Clock(result.warnings)
            audio_end_ns: int | None = None
            info_rate: int | None = None
            skipped: list[str] = []

            def emit(topic: str, schema: str, message: dict, log_ns: int) -> None:
                writer.write_message(topic, schemas[schema], message, log_time=log_ns, publish_time=log_ns,
                                     sequence=counts.get(topic, 0))
                counts[topic] = counts.get(topic, 0) + 1

            def record(rec: SampleRecord) -> str | None:
                """Write one sample's messages; why not, when it is skipped."""
                nonlocal audio_end_ns, info_rate
                sample = _load(audit_dir, rec)
                if isinstance(sample, str):
                    return sample
                rate, pcm = sample.rate, sample.pcm
                if info_rate is not None and rate != info_rate:
                    return f"its audio is {rate} Hz, the recording's is {info_rate} Hz"
                ok, jpeg = cv2.imencode(".jpg", sample.bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                if not ok:
                    return "OpenCV could not encode its frame as JPEG"
                window_ns = int(round(len(pcm) * 1e9 / rate))
                t_ns = clock.time_ns(rec.t, len(pcm) / rate)
                if info_rate is None:
                    info_rate = rate
                    result.start_ns = t_ns - window_ns
                    emit(AUDIO_INFO_TOPIC, AUDIO_INFO, {"channels": 1, "sample_rate": rate, "sample_format": "S16LE",
                                                        "bitrate": 16 * rate, "coding_format": "wave"},
                         result.start_ns)
                emit(CAMERA_TOPIC, COMPRESSED_IMAGE, {"header": {"stamp": ros_stamp(t_ns), "frame_id": CAMERA_FRAME},
                                                      "format": "jpeg", "data": jpeg.tobytes()}, t_ns)
                audio_end_ns = _write_audio(emit, pcm, rate, t_ns, audio_end_ns, chunk_ms)
                emit(COMMAND_TOPIC, STRING, {"data": json.dumps(rec.decision, sort_keys=True)}, t_ns)
                result.samples += 1
                result.end_ns = t_ns
                return None

            for done, rec in enumerate(records, start=1):
                why = record(rec)
                if why is not None:
                    skipped.append(f"sample {rec.id}: {why}")
                if progress is not None:
                    progress(done, len(records))
            clock.finish()
            result.skipped = len(skipped)
            if skipped:
                more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
                result.warnings.append(f"{len(skipped)} sample(s) skipped: {'; '.join(skipped[:3])}{more}")
            if not result.samples:
                raise McapRecordError(f"no sample of {audit_dir} could be read: {skipped[0]}")
            writer.add_metadata("voxedge", {
                "source": str(audit_dir.resolve()), "set_id": str(meta.get("id", "")),
                "samples": str(result.samples), "skipped": str(result.skipped),
                "clock": "the robot's monotonic clock (seconds since boot) at the end of each utterance",
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            writer.finish()
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode(out))  # mkstemp's 0600 would make the recording private
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result


def _write_audio(emit, pcm: np.ndarray, rate: int, t_ns: int, written_until_ns: int | None, chunk_ms: int) -> int:
    """Write one window as chunks ending at ``t_ns``, leaving out what an earlier window already covered.

    Returns the time up to which ``/audio`` is now written.
    """
    n = len(pcm)
    start_ns = t_ns - int(round(n * 1e9 / rate))
    first = 0
    if written_until_ns is not None and written_until_ns > start_ns:
        first = min(n, int(math.ceil((written_until_ns - start_ns) * rate / 1e9 - 1e-6)))
    step = max(1, int(round(rate * chunk_ms / 1000)))
    for lo in range(first, n, step):
        hi = min(n, lo + step)
        lo_ns = t_ns - int(round((n - lo) * 1e9 / rate))
        hi_ns = t_ns - int(round((n - hi) * 1e9 / rate))
        emit(AUDIO_TOPIC, AUDIO_DATA_STAMPED,
             {"header": {"stamp": ros_stamp(lo_ns), "frame_id": MICROPHONE_FRAME},
              "audio": {"data": pcm[lo:hi].astype("<i2").tobytes()}}, hi_ns)
    return max(t_ns, written_until_ns or 0)


def file_mode(out: Path) -> int:
    """The mode of the file being replaced, or what the umask gives a new file."""
    try:
        return out.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_out(out: Path, force: bool = False, force_hint: str = ", or --force to replace it") -> None:
    """Refuse to write ``out`` where that would lose something: a directory, a missing folder, an existing file
    that is not an MCAP recording (unless ``force``). Also ``serve --record-mcap``'s check (``edge.mcap_live``)."""
    if out.is_dir():
        raise McapRecordError(f"{out} is a directory; give the MCAP file to write (e.g. {out / 'session.mcap'})")
    if not out.parent.is_dir():
        raise McapRecordError(f"the folder {out.parent} does not exist; create it first")
    if out.exists() and not force and not _is_mcap(out):
        raise McapRecordError(f"{out} exists and is not an MCAP file; it is left as it is (choose another name"
                              f"{force_hint})")


def _is_mcap(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MCAP_MAGIC)) == MCAP_MAGIC
    except OSError:
        return False

