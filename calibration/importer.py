"""A sample set from a user's own files: pairs of a picture and a recording with the same name.

``DIR/kitchen_01.jpg`` + ``DIR/kitchen_01.wav`` become one sample: the picture
resized to the model's input (INTER_AREA), the recording converted to 16 kHz
mono and centred in the model's audio window (longer recordings keep their
start). Optional labels come from ``DIR/labels.jsonl``, one object per line:
``{"name": "kitchen_01", "intent": "go_to", "object": "red ball",
"target_xy": [0.4, 0.6]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from calibration.sampleset import write_set
from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES, pad_or_trim

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LABEL_KEYS = {"name", "intent", "object", "target_xy", "target_box"}


def read_wav(path: Path, rate: int) -> np.ndarray:
    """A WAV file (PCM or float, any channels and rate) as float32 mono at ``rate`` (``edge.contract.wav``)."""
    from edge.contract.wav import WavError, load_wav, resample

    try:
        audio, src_rate = load_wav(path)
    except WavError as exc:
        raise CalibrationError(f"{path}: {exc}; convert it with e.g. `sox in.mp3 -b 16 out.wav`") from exc
    return np.clip(resample(audio, src_rate, rate), -1.0, 1.0).astype(np.float32)


def import_files(src: str | Path, dest: str | Path, image_size: tuple[int, int] = (160, 120),
                 window_samples: int = WINDOW_SAMPLES, rate: int = SAMPLE_RATE_HZ, intents: tuple[str, ...] | None = None) -> dict:
    """Write the set at ``dest`` from the picture + recording pairs in ``src``; returns its ``set.json``."""
    import cv2

    src = Path(src)
    if not src.is_dir():
        raise CalibrationError(f"{src} is not a directory of picture + WAV pairs")
    labels_by_name: dict[str, dict] = {}
    labels_path = src / "labels.jsonl"
    if labels_path.is_file():
        for n, line in enumerate(labels_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CalibrationError(f"{labels_path}:{n}: not JSON ({exc})") from exc
            if not isinstance(entry, dict) or "name" not in entry or set(entry) - LABEL_KEYS:
                raise CalibrationError(f"{labels_path}:{n}: expected an object with 'name' and any of "
                                       f"{sorted(LABEL_KEYS - {'name'})}, got {line.strip()[:80]}")
            if intents and entry.get("intent") is not None and entry["intent"] not in intents:
                raise CalibrationError(f"{labels_path}:{n}: intent {entry['intent']!r} is not one of {list(intents)}")
            labels_by_name[entry.pop("name")] = entry
    pictures = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(p, p.with_suffix(".wav")) for p in pictures if p.with_suffix(".wav").is_file()]
    lonely = [p.name for p in pictures if not p.with_suffix(".wav").is_file()]
    if lonely:
        raise CalibrationError(f"{len(lonely)} pictures in {src} have no recording of the same name "
                               f"(e.g. {lonely[0]} needs {Path(lonely[0]).with_suffix('.wav').name})")
    if not pairs:
        raise CalibrationError(f"{src} holds no picture + WAV pairs (pictures: {', '.join(IMAGE_SUFFIXES)})")
    unknown = sorted(set(labels_by_name) - {p.stem for p, _ in pairs})
    if unknown:
        raise CalibrationError(f"labels.jsonl names samples that are not in {src}: {unknown[:5]}")
    images, audio, labels = [], [], []
    w, h = image_size
    for picture, recording in pairs:
        bgr = cv2.imread(str(picture), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CalibrationError(f"{picture}: not a readable image")
        images.append(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)[..., ::-1])
        audio.append(pad_or_trim(read_wav(recording, rate), window_samples))
        labels.append(labels_by_name.get(picture.stem, {}))
    return write_set(dest, np.stack(images), np.stack(audio), labels, sample_rate=rate, intents=intents)
