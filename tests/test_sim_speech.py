"""Tests for sim.speech (uses the real espeak-ng)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sim import speech
from sim.errors import EspeakNotFoundError, SimError, SynthesisError
from sim.speech import (
    BASE_VOICES,
    HELD_OUT_METHOD_VARIANTS,
    SAMPLE_RATE_HZ,
    VARIANTS,
    SpeechRequest,
    Voice,
    place_in_window,
    random_request,
    synthesize,
    synthesize_many,
    voice_split,
)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

TEXT = "go to the red ball"


def _espeak_data_dir() -> Path:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Data at:\s*(\S+)", out)
    assert match, out
    return Path(match.group(1))


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


# --------------------------------------------------------------------------- synthesis


def test_synthesize_basic_audio():
    audio = synthesize(SpeechRequest(TEXT, Voice("en-us", "m3"), rate_wpm=160))
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert 0.6 <= audio.size / SAMPLE_RATE_HZ <= 2.0
    assert np.all(np.abs(audio) <= 1.0)
    rms = float(np.sqrt(np.mean(audio**2)))
    assert rms > 0.01
    # Trimmed: speech starts and ends within the margin (plus a little slack).
    margin = int(0.05 * SAMPLE_RATE_HZ)
    assert np.abs(audio[:margin]).max() > 1e-3
    assert np.abs(audio[-margin:]).max() > 1e-3


def test_synthesize_is_deterministic():
    req = SpeechRequest(TEXT, Voice("en-gb-x-rp", "f2"))
    assert np.array_equal(synthesize(req), synthesize(req))


def test_voices_and_rates_differ():
    a = synthesize(SpeechRequest(TEXT, Voice("en-us", "m3")))
    b = synthesize(SpeechRequest(TEXT, Voice("en-us", "f2")))
    c = synthesize(SpeechRequest(TEXT, Voice("en-gb-scotland", "m3")))
    assert len({_digest(a), _digest(b), _digest(c)}) == 3
    slow = synthesize(SpeechRequest(TEXT, Voice("en-us"), rate_wpm=120))
    fast = synthesize(SpeechRequest(TEXT, Voice("en-us"), rate_wpm=300))
    assert fast.size < 0.75 * slow.size


@pytest.mark.parametrize("base", BASE_VOICES)
def test_every_variant_changes_the_voice(base):
    # Guards against espeak-ng silently ignoring "+variant" (it does for "en-gb").
    reqs = [SpeechRequest("hello world", Voice(base, v)) for v in (None, *VARIANTS)]
    digests = {_digest(a) for a in synthesize_many(reqs, workers=4)}
    assert len(digests) == len(reqs)


def test_word_gap_and_pitch_are_applied():
    base = synthesize(SpeechRequest(TEXT, Voice("en-us")))
    gapped = synthesize(SpeechRequest(TEXT, Voice("en-us"), word_gap_10ms=10))
    assert gapped.size > base.size + 0.2 * SAMPLE_RATE_HZ
    high = synthesize(SpeechRequest(TEXT, Voice("en-us"), pitch=90))
    assert _digest(high) != _digest(base)


def test_text_is_not_parsed_as_options():
    audio = synthesize(SpeechRequest("--version -v xx", Voice("en-us")))
    assert audio.size > 0.3 * SAMPLE_RATE_HZ


def test_synthesize_many_keeps_order_and_reports_progress():
    texts = ["stop", "go forward", "turn left", "pick up the blue cube", "halt"]
    reqs = [SpeechRequest(t, Voice("en-us", "m1")) for t in texts]
    calls = []
    out = synthesize_many(reqs, workers=3, progress=lambda d, t: calls.append((d, t)))
    assert len(out) == len(reqs)
    for req, audio in zip(reqs, out):
        assert np.array_equal(audio, synthesize(req))
    assert calls[-1] == (5, 5) and len(calls) == 5
    assert synthesize_many([], workers=2) == []
    with pytest.raises(ValueError, match="workers"):
        synthesize_many(reqs, workers=0)


# --------------------------------------------------------------------------- cache


def test_cache_hit_skips_espeak(tmp_path, monkeypatch):
    req = SpeechRequest(TEXT, Voice("en-us", "f1"))
    first = synthesize(req, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    assert re.fullmatch(r"[0-9a-f]{64}\.npy", files[0].name)
    assert not list(tmp_path.glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("espeak-ng must not run on a cache hit")

    monkeypatch.setattr(speech, "_run_espeak", fail)
    second = synthesize(req, cache_dir=tmp_path)
    assert second.dtype == np.float32
    assert np.array_equal(first, second)


def test_cache_keys_differ_per_request(tmp_path):
    synthesize(SpeechRequest(TEXT, Voice("en-us")), cache_dir=tmp_path)
    synthesize(SpeechRequest(TEXT, Voice("en-us"), rate_wpm=161), cache_dir=tmp_path)
    synthesize(SpeechRequest(TEXT, Voice("en-us", "m1")), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3


@pytest.mark.parametrize("garbage", [b"", b"not a numpy file", b"\x93NUMPY\x01\x00v\x00{'descr'"])
def test_corrupt_cache_is_regenerated(tmp_path, garbage):
    req = SpeechRequest(TEXT, Voice("en-us", "f3"))
    good = synthesize(req, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(garbage)
    again = synthesize(req, cache_dir=tmp_path)
    assert np.array_equal(good, again)
    assert np.array_equal(np.load(path), good)


def test_cache_with_wrong_dtype_is_regenerated(tmp_path):
    req = SpeechRequest(TEXT, Voice("en-us", "f3"))
    good = synthesize(req, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    np.save(path, good.astype(np.float64))
    assert synthesize(req, cache_dir=tmp_path).dtype == np.float32


def test_synthesize_many_with_cache(tmp_path):
    reqs = [SpeechRequest(t, Voice("en-029", "m2")) for t in ("stop", "drop it", "release", "stop")]
    a = synthesize_many(reqs, cache_dir=tmp_path, workers=2)
    assert len(list(tmp_path.glob("*.npy"))) == 3
    b = synthesize_many(reqs, cache_dir=tmp_path, workers=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------- errors


def test_missing_espeak_raises_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    speech.espeak_version.cache_clear()
    try:
        with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng") as info:
            synthesize(SpeechRequest(TEXT, Voice("en-us")))
        assert "make" in str(info.value)
        with pytest.raises(EspeakNotFoundError):
            synthesize(SpeechRequest(TEXT, Voice("en-us")), cache_dir=tmp_path)
        assert isinstance(info.value, SimError)
    finally:
        speech.espeak_version.cache_clear()


def test_espeak_failure_raises_synthesis_error(monkeypatch):
    def failing_run(args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout=b"", stderr=b"boom: voice broken")

    monkeypatch.setattr(speech.subprocess, "run", failing_run)
    with pytest.raises(SynthesisError, match="boom: voice broken"):
        synthesize(SpeechRequest(TEXT, Voice("en-us")))


def test_empty_output_raises_synthesis_error(monkeypatch):
    def empty_run(args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=b"", stderr=b"nothing said")

    monkeypatch.setattr(speech.subprocess, "run", empty_run)
    with pytest.raises(SynthesisError, match="no audio"):
        synthesize(SpeechRequest(TEXT, Voice("en-us")))


def test_silent_output_raises_synthesis_error():
    # Amplitude 0 makes espeak-ng write a valid WAV of pure silence.
    with pytest.raises(SynthesisError, match="silence"):
        synthesize(SpeechRequest(TEXT, Voice("en-us"), amplitude=0))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"text": ""}, "empty"),
        ({"text": "   "}, "empty"),
        ({"text": "go\nforward"}, "control"),
        ({"text": "stop\x00"}, "control"),
        ({"rate_wpm": 79}, "rate_wpm=79"),
        ({"rate_wpm": 451}, "rate_wpm=451"),
        ({"pitch": -1}, "pitch=-1"),
        ({"pitch": 100}, "pitch=100"),
        ({"amplitude": 201}, "amplitude=201"),
        ({"word_gap_10ms": -1}, "word_gap_10ms=-1"),
        ({"text": "x" * 1001}, "1001"),
    ],
)
def test_request_validation(kwargs, pattern):
    args = {"text": TEXT, "voice": Voice("en-us")} | kwargs
    with pytest.raises(ValueError, match=pattern):
        SpeechRequest(**args)


def test_request_type_validation():
    with pytest.raises(TypeError, match="rate_wpm"):
        SpeechRequest(TEXT, Voice("en-us"), rate_wpm=160.5)
    with pytest.raises(TypeError, match="voice"):
        SpeechRequest(TEXT, "en-us")  # type: ignore[arg-type]


def test_voice_validation_and_name():
    assert Voice("en-us", "m3").espeak_name == "en-us+m3"
    assert Voice("en-us").espeak_name == "en-us"
    assert Voice("en-gb-x-rp", "Andy").espeak_name == "en-gb-x-rp+Andy"
    with pytest.raises(ValueError, match="'en-xx'"):
        Voice("en-xx")
    with pytest.raises(ValueError, match="'whisper'"):
        Voice("en-us", "whisper")
    with pytest.raises(ValueError, match="'mb-us1'"):
        Voice("mb-us1")


def test_random_request_ranges():
    voices = voice_split()["train"]
    rng = np.random.default_rng(0)
    reqs = [random_request(rng, TEXT, voices) for _ in range(300)]
    assert all(120 <= r.rate_wpm <= 220 for r in reqs)
    assert all(20 <= r.pitch <= 80 for r in reqs)
    assert all(0 <= r.word_gap_10ms <= 3 for r in reqs)
    assert all(r.voice in voices and r.text == TEXT for r in reqs)
    assert len({r.voice for r in reqs}) > 30
    again = [random_request(np.random.default_rng(0), TEXT, voices) for _ in range(1)]
    assert again[0] == reqs[0]
    with pytest.raises(ValueError, match="empty"):
        random_request(rng, TEXT, [])


# --------------------------------------------------------------------------- voice split


def test_voice_split_is_disjoint_and_complete():
    split = voice_split()
    assert set(split) == {"train", "val", "test"}
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == len(BASE_VOICES) * (len(VARIANTS) + 1)
    assert voice_split() == split  # deterministic

    def parts(voices):
        return {v.base for v in voices}, {v.variant for v in voices}

    train_bases, train_variants = parts(train)
    val_bases, val_variants = parts(val)
    test_bases, test_variants = parts(test)
    # The Klatt synthesis method is never heard in training (it validates generalisation).
    assert not train_variants & set(HELD_OUT_METHOD_VARIANTS)
    assert set(HELD_OUT_METHOD_VARIANTS) <= val_variants | test_variants
    # Held out entirely: accents and variants never heard in training.
    assert len(test_bases - train_bases - val_bases) >= 1
    assert len(test_variants - train_variants - val_variants) >= 3
    assert len(val_bases - train_bases) >= 1 or len(val_variants - train_variants) >= 1
    assert len(val_variants - train_variants) >= 2
    # Every test/val voice has a base or variant unseen in training.
    for v in test | val:
        assert v.base not in train_bases or v.variant not in train_variants
    # Training is still varied.
    assert len(train_bases) >= 4 and len(train_variants) >= 20
    assert len(train) >= 100


def test_all_listed_voices_exist_in_espeak_data():
    data = _espeak_data_dir()
    for variant in VARIANTS:
        assert (data / "voices" / "!v" / variant).is_file(), variant
    listing = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    languages = {line.split()[1] for line in listing.splitlines()[1:] if line.split()}
    for base in BASE_VOICES:
        assert base in languages, base


# --------------------------------------------------------------------------- windowing


def test_place_in_window_offsets():
    audio = np.linspace(0.1, 0.5, 8000, dtype=np.float32)
    out, start = place_in_window(audio, offset=1234)
    assert out.shape == (32000,) and out.dtype == np.float32 and start == 1234
    assert np.array_equal(out[1234 : 1234 + 8000], audio)
    assert not out[:1234].any() and not out[1234 + 8000 :].any()

    out, start = place_in_window(audio)
    assert start == 12000  # centred without rng/offset

    starts = {place_in_window(audio, rng=np.random.default_rng(s))[1] for s in range(50)}
    assert len(starts) > 40 and min(starts) >= 0 and max(starts) <= 24000
    assert place_in_window(audio, rng=np.random.default_rng(7))[1] == place_in_window(
        audio, rng=np.random.default_rng(7)
    )[1]

    out, start = place_in_window(audio, offset=24000)
    assert out[-1] == audio[-1]
    with pytest.raises(ValueError, match="0..24000"):
        place_in_window(audio, offset=24001)
    with pytest.raises(ValueError, match="0..24000"):
        place_in_window(audio, offset=-1)


def test_place_in_window_crops_long_audio_keeping_start():
    audio = np.arange(40000, dtype=np.float32) / 40000
    out, start = place_in_window(audio, window_samples=32000, rng=np.random.default_rng(0))
    assert start == 0 and out.shape == (32000,)
    assert np.array_equal(out, audio[:32000])
    with pytest.raises(ValueError, match="cropped"):
        place_in_window(audio, offset=5)
    with pytest.raises(ValueError, match="1-D"):
        place_in_window(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="window_samples"):
        place_in_window(audio, window_samples=0)


def test_real_utterance_fits_window():
    audio = synthesize(SpeechRequest("robot, pick up the yellow cone", Voice("en-us", "f1"), rate_wpm=200))
    assert audio.size < 32000
    out, start = place_in_window(audio, rng=np.random.default_rng(1))
    assert out.shape == (32000,)
    assert np.array_equal(out[start : start + audio.size], audio)
