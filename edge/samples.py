"""The sample-set format shared by calibration sets and the robot's audit log (writing side).

A set directory holds ``index.jsonl`` (one ``SampleRecord`` per line),
``set.json`` (id, sha256 of the index, coverage) and ``samples/<id>.png`` +
``samples/<id>.wav``: RGB frames at the model's input size and 16-bit mono
WAV utterances exactly the model's audio window long. ``calibration.sampleset``
reads and validates sets; the runtime writes its audit log in the same format
so recorded sessions calibrate and evaluate the model.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ

INDEX_NAME = "index.jsonl"
SET_META_NAME = "set.json"
SAMPLE_DIR = "samples"


class SampleFormatError(ValueError):
    """A frame or utterance that cannot be written in the set format."""


@dataclass(frozen=True)
class SampleRecord:
    """One line of ``index.jsonl``.

    ``intent`` / ``object`` / ``target_*`` are labels (null when unlabelled,
    e.g. recorded on the robot); ``decision`` is what the model on the robot
    decided for the sample (the audit log fills it), which is not a label.
    """

    id: str
    image: str
    audio: str
    sha256: dict
    intent: str | None = None
    object: str | None = None
    target_xy: tuple[float, float] | None = None
    target_box: tuple[float, float, float, float] | None = None
    decision: dict | None = None
    t: float | None = None  # capture time (monotonic seconds on the robot)


def encode_wav(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono WAV bytes of float audio in [-1, 1] (clipped)."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1:
        raise SampleFormatError(f"utterances must be 1-D mono, got shape {audio.shape}")
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an H x W x 3 uint8 RGB frame."""
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SampleFormatError(f"frames must be H x W x 3 uint8 RGB, got {image.dtype} {list(image.shape)}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV wants BGR
    if not ok:
        raise SampleFormatError("OpenCV could not encode a frame as PNG")
    return buf.tobytes()


WAV_RATES_HZ = (8_000, 192_000)  # sample rates accepted: telephone to studio; anything else is a lying header
WAV_MAX_CHANNELS = 8


def decode_pcm_wav(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """A PCM WAV (8, 16 or 32-bit, 1-8 channels, 8-192 kHz) as (float32 mono in [-1, 1], its sample rate).

    The header is checked before any sample is converted (an upload that claims 1 Hz would otherwise be
    resampled 16,000-fold): the rate, the channel count, that the data holds as many frames as the header
    says, and with ``max_seconds`` the duration.

    Raises:
        SampleFormatError: not a readable PCM WAV, an unsupported format, a header the data contradicts,
            longer than ``max_seconds``, or no samples.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate, declared = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if not WAV_RATES_HZ[0] <= rate <= WAV_RATES_HZ[1]:
                raise SampleFormatError(f"a WAV at {rate} Hz; use a sample rate from {WAV_RATES_HZ[0]} to "
                                        f"{WAV_RATES_HZ[1]} Hz ({SAMPLE_RATE_HZ} Hz is what the model hears)")
            if not 1 <= channels <= WAV_MAX_CHANNELS:
                raise SampleFormatError(f"a WAV with {channels} channels; use 1 to {WAV_MAX_CHANNELS} (mono is best)")
            if max_seconds is not None and declared / rate > max_seconds:
                raise SampleFormatError(f"{declared / rate:.1f} s of audio, longer than the {max_seconds:g} s "
                                        "accepted; send the utterance only")
            raw = w.readframes(declared)
    except SampleFormatError:
        raise
    except (wave.Error, EOFError, struct.error, OverflowError, ValueError) as exc:
        raise SampleFormatError(f"not a PCM WAV file ({exc}); send or convert to 16-bit PCM WAV") from exc
    if len(raw) != declared * channels * width:
        raise SampleFormatError(f"a WAV whose header says {declared} frames but whose data holds "
                                f"{len(raw) // max(1, channels * width)}; the file is truncated or its header is "
                                "wrong: write it again")
    if width == 1:
        pcm = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        pcm = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    else:
        raise SampleFormatError(f"{8 * width}-bit WAV is not supported; use 8, 16 or 32-bit PCM")
    if pcm.size < channels or channels < 1:
        raise SampleFormatError("the WAV file holds no samples")
    if channels == 1:
        return pcm, rate  # already float32; a mean over one channel would only cost a pass and a copy
    mono = pcm[: pcm.size - pcm.size % channels].reshape(-1, channels).mean(axis=1)
    return mono.astype(np.float32), rate
