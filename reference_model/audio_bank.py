"""Speech-embedding features of augmented training windows, computed once and cached.

The pretrained ``speech_embedding`` is frozen (all of it, or all but its last
blocks), and it is the expensive part of the audio side (~0.7 s per batch of
64 windows on 2 cores, more than the rest of a training step). So training
does not run its frozen part: for every training
utterance the bank holds ``windows_per_utterance`` different 2 s windows (the
utterance augmented by ``reference_model.augment``, placed at a random offset
and gain, mixed with noise at a random SNR, through a random gain stage and
ADC), plus noise-only and near-silent windows, each turned into what the frozen part
computes once ([96, 16] embeddings; [96, 40, 2] activations when the last
block is fine-tuned). A training step draws a window of the utterance it
picked and runs only the trainable part on it.

The bank is cached under ``data/`` by a hash of everything that determines it
(the split, the augmentation settings, the sources of the augmentation and the
front end, the pretrained weights, where the frozen part ends).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from reference_model import augment, speech_embedding
from reference_model.dataset import (
    GAIN_RANGE,
    NOISE_ONLY_DBFS,
    NONE_NOISE_ONLY,
    NONE_SILENCE,
    SILENCE_DBFS,
    WINDOW_SAMPLES,
    SplitData,
    _level,
)
from reference_model.errors import ConfigError
from reference_model.io import atomic_write, load_or_build, progress_bar
from sim import noise as sim_noise
from sim import speech as sim_speech

BANK_FORMAT_VERSION = 1
_NOT_BABBLE = tuple(k for k in sim_noise.NOISE_KINDS if k != "babble")  # see BankConfig.babble_fraction
FEATURE_BATCH = 128


@dataclass(frozen=True)
class BankConfig:
    """How many windows the bank holds and how they are made."""

    windows_per_utterance: int = 6
    noise_only_windows: int = 1500
    silence_windows: int = 1000
    # Of the noise-only and near-silent windows, the share that is babble (the rest is white noise and motor
    # hum, half each). Babble with nobody speaking to the robot is the hard "none": commands are trained in
    # babble at 0-30 dB SNR, so a model that rarely hears babble alone learns that babble means a command.
    # With a third (the noise kinds drawn evenly), the frozen speech-embedding models accepted 28 % of
    # babble-only test windows and no white or motor ones (2026-12-06).
    babble_fraction: float = 1 / 3
    augment: augment.AugmentConfig = augment.AugmentConfig()
    # The SNR range and clean fraction are the training run's (TrainConfig), passed in.

    def __post_init__(self) -> None:
        for name in ("windows_per_utterance", "noise_only_windows", "silence_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bank.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.babble_fraction <= 1.0:
            raise ConfigError(f"bank.babble_fraction is a share in [0, 1], got {self.babble_fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeatureBank:
    features: np.ndarray  # float16 [E, ...]: the frozen part's output (SpeechEmbeddingEncoder.features)
    utt: np.ndarray  # int64 [E]: utterance index, NONE_NOISE_ONLY or NONE_SILENCE
    windows_per_utterance: int

    def entries(self, utts, rng: np.random.Generator) -> np.ndarray:
        """A random bank window of each utterance (or of noise-only / silence), as bank indices."""
        utts = np.asarray(utts, np.int64)
        out = utts * self.windows_per_utterance + rng.integers(self.windows_per_utterance, size=len(utts))
        for kind, pool in self._pools.items():
            sel = np.flatnonzero(utts == kind)
            out[sel] = pool[rng.integers(len(pool), size=len(sel))]
        return out

    def __post_init__(self) -> None:
        self._pools = {kind: np.flatnonzero(self.utt == kind) for kind in (NONE_NOISE_ONLY, NONE_SILENCE)}

    def save(self, path: Path) -> None:
        atomic_write(path, lambda f: np.savez(f, features=self.features, utt=self.utt,
                                               windows_per_utterance=np.int64(self.windows_per_utterance)))

    @classmethod
    def load(cls, path: Path) -> FeatureBank:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["features"], z["utt"], int(z["windows_per_utterance"]))


def _source_digest() -> str:
    h = hashlib.sha256()
    for module in (augment, speech_embedding):  # the windows and speech_embedding.features()
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def bank_digest(data_digest: str, config: BankConfig, seed: int, snr_range_db, clean_fraction: float,
                finetune_blocks: int = 0) -> str:
    blob = json.dumps({"data": data_digest, "bank": config.to_dict(), "seed": seed, "v": BANK_FORMAT_VERSION,
                       "frozen_below_blocks": finetune_blocks,
                       "snr": list(snr_range_db), "clean": clean_fraction,
                       "weights": speech_embedding.EMBEDDING_SHA256, "src": _source_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_window(data: SplitData, utt: int, rng: np.random.Generator, config: BankConfig,
                rirs: np.ndarray | None, snr_range_db=(0.0, 30.0), clean_fraction: float = 0.1) -> np.ndarray:
    """One augmented 2 s window of utterance ``utt`` (or a noise-only / near-silent window)."""
    if utt in (NONE_SILENCE, NONE_NOISE_ONLY):
        kind = ("babble" if rng.random() < config.babble_fraction
                else _NOT_BABBLE[int(rng.integers(len(_NOT_BABBLE)))])
    else:
        kind = sim_noise.NOISE_KINDS[int(rng.integers(len(sim_noise.NOISE_KINDS)))]
    clips = data.noise[kind]
    noise = np.roll(clips[int(rng.integers(len(clips)))], int(rng.integers(WINDOW_SAMPLES)))
    gain = float(rng.uniform(*GAIN_RANGE))
    if utt in (NONE_SILENCE, NONE_NOISE_ONLY):
        level = _level(gain, SILENCE_DBFS if utt == NONE_SILENCE else NOISE_ONLY_DBFS)
        window = noise * (level / (np.sqrt(np.mean(noise**2)) + 1e-12))
        if utt == NONE_NOISE_ONLY and rirs is not None and rng.random() < config.augment.reverb:
            window = augment.reverberate(window, rirs[int(rng.integers(len(rirs)))])
        return augment.level_and_clip(window, rng, p=0.0)  # silence stays quiet
    speech = augment.augment_utterance(data.utterance(utt), rng, config.augment, rirs,
                                       max_samples=WINDOW_SAMPLES)
    slack = max(0, WINDOW_SAMPLES - len(speech))
    window, _ = sim_speech.place_in_window(speech * gain, WINDOW_SAMPLES, offset=int(rng.integers(slack + 1)))
    if rng.random() >= clean_fraction:
        window = sim_noise.mix_at_snr(window, noise, float(rng.uniform(*snr_range_db)))
    return augment.level_and_clip(window, rng, p=config.augment.level)


class _Features(torch.nn.Module):
    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(audio)


def _feature_runner(encoder):
    """``encoder.features`` as numpy -> numpy. ONNX Runtime runs these small convolutions about
    1.8x faster than torch on a 2-core CPU (measured), and it is what the robot runs them with;
    torch is the fallback where onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return lambda x: encoder.features(torch.from_numpy(x)).numpy()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.onnx"
        example = torch.zeros(2, WINDOW_SAMPLES)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, not ours to act on
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(_Features(encoder).eval(), (example,), str(path), input_names=["audio"],
                              output_names=["features"], dynamic_axes={"audio": {0: "n"}, "features": {0: "n"}},
                              opset_version=17, dynamo=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"audio": x})[0]


@torch.no_grad()
def build_bank(encoder, data: SplitData, config: BankConfig, seed: int, cache_root: Path,
               snr_range_db=(0.0, 30.0), clean_fraction: float = 0.1, progress: bool = False) -> FeatureBank:
    """Make every window of the bank and run ``encoder.features`` on it."""
    rng = np.random.default_rng([seed, 5151])
    rirs = augment.rir_bank(config.augment.rirs, seed, Path(cache_root) / "rirs")
    k = config.windows_per_utterance
    utts = np.concatenate([np.repeat(np.arange(data.n_utterances), k),
                           np.full(config.noise_only_windows, NONE_NOISE_ONLY),
                           np.full(config.silence_windows, NONE_SILENCE)]).astype(np.int64)
    was_training = encoder.training
    encoder.eval()
    shape = tuple(encoder.features(torch.zeros(1, WINDOW_SAMPLES)).shape[1:])
    features = np.empty((len(utts), *shape), np.float16)
    features_of = _feature_runner(encoder)
    with progress_bar(len(utts), "augment + speech embedding", progress) as bar:
        for start in range(0, len(utts), FEATURE_BATCH):
            chunk = utts[start: start + FEATURE_BATCH]
            windows = np.stack([make_window(data, int(u), rng, config, rirs, snr_range_db, clean_fraction)
                                for u in chunk])
            features[start: start + len(chunk)] = features_of(windows)
            bar.update(len(chunk))
    encoder.train(was_training)
    return FeatureBank(features, utts, k)


def load_bank(encoder, data: SplitData, data_digest: str, config: BankConfig, seed: int,
              cache_root: str | Path = "data", snr_range_db=(0.0, 30.0), clean_fraction: float = 0.1,
              progress: bool = False, log=print) -> FeatureBank:
    """The bank from the cache, built (and cached) first if needed."""
    cache_root = Path(cache_root)
    digest = bank_digest(data_digest, config, seed, snr_range_db, clean_fraction, encoder.finetune_blocks)
    return load_or_build(cache_root / f"bank-{data.name}-{digest}.npz", FeatureBank.load,
                         lambda: build_bank(encoder, data, config, seed, cache_root, snr_range_db, clean_fraction,
                                            progress),
                         lambda bank, path: bank.save(path), "feature bank", log)
