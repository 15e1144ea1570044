"""The model contract has one home (``edge/contract``): one sample rate, one window, one vocabulary, one decoder."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Heads
from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES, pad_or_trim
from edge.contract.outputs import decode_outputs
from edge.contract.vocabulary import INTENTS, NONE_INTENT

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "convert", "calibration", "reference_model", "sim", "firmware_bridge", "bench")
CONTRACT = ROOT / "edge" / "contract"
# names only edge/contract may give a value (elsewhere they may only be imported or aliased)
CONTRACT_NAMES = {"SAMPLE_RATE_HZ", "WINDOW_SAMPLES", "INTENTS", "INTENT_INDEX", "NONE_INTENT", "OBJECT_INTENTS",
                  "OBJECT_TYPES", "COLORS", "SHAPES"}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if CONTRACT not in path.parents:
                yield path


def test_no_module_outside_the_contract_writes_the_rate_or_the_window_as_a_number():
    stray = []
    for path in _sources():
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.NUMBER and tok.string.replace("_", "") in (
                    str(SAMPLE_RATE_HZ), str(WINDOW_SAMPLES)):
                stray.append(f"{path.relative_to(ROOT)}:{tok.start[0]}")
    assert not stray, f"use edge.contract.audio's SAMPLE_RATE_HZ / WINDOW_SAMPLES instead of the number: {stray}"


def test_no_module_outside_the_contract_defines_its_names():
    defined = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) and node.value is not None else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id in CONTRACT_NAMES and not isinstance(node.value, ast.Name):
                    defined.append(f"{path.relative_to(ROOT)}:{node.lineno} {t.id}")
    assert not defined, f"import these from edge.contract instead: {defined}"


def test_pad_or_trim_keeps_the_start_of_long_audio_and_centres_short_audio():
    long = np.arange(10, dtype=np.float32)
    assert pad_or_trim(long, 4).tolist() == [0, 1, 2, 3]
    short = pad_or_trim(np.ones(2), 6)
    assert short.dtype == np.float32 and short.tolist() == [0, 0, 1, 1, 0, 0]


def _heads(threshold=0.6):
    return Heads(intent_output="intent", intent_labels=INTENTS, command_threshold=threshold,
                 target_point_output="xy", presence_output="presence")


@pytest.mark.parametrize("best, p, accepted, intent", [
    ("go_to", 0.9, True, "go_to"),
    ("go_to", 0.5, False, NONE_INTENT),  # below the command threshold: the robot does not act
    (NONE_INTENT, 0.9, False, NONE_INTENT),
])
def test_decode_outputs_applies_the_command_threshold(best, p, accepted, intent):
    probs = np.full(len(INTENTS), (1 - p) / (len(INTENTS) - 1))
    probs[INTENTS.index(best)] = p
    out = {"intent": np.log(probs)[None], "xy": np.array([[0.25, 0.75]]), "presence": np.array([[0.0]])}
    d = decode_outputs(out, _heads())
    assert (d.intent, d.model_intent, d.accepted) == (intent, best, accepted)
    assert d.confidence == pytest.approx(p) and sum(d.probabilities.values()) == pytest.approx(1.0)
    assert d.target_xy == (0.25, 0.75) and d.presence == pytest.approx(0.5)


def test_decode_outputs_reads_the_sample_asked_for():
    logits = np.zeros((2, len(INTENTS)))
    logits[1, INTENTS.index("stop")] = 20.0
    out = {"intent": logits, "xy": np.array([[0.1, 0.2], [0.3, 0.4]]), "presence": np.array([[-50.0], [50.0]])}
    d = decode_outputs(out, _heads(), index=1)
    assert d.intent == "stop" and d.target_xy == (0.3, 0.4) and d.presence == pytest.approx(1.0)


def _pcm_wav(frames: bytes, width: int, rate: int = 16000, channels: int = 1) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def test_one_wav_decoder_reads_every_pcm_width_and_float_at_the_same_scale():
    import struct

    from scipy.io import wavfile

    from edge.contract.wav import decode_wav, encode_wav, pcm16

    half = [0.5, -0.5]
    cases = {
        "8-bit": _pcm_wav(bytes([192, 64]), 1),
        "16-bit": _pcm_wav(struct.pack("<2h", 16384, -16384), 2),
        "24-bit": _pcm_wav(b"".join(struct.pack("<i", v)[:3] for v in (4194304, -4194304)), 3),
        "32-bit": _pcm_wav(struct.pack("<2i", 2**30, -(2**30)), 4),
    }
    buf = io.BytesIO()
    wavfile.write(buf, 16000, np.array(half, np.float32))  # WAVE_FORMAT_IEEE_FLOAT: not the stdlib's
    cases["float32"] = buf.getvalue()
    for name, data in cases.items():
        audio, rate = decode_wav(data)
        assert rate == 16000 and audio.dtype == np.float32 and audio.tolist() == half, name
    stereo, _ = decode_wav(_pcm_wav(struct.pack("<4h", 16384, 0, -16384, 0), 2, channels=2))
    assert stereo.tolist() == [0.25, -0.25]  # the channel mean
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    back, _ = decode_wav(encode_wav(x, 16000))
    assert np.max(np.abs(back - x)) <= 1.5 / 32768  # within a step of 16-bit quantisation
    assert np.array_equal(pcm16(back), np.frombuffer(encode_wav(x, 16000)[44:], "<i2"))  # pcm16 gives the samples back


def test_the_header_is_believed_only_when_asked():
    import struct

    from edge.contract.wav import WavError, decode_wav

    data = bytearray(_pcm_wav(struct.pack("<100h", *range(100)), 2))
    placeholder = bytes(data[:40]) + struct.pack("<I", 0x7FFFF000) + bytes(data[44:])  # a pipe's header
    with pytest.raises(WavError, match="s of audio, longer than"):
        decode_wav(placeholder, max_seconds=30)
    audio, _ = decode_wav(placeholder, exact_length=False)  # espeak-ng's output through a pipe
    assert audio.size == 100
    with pytest.raises(WavError, match="header says 100 frames but whose data holds 90"):
        decode_wav(bytes(data[:-20]))


def test_wav_files_are_decoded_in_one_place():
    """bench/bench_predict.py's baseline server is left out: it is the plain Flask app we compare with."""
    readers = []
    for path in _sources():
        if path.parent.name == "bench":
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if "wavfile.read(" in line or ("wave.open(" in line and '"rb"' in line):
                readers.append(f"{path.relative_to(ROOT)}:{n}")
    assert not readers, f"decode WAVs with edge.contract.wav: {readers}"


def test_whole_signals_are_resampled_in_one_place():
    """edge.contract.wav.resample for whole signals (libsoxr; scipy's polyphase filter only for the training
    corpus, by name); edge/sensors/resample.py streams the microphone through libsoxr block by block, keeping
    the filter's state between blocks."""
    callers = []
    for path in _sources():
        if path.parent.name == "bench" or path == ROOT / "edge" / "sensors" / "resample.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if any(call in line for call in ("resample_poly(", "soxr.resample(", "signal.resample(", "ResampleStream(",
                                             "upfirdn(")):
                callers.append(f"{path.relative_to(ROOT)}:{n}")
    assert not callers, f"resample with edge.contract.wav.resample: {callers}"
