"""Spoken commands rendered with the real espeak-ng synthesizer.

``synthesize`` turns a ``SpeechRequest`` (text + voice + prosody) into float32
mono audio at ``SAMPLE_RATE_HZ``, optionally cached on disk so that datasets
of thousands of utterances are synthesized only once. ``voice_split`` gives the
train/val/test voice sets, with held-out voices so that evaluation measures
generalisation to speakers the model never heard.

Nothing runs at import time: espeak-ng is looked up on the first synthesis.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES  # noqa: F401 (re-exported)
from edge.contract.wav import resample
from sim.errors import EspeakNotFoundError, SynthesisError

__all__ = [
    "BASE_VOICES", "CACHE_FORMAT_VERSION", "HELD_OUT_METHOD_VARIANTS", "SAMPLE_RATE_HZ", "SPLITS", "TEST_ONLY_BASES",
    "TEST_ONLY_VARIANTS", "VAL_ONLY_BASES", "VAL_ONLY_VARIANTS", "VARIANTS", "WINDOW_SAMPLES",
    "SpeechRequest", "Voice", "cache_key", "espeak_version", "place_in_window", "random_request",
    "synthesize", "synthesize_many", "trim_silence", "voice_split",
]  # fmt: skip

ESPEAK_EXECUTABLE = "espeak-ng"
ESPEAK_TIMEOUT_S = 30.0  # one short utterance takes ~15 ms; anything near this is a hang
ESPEAK_VERSION_TIMEOUT_S = 10.0
INSTALL_HINT = (
    "Install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) or run `make` in the "
    "repository root, which installs it; then make sure `espeak-ng` is on PATH."
)

# Bump whenever the post-processing (resampling, trimming, dtype) changes, so
# that stale cache entries are never reused.
CACHE_FORMAT_VERSION = 1

# Silence trimming: a sample is "sound" if |x| exceeds this fraction of the
# utterance peak (-40 dB) or the absolute floor, whichever is larger; the
# margin keeps the soft onset/decay of the first and last phonemes.
TRIM_RELATIVE_THRESHOLD = 10 ** (-40 / 20)
TRIM_ABSOLUTE_THRESHOLD = 10 ** (-60 / 20)  # -60 dBFS
TRIM_MARGIN_S = 0.030

# Request limits (espeak-ng's own ranges, narrowed to intelligible speech).
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450
MIN_PITCH, MAX_PITCH = 0, 99
MIN_AMPLITUDE, MAX_AMPLITUDE = 0, 200
MIN_WORD_GAP_10MS, MAX_WORD_GAP_10MS = 0, 100  # units of 10 ms: 0..1 s
MAX_TEXT_CHARS = 1000

# random_request ranges (inclusive): a normal-sounding spread of speakers.
RANDOM_RATE_WPM = (120, 220)
RANDOM_PITCH = (20, 80)
RANDOM_WORD_GAP_10MS = (0, 3)

# espeak-ng's own English voices (data/lang/gmw/en*). The mbrola voices are
# deliberately excluded: mbrola is not installed on our machines.
BASE_VOICES: tuple[str, ...] = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

# Curated from espeak-ng-data/voices/!v: variants that modify formants/pitch
# towards a normal human voice. Left out on purpose: whisper/whisperf (no
# voicing), croak, Demonic, Tweaky, UniRobot, anikaRobot, robosoft*, announcer,
# caleb (breath only), grandpa/aunty (heavy flutter), zac (pitch ~300 Hz
# "chipmunk"), Lee/Jacky/victor/shelby (formants zeroed or pushed far off),
# "Mr serious" (space in the name) and the klatt4..6 engines.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3",
    "Alex", "Andy", "Annie", "Gene", "Michael", "Mike",
    "adam", "belinda", "benjamin", "david", "edward", "john", "linda",
    "max", "michel", "paul", "quincy", "rob", "robert", "steph",
)  # fmt: skip

# Held-out speakers (see voice_split). Chosen by hand so that each held-out
# set mixes male, female and klatt-engine voices.
TEST_ONLY_BASES: tuple[str, ...] = ("en-029", "en-gb-x-gbcwmd")
VAL_ONLY_BASES: tuple[str, ...] = ("en-us-nyc",)
TEST_ONLY_VARIANTS: tuple[str, ...] = ("m7", "f4", "klatt3", "belinda", "michel", "quincy", "adam")
VAL_ONLY_VARIANTS: tuple[str, ...] = ("m6", "f5", "Mike", "benjamin")
# espeak-ng's Klatt variants make their waveform with another synthesis method (a
# Klatt cascade/parallel formant synthesizer instead of espeak-ng's own). They are
# never trained on: validation on them measures generalisation to a synthesis
# method the model never heard, not only to unseen voices of the one it learned.
HELD_OUT_METHOD_VARIANTS: tuple[str, ...] = ("klatt", "klatt2", "klatt3")

SPLITS: tuple[str, ...] = ("train", "val", "test")

# espeak-ng 1.51 silently ignores "+variant" after "en-gb" (that name is
# resolved as a language, not a voice file), so "en-gb+f2" sounds exactly like
# "en-gb". "en" names the same voice file (gmw/en) and honours variants.
_ESPEAK_BASE_NAMES: dict[str, str] = {"en-gb": "en"}


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: an English base accent plus an optional variant."""

    base: str
    variant: str | None = None

    def __post_init__(self) -> None:
        if self.base not in BASE_VOICES:
            raise ValueError(
                f"unknown base voice {self.base!r}; use one of espeak-ng's English voices {BASE_VOICES}"
            )
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(
                f"unknown voice variant {self.variant!r}; use None or one of the curated variants "
                f"sim.speech.VARIANTS ({len(VARIANTS)} names, e.g. 'm3', 'f2', 'klatt')"
            )

    @property
    def espeak_name(self) -> str:
        """The ``-v`` argument for espeak-ng, e.g. ``"en-us+m3"`` (``en-gb`` is spelled ``"en"``)."""
        base = _ESPEAK_BASE_NAMES.get(self.base, self.base)
        return base if self.variant is None else f"{base}+{self.variant}"


def voice_split() -> dict[str, tuple[Voice, ...]]:
    """Split all (base, variant) voices into disjoint train/val/test sets.

    Rule: every pair of BASE_VOICES x (None + VARIANTS) goes to exactly one set:
    ``test`` if its base is in TEST_ONLY_BASES or its variant in
    TEST_ONLY_VARIANTS; otherwise ``val`` if its base is in VAL_ONLY_BASES or
    its variant in VAL_ONLY_VARIANTS or HELD_OUT_METHOD_VARIANTS; otherwise
    ``train``. So neither a held-out accent, nor a held-out variant, nor the
    Klatt synthesis method is ever heard in training, and
    test voices are unseen in val too. Order is deterministic (base-major, in
    the order of the constant tuples).

    Returns:
        ``{"train": (...), "val": (...), "test": (...)}``.
    """
    out: dict[str, list[Voice]] = {name: [] for name in SPLITS}
    for base in BASE_VOICES:
        for variant in (None, *VARIANTS):
            if base in TEST_ONLY_BASES or variant in TEST_ONLY_VARIANTS:
                split = "test"
            elif base in VAL_ONLY_BASES or variant in VAL_ONLY_VARIANTS or variant in HELD_OUT_METHOD_VARIANTS:
                split = "val"
            else:
                split = "train"
            out[split].append(Voice(base, variant))
    return {name: tuple(voices) for name, voices in out.items()}


def _check_int_range(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; True as a rate is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if not low <= value <= high:
        raise ValueError(f"{name}={value!r} is out of range; use {low}..{high}")


@dataclass(frozen=True)
class SpeechRequest:
    """Everything that determines one synthesized utterance.

    Args:
        text: what to say; plain text (no SSML), no control characters.
        voice: the espeak-ng voice.
        rate_wpm: speaking rate in words per minute (espeak-ng ``-s``).
        pitch: base pitch 0..99 (espeak-ng ``-p``; 50 is the voice's default).
        amplitude: loudness 0..200 (espeak-ng ``-a``; 100 is the default).
        word_gap_10ms: extra pause between words in units of 10 ms (``-g``).
    """

    text: str
    voice: Voice
    rate_wpm: int = 160
    pitch: int = 50
    amplitude: int = 100
    word_gap_10ms: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be a str, got {self.text!r} ({type(self.text).__name__})")
        if not self.text.strip():
            raise ValueError(f"text {self.text!r} is empty; give at least one word to say")
        if len(self.text) > MAX_TEXT_CHARS:
            raise ValueError(
                f"text is {len(self.text)} characters long; split it into utterances of at most "
                f"{MAX_TEXT_CHARS}"
            )
        bad = [c for c in self.text if unicodedata.category(c) == "Cc"]
        if bad:
            raise ValueError(
                f"text {self.text!r} contains control characters {bad!r}; use plain single-line text"
            )
        if not isinstance(self.voice, Voice):
            raise TypeError(f"voice must be a sim.speech.Voice, got {self.voice!r}")
        _check_int_range("rate_wpm", self.rate_wpm, MIN_RATE_WPM, MAX_RATE_WPM)
        _check_int_range("pitch", self.pitch, MIN_PITCH, MAX_PITCH)
        _check_int_range("amplitude", self.amplitude, MIN_AMPLITUDE, MAX_AMPLITUDE)
        _check_int_range("word_gap_10ms", self.word_gap_10ms, MIN_WORD_GAP_10MS, MAX_WORD_GAP_10MS)

    def cache_fields(self) -> dict[str, object]:
        """The request as plain JSON-able values (used for the cache key)."""
        return {
            "text": self.text,
            "voice": self.voice.espeak_name,
            "rate_wpm": int(self.rate_wpm),
            "pitch": int(self.pitch),
            "amplitude": int(self.amplitude),
            "word_gap_10ms": int(self.word_gap_10ms),
        }


def random_request(rng: np.random.Generator, text: str, voices: Sequence[Voice]) -> SpeechRequest:
    """Draw a voice and prosody for ``text`` (rate 120..220 wpm, pitch 20..80, gap 0..3).

    Raises:
        ValueError: if ``voices`` is empty.
    """
    if len(voices) == 0:
        raise ValueError("voices is empty; pass e.g. voice_split()['train']")
    voice = voices[int(rng.integers(len(voices)))]
    return SpeechRequest(
        text=text,
        voice=voice,
        rate_wpm=int(rng.integers(RANDOM_RATE_WPM[0], RANDOM_RATE_WPM[1] + 1)),
        pitch=int(rng.integers(RANDOM_PITCH[0], RANDOM_PITCH[1] + 1)),
        word_gap_10ms=int(rng.integers(RANDOM_WORD_GAP_10MS[0], RANDOM_WORD_GAP_10MS[1] + 1)),
    )


# --------------------------------------------------------------------------- espeak-ng


def _espeak_executable() -> str:
    """Path of espeak-ng on PATH.

    Raises:
        EspeakNotFoundError: if it is not installed.
    """
    path = shutil.which(ESPEAK_EXECUTABLE)
    if path is None:
        raise EspeakNotFoundError(f"{ESPEAK_EXECUTABLE} was not found on PATH. {INSTALL_HINT}")
    return path


@functools.cache
def espeak_version(executable: str | None = None) -> str:
    """The ``espeak-ng --version`` line (cached per process and executable).

    Raises:
        EspeakNotFoundError: if espeak-ng is not installed.
        SynthesisError: if ``--version`` fails.
    """
    exe = executable or _espeak_executable()
    try:
        proc = subprocess.run(
            [exe, "--version"], capture_output=True, timeout=ESPEAK_VERSION_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise EspeakNotFoundError(f"{exe} could not be run ({exc}). {INSTALL_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"`{exe} --version` timed out after {ESPEAK_VERSION_TIMEOUT_S} s") from exc
    text = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not text:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        raise SynthesisError(f"`{exe} --version` failed with exit code {proc.returncode}: {stderr!r}")
    return text


def _run_espeak(request: SpeechRequest) -> bytes:
    """Run espeak-ng for ``request`` and return the WAV bytes it wrote to stdout."""
    exe = _espeak_executable()
    args = [
        exe,
        "-v", request.voice.espeak_name,
        "-s", str(int(request.rate_wpm)),
        "-p", str(int(request.pitch)),
        "-a", str(int(request.amplitude)),
        "-g", str(int(request.word_gap_10ms)),
        "--stdout",
        "--stdin",  # text goes via stdin so it can never be parsed as an option
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            args,
            input=request.text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise EspeakNotFoundError(f"{exe} could not be run ({exc}). {INSTALL_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(
            f"espeak-ng timed out after {ESPEAK_TIMEOUT_S} s for {request.text!r} "
            f"(voice {request.voice.espeak_name})"
        ) from exc
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise SynthesisError(
            f"espeak-ng exited with code {proc.returncode} for {request.text!r} "
            f"(voice {request.voice.espeak_name}): {stderr!r}"
        )
    if not proc.stdout:
        raise SynthesisError(
            f"espeak-ng wrote no audio for {request.text!r} (voice {request.voice.espeak_name}): {stderr!r}"
        )
    return proc.stdout


def _decode_wav(data: bytes, request: SpeechRequest) -> tuple[np.ndarray, int]:
    """Parse espeak-ng's WAV into float32 mono in [-1, 1] and its sample rate.

    When writing to a pipe espeak-ng cannot seek back to fix the header, so the declared frame count is
    a huge placeholder: whatever is actually there is read (``exact_length=False``).
    """
    from edge.contract.wav import WavError, decode_wav

    try:
        return decode_wav(data, exact_length=False)
    except WavError as exc:
        raise SynthesisError(f"espeak-ng output for {request.text!r} is not a usable WAV file ({exc})") from exc


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Cut leading/trailing silence, keeping a TRIM_MARGIN_S margin on each side.

    Returns an empty array if nothing exceeds the absolute threshold.
    """
    mag = np.abs(audio)
    if mag.size == 0:
        return audio
    threshold = max(TRIM_ABSOLUTE_THRESHOLD, float(mag.max()) * TRIM_RELATIVE_THRESHOLD)
    loud = np.flatnonzero(mag > threshold)
    if loud.size == 0:
        return audio[:0]
    margin = int(round(TRIM_MARGIN_S * sample_rate))
    start = max(0, int(loud[0]) - margin)
    stop = min(audio.size, int(loud[-1]) + 1 + margin)
    return audio[start:stop]


def _synthesize_uncached(request: SpeechRequest) -> np.ndarray:
    pcm, rate = _decode_wav(_run_espeak(request), request)
    # the training corpus's filter (edge.contract.wav.resample explains why it is not soxr yet)
    audio = trim_silence(resample(pcm, int(rate), SAMPLE_RATE_HZ, method="polyphase"))
    if audio.size == 0:
        raise SynthesisError(
            f"espeak-ng produced only silence for {request.text!r} (voice {request.voice.espeak_name})"
        )
    # Resampling can overshoot full scale by a hair on loud (amplitude 200) speech.
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- cache


def cache_key(request: SpeechRequest, version: str) -> str:
    """Hex sha256 naming the cache file for ``request`` under espeak-ng ``version``."""
    payload = {
        "request": request.cache_fields(),
        "espeak_version": version,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "cache_format_version": CACHE_FORMAT_VERSION,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=True).encode("ascii")
    return hashlib.sha256(blob).hexdigest()


def _load_cached(path: Path) -> np.ndarray | None:
    """The cached array, or None if missing or unusable (so it gets regenerated)."""
    try:
        audio = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):
        return None  # truncated/corrupt (e.g. written by an older, non-atomic tool)
    if not isinstance(audio, np.ndarray) or audio.dtype != np.float32 or audio.ndim != 1 or audio.size == 0:
        return None
    if not np.all(np.isfinite(audio)):
        return None
    return audio


def _store_atomic(path: Path, audio: np.ndarray) -> None:
    """Write ``audio`` to ``path`` so readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, audio, allow_pickle=False)
        os.replace(tmp_name, path)  # atomic on POSIX and Windows within one directory
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise


def synthesize(request: SpeechRequest, cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Speak ``request`` with espeak-ng.

    Args:
        request: text, voice and prosody.
        cache_dir: if given, results are read from / written to
            ``cache_dir/<cache_key>.npy``; a corrupt entry is regenerated.

    Returns:
        float32 mono audio in [-1, 1] at SAMPLE_RATE_HZ, leading/trailing
        silence trimmed to TRIM_MARGIN_S.

    Raises:
        EspeakNotFoundError: espeak-ng is not installed / not on PATH.
        SynthesisError: espeak-ng failed, timed out or produced no audio.
    """
    if not isinstance(request, SpeechRequest):
        raise TypeError(f"request must be a SpeechRequest, got {request!r}")
    if cache_dir is None:
        return _synthesize_uncached(request)
    path = Path(cache_dir) / f"{cache_key(request, espeak_version(_espeak_executable()))}.npy"
    cached = _load_cached(path)
    if cached is not None:
        return cached
    audio = _synthesize_uncached(request)
    _store_atomic(path, audio)
    return audio


def synthesize_many(
    requests: Sequence[SpeechRequest],
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Synthesize many requests in parallel threads; results are in request order.

    Args:
        requests: what to say.
        cache_dir: as for ``synthesize``.
        workers: number of concurrent espeak-ng processes (threads only wait on
            the subprocess, so the GIL is not a bottleneck).
        progress: called as ``progress(done, total)`` after each utterance,
            from the calling thread.

    Raises:
        ValueError: if ``workers`` < 1.
        EspeakNotFoundError, SynthesisError: as for ``synthesize`` (the first
            failure is raised; pending work is cancelled).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}; use an int >= 1")
    requests = list(requests)
    total = len(requests)
    results: list[np.ndarray | None] = [None] * total
    if total == 0:
        return []
    if cache_dir is not None:
        espeak_version(_espeak_executable())  # fail fast, before starting threads
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(synthesize, req, cache_dir): i for i, req in enumerate(requests)}
        try:
            for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(done, total)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------- windowing


def place_in_window(
    audio: np.ndarray,
    window_samples: int = WINDOW_SAMPLES,
    rng: np.random.Generator | None = None,
    offset: int | None = None,
) -> tuple[np.ndarray, int]:
    """Put an utterance into a zero-padded window of fixed length.

    The start is ``offset`` if given, else uniform over all positions that
    keep the whole utterance inside (drawn from ``rng``), else centred. An
    utterance longer than the window is cropped *keeping its start* (commands
    carry their meaning up front; the tail is usually trailing decay) and
    placed at 0; asking for a non-zero ``offset`` then is an error.

    Returns:
        (float32 window of length ``window_samples``, start index of the utterance).

    Raises:
        ValueError: bad window length, non-1-D audio, or an offset that would
            push the utterance out of the window.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    bad_type = isinstance(window_samples, bool) or not isinstance(window_samples, (int, np.integer))
    if bad_type or window_samples < 1:
        raise ValueError(f"window_samples={window_samples!r}; use a positive int ({WINDOW_SAMPLES} = 2 s at 16 kHz)")
    window_samples = int(window_samples)
    out = np.zeros(window_samples, dtype=np.float32)
    n = audio.size
    if n >= window_samples:
        if offset not in (None, 0):
            raise ValueError(
                f"offset={offset!r} but the audio ({n} samples) does not fit in the "
                f"{window_samples}-sample window; it is cropped and placed at 0"
            )
        out[:] = audio[:window_samples]
        return out, 0
    slack = window_samples - n
    if offset is not None:
        if not 0 <= int(offset) <= slack:
            raise ValueError(
                f"offset={offset!r} is out of range; for {n} samples in a {window_samples}-sample "
                f"window use 0..{slack}"
            )
        start = int(offset)
    elif rng is not None:
        start = int(rng.integers(slack + 1))
    else:
        start = slack // 2
    out[start : start + n] = audio
    return out, start
