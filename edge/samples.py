"""The sample-set format shared by calibration sets and the robot's audit log (writing side).

A set directory holds ``index.jsonl`` (one ``SampleRecord`` per line),
``set.json`` (id, sha256 of the index, coverage) and ``samples/<id>.png`` +
``samples/<id>.wav``: RGB frames at the model's input size and 16-bit mono
WAV utterances exactly the model's audio window long. ``calibration.sampleset``
reads and validates sets; the runtime writes its audit log in the same format
so recorded sessions calibrate and evaluate the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.contract.wav import WavError, encode_wav  # noqa: F401 (encode_wav: the set's WAV writer)

INDEX_NAME = "index.jsonl"
SET_META_NAME = "set.json"
SAMPLE_DIR = "samples"


class SampleFormatError(WavError):
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
