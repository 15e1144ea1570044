"""Calibration and evaluation sets on disk: an index (JSONL) plus PNG frames and WAV utterances.

Layout of a set directory::

    index.jsonl      one JSON object per sample (below)
    set.json         set id, sha256 of the index, coverage statistics, warnings
    samples/000000.png, samples/000000.wav, ...

Each index line: ``{"id", "image", "audio", "sha256": {"image", "audio"},
"intent", "object", "target_xy", "target_box"}`` with paths relative to the
set, ``intent`` one of the model's labels (or null when unlabelled, e.g. a
calibration sample recorded on the robot), ``object`` like "red ball" or null,
and normalised ``target_xy`` / ``target_box`` or null. Frames are RGB PNGs of
the model's input size; utterances are 16-bit PCM mono WAV at 16 kHz, exactly
the model's window long. The same format is written from ``sim`` here and, by
the runtime, from what the robot saw and heard.

A set is model-independent: ``model_feed`` (and ``SampleSet.feeds``) turns
samples into a model's input from its manifest (input names, layout, colour
order) with the runtime's own ``edge.contract.image.prepare_image``, so calibration,
the accuracy gates and the robot feed a model the same way. ``SampleSet.coverage``
recomputes a set's coverage warnings from its samples, whatever wrote it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from edge.atomic_dir import replace_dir
from edge.contract.audio import SAMPLE_RATE_HZ
from edge.samples import INDEX_NAME, SAMPLE_DIR, SET_META_NAME, SampleRecord, encode_png, encode_wav

MIN_SAMPLES_WARNING = 256  # fewer calibration samples than this give noisy int8 scales
GATE_RESOLVING_SAMPLES = 200  # with fewer, one evaluation sample is worth more than the gate's 0.5-point limit
CALIBRATE_MIN_SAMPLES = 64  # voxedge calibrate refuses fewer without --force: one gate sample > 1.5 points
PURPOSES = ("calibration", "evaluation")  # what a set is for decides which size warning applies
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
MAX_CLIPPED_FRACTION = 0.001


def _decode_wav(data: bytes, where: str) -> tuple[np.ndarray, int]:
    from edge.contract.wav import WavError, decode_wav

    try:
        return decode_wav(data)
    except WavError as exc:
        raise CalibrationError(f"{where}: {exc}") from exc


def _decode_png(data: bytes, where: str) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise CalibrationError(f"{where}: not a readable PNG image")
    return img[..., ::-1].copy()  # back to RGB


def write_set(dest: str | Path, images: np.ndarray, audio: np.ndarray, labels: list[dict] | None = None,
              sample_rate: int = SAMPLE_RATE_HZ, set_id: str | None = None, intents: tuple[str, ...] | None = None,
              purpose: str | None = None, simulated: bool = False) -> dict:
    """Write a set atomically from arrays; returns its ``set.json`` contents.

    Args:
        images: uint8 [N, H, W, 3] RGB frames.
        audio: float32 [N, samples] utterances in [-1, 1].
        labels: per sample, optional keys intent, object, target_xy, target_box.
        intents: the model's intent labels, to warn about intents the set lacks.
        purpose: "calibration" or "evaluation" when known, for the size warning that applies.
        simulated: the samples come from the simulator, whose clipping is modelled on purpose (recorded in
            ``set.json``; no advice about a microphone gain that does not exist).
    """
    images, audio = np.asarray(images), np.asarray(audio)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise CalibrationError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    if audio.ndim != 2 or len(audio) != len(images):
        raise CalibrationError(f"audio must be [N, samples] with N={len(images)}, got {list(audio.shape)}")
    if len(images) == 0:
        raise CalibrationError("a calibration or evaluation set needs at least one sample")
    labels = labels or [{} for _ in range(len(images))]
    dest = Path(dest)

    def populate(tmp: Path) -> dict:
        (tmp / SAMPLE_DIR).mkdir()
        lines = []
        for i, (img, wav, lab) in enumerate(zip(images, audio, labels)):
            png_bytes, wav_bytes = encode_png(img), encode_wav(wav, sample_rate)
            rec = SampleRecord(
                id=f"{i:06d}", image=f"{SAMPLE_DIR}/{i:06d}.png", audio=f"{SAMPLE_DIR}/{i:06d}.wav",
                sha256={"image": hashlib.sha256(png_bytes).hexdigest(), "audio": hashlib.sha256(wav_bytes).hexdigest()},
                **{k: (list(map(float, v)) if k.startswith("target") and v is not None else v) for k, v in lab.items()},
            )
            (tmp / rec.image).write_bytes(png_bytes)
            (tmp / rec.audio).write_bytes(wav_bytes)
            lines.append(json.dumps(rec.__dict__, sort_keys=True))
        index = ("\n".join(lines) + "\n").encode()
        (tmp / INDEX_NAME).write_bytes(index)
        meta = {"id": set_id or dest.name, "index_sha256": hashlib.sha256(index).hexdigest(),
                **({"simulated": True} if simulated else {}), **({"purpose": purpose} if purpose else {}),
                **coverage(labels, audio, intents, purpose=purpose, simulated=simulated)}
        (tmp / SET_META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    # Staged next to dest and swapped in atomically (edge.atomic_dir): a crash leaves the old set or the new.
    return replace_dir(dest, populate)


def coverage(labels: list[dict], audio: np.ndarray | None, intents: tuple[str, ...] | None = None,
             clipped: np.ndarray | None = None, seen: set[str] | None = None, purpose: str | None = None,
             simulated: bool = False) -> dict:
    """Per-intent counts and warnings: too few samples, an intent missing, clipped audio.

    ``clipped`` (per sample) replaces the check of ``audio`` when the utterances
    were already looked at one by one; ``seen`` is the intents that count as
    covered (default: the labelled ones). ``purpose`` ("calibration",
    "evaluation" or None for either) picks the size warning; a ``simulated`` set
    counts its clipped utterances without advice about a microphone.
    """
    if purpose not in (None, *PURPOSES):
        raise ValueError(f"purpose {purpose!r}: use one of {PURPOSES} or None")
    counts: dict[str, int] = {}
    for lab in labels:
        key = lab.get("intent") or "unlabelled"
        counts[key] = counts.get(key, 0) + 1
    warnings = []
    n = len(labels)
    if purpose == "calibration" and n < MIN_SAMPLES_WARNING:
        warnings.append(f"only {n} samples; int8 scales want at least {MIN_SAMPLES_WARNING}")
    elif purpose == "evaluation" and n < GATE_RESOLVING_SAMPLES:
        warnings.append(f"only {n} samples; one is worth {100 / max(n, 1):.2f} points, so the INT8 gate's 0.5-point "
                        f"limit needs at least {GATE_RESOLVING_SAMPLES}")
    elif purpose is None and n < MIN_SAMPLES_WARNING:
        warnings.append(f"only {n} samples; int8 scales want at least {MIN_SAMPLES_WARNING} (for "
                        f"calibration; an evaluation set needs {GATE_RESOLVING_SAMPLES} to resolve the INT8 gate's "
                        "0.5 points)")
    covered = set(counts) if seen is None else seen
    for intent in intents or ():
        if intent not in covered:
            warnings.append(f"no sample of intent {intent!r}")
    if clipped is None:
        clipped = np.mean(np.abs(audio) >= CLIP_LEVEL, axis=1) > MAX_CLIPPED_FRACTION
    clipped = np.asarray(clipped, bool)
    if clipped.any() and not simulated:
        warnings.append(f"{int(clipped.sum())} utterances are clipped (more than {100 * MAX_CLIPPED_FRACTION:.1f} % "
                        "of samples at full scale); lower the microphone gain")
    return {"n_samples": len(labels), "per_intent": counts, "clipped_utterances": int(clipped.sum()),
            "warnings": warnings}


def model_feed(images, audio, manifest) -> dict[str, np.ndarray]:
    """Set-format samples -> the model's feed, as the robot feeds it.

    Args:
        images: RGB frames, each H x W x 3 uint8 (a list or an [N, H, W, 3] array).
        audio: utterances, each exactly ``preprocessing.audio_window_samples`` long.
        manifest: the bundle's (or the conversion config's) ``Manifest``: ``inputs[0]``
            is the image, ``inputs[1]`` the audio.

    Returns:
        ``{inputs[0].name: images, inputs[1].name: audio}``, the images converted by
        ``edge.contract.image.prepare_image`` (resized to the model's size with INTER_AREA,
        then the manifest's colour order and layout), each in its input's dtype.
    """
    from edge.bundle import numpy_dtype
    from edge.contract.image import ImageFormatError, prepare_image

    if len(manifest.inputs) != 2:
        raise CalibrationError(f"the model must take two inputs, the camera image then the audio; its manifest "
                               f"lists {[t.name for t in manifest.inputs]}")
    image_spec, audio_spec = manifest.inputs
    pre = manifest.preprocessing
    if len(images) != len(audio) or len(images) == 0:
        raise CalibrationError(f"a feed needs as many frames as utterances, at least one; got {len(images)} "
                               f"frames and {len(audio)} utterances")
    try:
        frames = np.concatenate([prepare_image(np.asarray(img), pre) for img in images])
    except ImageFormatError as exc:
        raise CalibrationError(str(exc)) from exc
    windows = np.stack([np.asarray(a, np.float32) for a in audio])
    if windows.ndim != 2 or windows.shape[1] != pre.audio_window_samples:
        raise CalibrationError(f"utterances must be 1-D, {pre.audio_window_samples} samples (the model's window) "
                               f"each; got {list(windows.shape)}")
    return {image_spec.name: frames.astype(numpy_dtype(image_spec.dtype), copy=False),
            audio_spec.name: windows.astype(numpy_dtype(audio_spec.dtype), copy=False)}


def feed_size(feed: dict[str, np.ndarray]) -> int:
    """How many samples a feed holds."""
    return len(next(iter(feed.values())))


@dataclass(frozen=True)
class SampleSet:
    """A set read from disk (index only; samples are loaded in batches)."""

    path: Path
    records: tuple[SampleRecord, ...]
    meta: dict

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, i: int, kind: str) -> tuple[bytes, Path]:
        """The bytes of sample ``i``'s ``kind`` file ("image" or "audio"), checked against its sha256."""
        rec = self.records[i]
        p = self.path / getattr(rec, kind)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CalibrationError(f"sample {rec.id}: cannot read {p} ({exc})") from exc
        if hashlib.sha256(data).hexdigest() != rec.sha256.get(kind):
            raise CalibrationError(f"sample {rec.id}: {p} does not match its sha256 in {INDEX_NAME}")
        return data, p

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(RGB image, audio, sample rate) of sample ``i``, checked against its sha256."""
        (png, png_path), (wav, wav_path) = self._read(i, "image"), self._read(i, "audio")
        image = _decode_png(png, str(png_path))
        audio, rate = _decode_wav(wav, str(wav_path))
        return image, audio, rate

    def load_audio(self, i: int) -> tuple[np.ndarray, int]:
        """(audio, sample rate) of sample ``i``, checked against its sha256; the frame is not read."""
        data, p = self._read(i, "audio")
        return _decode_wav(data, str(p))

    def feeds(self, manifest, batch_size: int = 64) -> Iterator[dict[str, np.ndarray]]:
        """The set as the model's input, in batches of ``batch_size`` (``model_feed`` per batch).

        Frames larger than the model's input are resized to it, as the robot
        resizes its camera frames; smaller ones are refused (a set made for a
        smaller model), as is audio at another rate or of another length.
        """
        pre = manifest.preprocessing
        for start in range(0, len(self), batch_size):
            images, audio = [], []
            for i in range(start, min(start + batch_size, len(self))):
                img, wav, rate = self.load(i)
                rec = self.records[i]
                if img.shape[0] < pre.image_height or img.shape[1] < pre.image_width:
                    raise CalibrationError(f"sample {rec.id}: frame is {img.shape[1]}x{img.shape[0]}, the model "
                                           f"takes {pre.image_width}x{pre.image_height} (larger frames are "
                                           "resized, smaller ones are not enlarged)")
                if rate != pre.audio_sample_rate_hz or len(wav) != pre.audio_window_samples:
                    raise CalibrationError(f"sample {rec.id}: audio is {len(wav)} samples at {rate} Hz, the model "
                                           f"takes {pre.audio_window_samples} at {pre.audio_sample_rate_hz} Hz")
                images.append(img)
                audio.append(wav)
            yield model_feed(images, audio, manifest)

    def coverage(self, intents: tuple[str, ...] | None = None, purpose: str | None = None) -> dict:
        """``coverage`` (the statistics and warnings ``write_set`` puts in ``set.json``), recomputed from the
        samples, so a set from any source (make-set, import-set, the robot's audit log) gets the same warnings.
        ``purpose`` defaults to the one the set was written for (``set.json``).

        An unlabelled sample counts for the intent the robot decided (an audit log's
        ``decision``) when checking which of ``intents`` the set lacks; when no sample
        has a label or a decision, that check is skipped.
        """
        labels = [{"intent": r.intent} for r in self.records]
        clipped = np.zeros(len(self), bool)
        for i in range(len(self)):
            wav, _ = self.load_audio(i)
            clipped[i] = np.mean(np.abs(wav) >= CLIP_LEVEL) > MAX_CLIPPED_FRACTION if wav.size else False
        seen = {r.intent or (r.decision or {}).get("intent") for r in self.records} - {None}
        return coverage(labels, None, intents if seen else None, clipped=clipped, seen=seen,
                        purpose=purpose or self.meta.get("purpose"), simulated=bool(self.meta.get("simulated")))

    def batches(self, batch_size: int, image_hw: tuple[int, int], window_samples: int,
                sample_rate: int = SAMPLE_RATE_HZ) -> Iterator[dict[str, np.ndarray]]:
        """The samples as stored, in batches ``{"image": uint8 [N, H, W, 3] RGB, "audio": float32 [N, S]}``.

        For training and inspection: this is the set format, not a model's input
        (names, layout and colour order differ between models); a model takes
        ``feeds``. Every sample must have exactly this size.
        """
        for start in range(0, len(self), batch_size):
            images, audio = [], []
            for i in range(start, min(start + batch_size, len(self))):
                img, wav, rate = self.load(i)
                rec = self.records[i]
                if img.shape[:2] != tuple(image_hw):
                    raise CalibrationError(f"sample {rec.id}: frame is {img.shape[1]}x{img.shape[0]}, the model "
                                           f"takes {image_hw[1]}x{image_hw[0]}")
                if rate != sample_rate or len(wav) != window_samples:
                    raise CalibrationError(f"sample {rec.id}: audio is {len(wav)} samples at {rate} Hz, the model "
                                           f"takes {window_samples} at {sample_rate} Hz")
                images.append(img)
                audio.append(wav)
            yield {"image": np.stack(images), "audio": np.stack(audio)}


def read_set(path: str | Path) -> SampleSet:
    """Open a set directory and validate its index."""
    path = Path(path)
    index = path / INDEX_NAME
    if not index.is_file():
        raise CalibrationError(f"{path} is not a sample set (no {INDEX_NAME}); write one with calibration.sampleset")
    records = []
    for n, line in enumerate(index.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(SampleRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise CalibrationError(f"{index}:{n}: not a valid sample record ({exc})") from exc
    if not records:
        raise CalibrationError(f"{index} lists no samples; a set needs at least one")
    meta_path = path / SET_META_NAME
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{meta_path}: not valid JSON ({exc}); delete it to read the set without it") from exc
    if not isinstance(meta, dict):
        raise CalibrationError(f"{meta_path}: must hold a JSON object; delete it to read the set without it")
    return SampleSet(path, tuple(records), meta)
