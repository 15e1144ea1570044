"""Synthetic multimodal dataset generated from ``sim``: scenes, spoken commands, noise.

A split holds three independent pools, each deterministic for its seed:
- scenes: first-person renders with, per object type, whether it is clearly
  visible, absent, or ambiguous (partly hidden), its visible centre and box;
- utterances: espeak-ng speech of commands and distractor sentences spoken by
  the split's voices (``sim.speech.voice_split``: test voices are unseen);
- noise clips: white, motor hum and babble made from the split's own speech.
Samples pair an utterance with a scene that fits it (the named object visible,
or absent for a presence negative) and mix noise at an SNR. Splits use
disjoint voices and separately seeded scenes, so test voices and scenes are
never seen in training. Pools are cached under ``data/`` by a hash of the config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from edge.contract.vocabulary import INTENT_INDEX, INTENTS, NONE_INTENT, OBJECT_INTENTS, OBJECT_TYPES
from reference_model.errors import ConfigError
from reference_model.io import atomic_write, load_or_build, progress_bar
from sim import camera as sim_camera
from sim import noise as sim_noise
from sim import speech as sim_speech
from sim import world as sim_world
from sim.commands import command_phrases, distractor_phrases

SPLITS = ("train", "val", "test")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
OBJECT_INDEX = {obj: i for i, obj in enumerate(OBJECT_TYPES)}
N_OBJECTS = len(OBJECT_TYPES)

# Object visibility per scene.
VISIBLE, ABSENT, AMBIGUOUS = 1, 0, -1
MIN_VISIBLE_FRACTION = 0.6  # less than this is "partly hidden": never used as a target
MIN_VISIBLE_PIXELS = 20  # at 160x120, about a 5x5 px blob
DATA_FORMAT_VERSION = 2  # bump when this module changes what a split holds

# What "none" audio is made of, besides distractor speech.
NONE_NOISE_ONLY = -2  # utterance index marking a noise-only window
NONE_SILENCE = -3  # utterance index marking near-silence (a quiet room)
GAIN_RANGE = (0.3, 1.0)  # speech gain drawn per sample; also sets the level of noise/silence windows
SILENCE_DBFS = (-66.0, -45.0)  # a quiet room: mic self-noise and faint background
NOISE_ONLY_DBFS = (-31.0, -10.0)  # noise with nobody speaking


@dataclass(frozen=True)
class SplitSize:
    """How many scenes, utterances per intent and noise clips a split holds."""

    scenes: int
    utterances: dict[str, int]
    babble_sources: int = 120
    noise_clips: int = 120  # per noise kind

    def __post_init__(self) -> None:
        unknown = set(self.utterances) - set(INTENTS)
        if unknown:
            raise ConfigError(f"unknown intents in utterance counts: {sorted(unknown)}; expected {INTENTS}")
        missing = [i for i in INTENTS if self.utterances.get(i, 0) < 1]
        if missing:
            raise ConfigError(f"every intent needs at least one utterance; give a count >= 1 for {missing}")
        for name in ("scenes", "babble_sources", "noise_clips"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def scaled(self, fraction: float) -> SplitSize:
        """This split with every count scaled by ``fraction`` (at least one of each)."""
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"a split can be scaled by a fraction in (0, 1], got {fraction!r}")

        def part(n: int) -> int:
            return max(1, round(n * fraction))

        return SplitSize(part(self.scenes), {k: part(v) for k, v in self.utterances.items()},
                         babble_sources=part(self.babble_sources), noise_clips=part(self.noise_clips))


def _counts(simple: int, obj: int, none: int) -> dict[str, int]:
    return {i: (obj if i in OBJECT_INTENTS else none if i == NONE_INTENT else simple) for i in INTENTS}


@dataclass(frozen=True)
class DataConfig:
    """Everything that determines the generated data (its hash names the cache)."""

    seed: int = 0
    image_width: int = 160
    image_height: int = 120
    # Many distinct babble clips: with few, the model memorises them and new
    # babble (a room full of talk) starts to sound like commands.
    train: SplitSize = SplitSize(6000, _counts(300, 960, 1500), babble_sources=400, noise_clips=400)
    val: SplitSize = SplitSize(600, _counts(40, 120, 160), babble_sources=60, noise_clips=60)
    test: SplitSize = SplitSize(1500, _counts(120, 360, 600), babble_sources=150, noise_clips=150)
    present_fraction: float = 0.85  # object commands whose object is in view
    # Part of each split's speech spoken by synthesizers other than espeak-ng (sim.other_voices): the training
    # split's by TRAIN_ENGINES, validation's and test's by HELD_OUT_ENGINES, a synthesis method never trained
    # on. 0: espeak-ng alone (the committed checkpoint's corpus).
    other_voices: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.present_fraction < 1.0:
            raise ConfigError(f"present_fraction must be in (0, 1), got {self.present_fraction!r}")
        if self.image_width * 3 != self.image_height * 4:
            raise ConfigError(f"image size {self.image_width}x{self.image_height} is not 4:3")
        if not 0.0 <= self.other_voices < 1.0:
            raise ConfigError(f"other_voices (the part of the speech from other synthesizers) must be in [0, 1), "
                              f"got {self.other_voices!r}")

    def split(self, name: str) -> SplitSize:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataConfig:
        data = dict(data)
        data.pop("cache_version", None)  # written by earlier versions; the format version is in digest()
        try:
            for name in SPLITS:
                if name in data and isinstance(data[name], dict):
                    data[name] = SplitSize(**data[name])
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"data config: {exc}") from exc

    def digest(self, split: str) -> str:
        blob = json.dumps({"split": split, "size": asdict(self.split(split)), "seed": self.seed,
                           "wh": [self.image_width, self.image_height], "v": DATA_FORMAT_VERSION,
                           "voices": [v.espeak_name for v in sim_speech.voice_split()[split]],
                           "sim": _sim_source_digest(),
                           **({"other_voices": self.other_voices} if self.other_voices else {})},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# sim modules that generate no split (SAM speaks splits again for evaluation only)
_NOT_DATA_SOURCES = ("sam.py",)


def _sim_source_digest() -> str:
    """Hash of the simulator's source: changing the world regenerates the data.

    Changes to how this module generates a split bump DATA_FORMAT_VERSION instead.
    """
    import sim

    h = hashlib.sha256()
    for path in sorted(Path(sim.__file__).parent.glob("*.py")):
        if path.name in _NOT_DATA_SOURCES:
            continue
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


@dataclass
class SplitData:
    """The generated pools of one split, as arrays."""

    name: str
    images: np.ndarray  # uint8 [S, H, W, 3] RGB
    obj_state: np.ndarray  # int8 [S, 12]: VISIBLE / ABSENT / AMBIGUOUS
    obj_center: np.ndarray  # float32 [S, 12, 2] normalised visible centroid (x, y)
    obj_box: np.ndarray  # float32 [S, 12, 4] normalised visible box (x0, y0, x1, y1)
    utt_audio: np.ndarray  # float32, all utterances concatenated
    utt_offsets: np.ndarray  # int64 [U + 1]
    utt_intent: np.ndarray  # int64 [U]
    utt_object: np.ndarray  # int64 [U], -1 when the command names no object
    utt_text: np.ndarray  # str [U]
    utt_voice: np.ndarray  # str [U]
    noise: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> float32 [K, WINDOW]

    @property
    def n_utterances(self) -> int:
        return len(self.utt_intent)

    def utterance(self, i: int) -> np.ndarray:
        return self.utt_audio[self.utt_offsets[i] : self.utt_offsets[i + 1]]

    def scenes_with(self, obj: int, state: int) -> np.ndarray:
        return np.flatnonzero(self.obj_state[:, obj] == state)

    def save(self, path: Path) -> None:
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        arrays.update({f"noise_{k}": v for k, v in self.noise.items()})
        atomic_write(path, lambda f: np.savez(f, name=np.array(self.name), **arrays))

    @classmethod
    def load(cls, path: Path) -> SplitData:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        noise = {k[len("noise_"):]: data.pop(k) for k in list(data) if k.startswith("noise_")}
        return cls(name=str(data.pop("name")), noise=noise, **data)


def render_scenes(n: int, seed_seq, width: int, height: int, progress: bool = False) -> dict[str, np.ndarray]:
    """Render ``n`` random first-person views and label every object type's visibility."""
    rng = np.random.default_rng(seed_seq)
    cam = sim_camera.CameraModel(width=width, height=height)
    images = np.empty((n, height, width, 3), np.uint8)
    state = np.full((n, N_OBJECTS), ABSENT, np.int8)
    center = np.zeros((n, N_OBJECTS, 2), np.float32)
    box = np.zeros((n, N_OBJECTS, 4), np.float32)
    scale = np.array([width, height, width, height], np.float32)
    with progress_bar(n, "render scenes", progress) as bar:
        for s in range(n):
            arena, pose = sim_world.sample_view(rng)
            out = sim_camera.render(arena, pose, cam, sim_camera.random_appearance(rng), rng)
            images[s] = out.image
            for vis in out.visible:
                o = OBJECT_INDEX[(vis.color, vis.shape)]
                # Cut by the frame edge or mostly hidden: neither a fair target
                # nor a fair "absent", so such objects are never named.
                clear = (vis.visible_fraction >= MIN_VISIBLE_FRACTION and vis.pixel_count >= MIN_VISIBLE_PIXELS
                         and not vis.truncated)
                state[s, o] = VISIBLE if clear else AMBIGUOUS
                center[s, o] = np.asarray(vis.center_xy, np.float32) / scale[:2]
                box[s, o] = np.asarray(vis.box, np.float32) / scale
            bar.update()
    return {"images": images, "obj_state": state, "obj_center": center, "obj_box": box}


def _utterance_plan(size: SplitSize, rng: np.random.Generator):
    """Which phrase each utterance of the split says; object intents cycle over all 12 objects."""
    plan = []
    distractors = distractor_phrases()
    for intent in INTENTS:
        count = size.utterances.get(intent, 0)
        if intent == NONE_INTENT:
            plan += [distractors[int(rng.integers(len(distractors)))] for _ in range(count)]
            continue
        phrases = command_phrases(intent)
        if intent in OBJECT_INTENTS:
            by_obj = {o: [p for p in phrases if (p.color, p.shape) == o] for o in OBJECT_TYPES}
            for i in range(count):
                pool = by_obj[OBJECT_TYPES[i % N_OBJECTS]]
                plan.append(pool[int(rng.integers(len(pool)))])
        else:
            plan += [phrases[int(rng.integers(len(phrases)))] for _ in range(count)]
    return plan


MAX_SPEECH_S = 1.9  # an utterance must fit the 2 s window with a little room to move
REFIT_RATE_FACTOR = 1.25  # a too-slow request is spoken again this much faster
REFIT_TRIES = 4


def synthesize_pool(commands, voices, rng, cache_dir: Path, progress: bool, sample_rate: int = SAMPLE_RATE_HZ,
                    other: tuple[float, tuple[str, ...], np.random.Generator] | None = None):
    """Speak each command with a random voice, rate and pitch; returns (audio list, voice names).

    ``other``: (fraction, engines, rng): that part of the commands, chosen by ``rng``, is spoken by those
    engines of ``sim.other_voices`` instead of espeak-ng; the espeak-ng draws of the rest are unchanged.

    A request too slow to fit the model's 2 s window is spoken again faster
    (same voice and pitch), because cropping "go to the yellow cone" could cut
    off the object and make its label wrong.
    """
    max_len = int(MAX_SPEECH_S * sample_rate)
    requests = [sim_speech.random_request(rng, c.text, voices) for c in commands]
    if other is not None and other[0] > 0:
        from sim import other_voices

        fraction, engines, other_rng = other
        chosen = other_rng.random(len(commands)) < fraction
        requests = [other_voices.random_request(other_rng, c.text, engines) if pick else r
                    for c, r, pick in zip(commands, requests, chosen)]
    audio = _speak(requests, cache_dir, progress)
    for _ in range(REFIT_TRIES):
        long = [i for i, a in enumerate(audio) if len(a) > max_len]
        if not long:
            break
        for i in long:
            r = requests[i]
            if isinstance(r, sim_speech.SpeechRequest):
                requests[i] = dataclasses.replace(
                    r, rate_wpm=min(sim_speech.MAX_RATE_WPM, int(r.rate_wpm * REFIT_RATE_FACTOR)), word_gap_10ms=0)
            else:
                requests[i] = r.faster(REFIT_RATE_FACTOR)
        for i, a in zip(long, _speak([requests[i] for i in long], cache_dir, False)):
            audio[i] = a
    too_long = [requests[i].text for i, a in enumerate(audio) if len(a) > max_len]
    if too_long:
        # Cropping would cut words off and make the label wrong: refuse instead.
        raise ConfigError(f"{len(too_long)} utterances stay longer than {MAX_SPEECH_S} s even at the fastest "
                          f"speaking rate, e.g. {too_long[0]!r}; shorten these phrases")
    return audio, [r.voice.espeak_name if isinstance(r, sim_speech.SpeechRequest) else r.name for r in requests]


def _speak(requests, cache_dir: Path, progress: bool) -> list[np.ndarray]:
    """espeak-ng's requests and ``sim.other_voices``' together, in order."""
    mine = [i for i, r in enumerate(requests) if isinstance(r, sim_speech.SpeechRequest)]
    others = [i for i, r in enumerate(requests) if not isinstance(r, sim_speech.SpeechRequest)]
    audio: list = [None] * len(requests)
    with progress_bar(len(requests), "synthesize speech", progress) as bar:
        spoken = sim_speech.synthesize_many([requests[i] for i in mine], cache_dir, workers=2,
                                            progress=lambda *_: bar.update())
        for i, a in zip(mine, spoken):
            audio[i] = a
        if others:
            from sim import other_voices

            spoken = other_voices.synthesize_other([requests[i] for i in others], cache_dir,
                                                   progress=lambda n: bar.update(n))
            for i, a in zip(others, spoken):
                audio[i] = a
    return audio


def generate_split(config: DataConfig, split: str, cache_root: Path, progress: bool = False) -> SplitData:
    """Generate one split from scratch (scenes, utterances, noise)."""
    size = config.split(split)
    base = [config.seed, _SPLIT_IDS[split]]
    voices = sim_speech.voice_split()[split]
    speech_cache = cache_root / "speech"

    scenes = render_scenes(size.scenes, base + [1], config.image_width, config.image_height, progress)

    rng = np.random.default_rng(base + [2])
    plan = _utterance_plan(size, rng)
    other = None
    if config.other_voices:
        from sim import other_voices

        engines = other_voices.TRAIN_ENGINES if split == "train" else other_voices.HELD_OUT_ENGINES
        other = (config.other_voices, engines, np.random.default_rng(base + [4]))
    audio, voice_names = synthesize_pool(plan, voices, rng, speech_cache, progress, other=other)
    lengths = np.array([len(a) for a in audio], np.int64)

    # Babble is made of the split's own voices saying distractor sentences, so
    # test babble is as unseen as test speech.
    distractors = distractor_phrases()
    babble_cmds = [distractors[int(rng.integers(len(distractors)))] for _ in range(size.babble_sources)]
    babble_pool, _ = synthesize_pool(babble_cmds, voices, rng, speech_cache, progress)
    noise_rng = np.random.default_rng(base + [3])
    noise = {
        kind: np.stack([
            sim_noise.make_noise(kind, WINDOW_SAMPLES, noise_rng, speech_pool=babble_pool).astype(np.float32)
            for _ in range(size.noise_clips)
        ])
        for kind in sim_noise.NOISE_KINDS
    }
    return SplitData(
        name=split,
        utt_audio=np.concatenate(audio).astype(np.float32),
        utt_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        utt_intent=np.array([INTENT_INDEX[c.intent] for c in plan], np.int64),
        utt_object=np.array([OBJECT_INDEX[(c.color, c.shape)] if c.has_object else -1 for c in plan], np.int64),
        utt_text=np.array([c.text for c in plan]),
        utt_voice=np.array(voice_names),
        noise=noise,
        **scenes,
    )


def load_split(config: DataConfig, split: str, cache_root: str | Path = "data", progress: bool = False) -> SplitData:
    """Load a split from the cache, generating (and caching) it first if needed."""
    cache_root = Path(cache_root)
    return load_or_build(cache_root / f"{split}-{config.digest(split)}.npz", SplitData.load,
                         lambda: generate_split(config, split, cache_root, progress),
                         lambda data, path: data.save(path), "split")


# ---------------------------------------------------------------------------
# Samples: an utterance (or noise/silence) + a fitting scene + noise at an SNR.


@dataclass(frozen=True)
class Sample:
    """Recipe for one training or evaluation example (cheap to store, exact to rebuild)."""

    utt: int  # utterance index, or NONE_NOISE_ONLY / NONE_SILENCE
    scene: int
    noise_kind: str
    noise_clip: int
    noise_shift: int  # circular shift of the noise clip, for variety
    snr_db: float | None  # None: clean speech
    offset: int  # where the utterance starts in the 2 s window
    gain: float


def _pick_scene(data: SplitData, obj: int, present: bool, rng: np.random.Generator) -> int:
    candidates = data.scenes_with(obj, VISIBLE if present else ABSENT)
    if len(candidates) == 0:
        raise ConfigError(
            f"split {data.name!r} has no scene where {OBJECT_TYPES[obj]} is "
            f"{'visible' if present else 'absent'}; generate more scenes"
        )
    return int(candidates[rng.integers(len(candidates))])


def draw_sample(data: SplitData, utt: int, rng: np.random.Generator, *, present_fraction: float,
                snr_db: float | None, noise_kind: str | None = None) -> Sample:
    """Pair utterance ``utt`` with a fitting scene and noise."""
    if utt >= 0 and data.utt_object[utt] >= 0:
        present = rng.random() < present_fraction
        scene = _pick_scene(data, int(data.utt_object[utt]), present, rng)
        length = len(data.utterance(utt))
    else:
        scene = int(rng.integers(len(data.images)))
        length = len(data.utterance(utt)) if utt >= 0 else 0
    kind = noise_kind or sim_noise.NOISE_KINDS[int(rng.integers(len(sim_noise.NOISE_KINDS)))]
    slack = max(0, WINDOW_SAMPLES - length)
    return Sample(
        utt=utt, scene=scene, noise_kind=kind, noise_clip=int(rng.integers(len(data.noise[kind]))),
        noise_shift=int(rng.integers(WINDOW_SAMPLES)),
        snr_db=snr_db, offset=int(rng.integers(slack + 1)), gain=float(rng.uniform(*GAIN_RANGE)),
    )


def _level(gain: float, dbfs_range: tuple[float, float]) -> float:
    """Map a sample's gain (drawn from GAIN_RANGE) onto a level range, as linear amplitude."""
    t = (gain - GAIN_RANGE[0]) / (GAIN_RANGE[1] - GAIN_RANGE[0])
    return 10 ** ((dbfs_range[0] + t * (dbfs_range[1] - dbfs_range[0])) / 20)


def sample_audio(data: SplitData, s: Sample) -> np.ndarray:
    """The 2 s float32 window for a sample: speech at its offset plus noise at its SNR.

    Clipped to [-1, 1] as a real microphone's ADC would.
    """
    noise = np.roll(data.noise[s.noise_kind][s.noise_clip], s.noise_shift)
    if s.utt in (NONE_SILENCE, NONE_NOISE_ONLY):
        level = _level(s.gain, SILENCE_DBFS if s.utt == NONE_SILENCE else NOISE_ONLY_DBFS)
        window = noise * (level / (np.sqrt(np.mean(noise**2)) + 1e-12))
    else:
        window, _ = sim_speech.place_in_window(data.utterance(s.utt) * s.gain, WINDOW_SAMPLES, offset=s.offset)
        if s.snr_db is not None:
            window = sim_noise.mix_at_snr(window, noise, s.snr_db)
    return np.clip(window, -1.0, 1.0).astype(np.float32)


def utterance_labels(data: SplitData, utts) -> tuple[np.ndarray, np.ndarray]:
    """(intent, named object or -1) of utterance indices; noise-only and silence windows are "none"."""
    utts = np.asarray(utts, np.int64)
    speech = utts >= 0
    intent = np.full(len(utts), INTENT_INDEX[NONE_INTENT], np.int64)
    obj = np.full(len(utts), -1, np.int64)
    intent[speech] = data.utt_intent[utts[speech]]
    obj[speech] = data.utt_object[utts[speech]]
    return intent, obj


def targets(data: SplitData, s: Sample) -> dict[str, np.ndarray]:
    """Labels of a sample: intent, presence, and target point/box where the object is visible."""
    intent, obj = (int(x[0]) for x in utterance_labels(data, [s.utt]))
    present = obj >= 0 and data.obj_state[s.scene, obj] == VISIBLE
    return {
        "intent": np.int64(intent),
        "object": np.int64(obj),
        "presence": np.float32(present),
        "target_xy": data.obj_center[s.scene, obj] if present else np.zeros(2, np.float32),
        "target_box": data.obj_box[s.scene, obj] if present else np.zeros(4, np.float32),
    }


def collate(data: SplitData, samples: list[Sample], bank=None, rng: np.random.Generator | None = None
            ) -> dict[str, np.ndarray]:
    """Stack samples into model inputs and labels.

    With a feature bank (``reference_model.audio_bank``) the audio of each sample is
    a random precomputed window of its utterance, as ``audio_features``, not ``audio``.
    """
    labels = [targets(data, s) for s in samples]
    batch = {k: np.stack([lab[k] for lab in labels]) for k in labels[0]}
    batch["scene"] = np.array([s.scene for s in samples], np.int64)
    batch["image"] = data.images[batch["scene"]]
    if bank is None:
        batch["audio"] = np.stack([sample_audio(data, s) for s in samples])
    else:
        entries = bank.entries([s.utt for s in samples], rng)
        batch["audio_features"] = bank.features[entries].astype(np.float32)
    return batch


class TrainSampler:
    """Endless random training batches: intents balanced, noise and SNR randomised."""

    # Noise and near-silence are what a robot hears most of the time, and the
    # per-utterance level normalisation makes a quiet room look as loud as
    # speech, so they get a fair share of the "none" examples.
    NONE_KINDS = (("speech", 0.5), ("noise", 0.3), ("silence", 0.2))

    def __init__(self, data: SplitData, present_fraction: float, snr_range_db=(0.0, 30.0), clean_fraction=0.1,
                 bank=None):
        self.data = data
        self.bank = bank
        self.present_fraction = present_fraction
        self.snr_range_db = snr_range_db
        self.clean_fraction = clean_fraction
        self.by_intent = {i: np.flatnonzero(data.utt_intent == i) for i in range(len(INTENTS))}
        weights = np.array([1.5 if INTENTS[i] in OBJECT_INTENTS else 2.0 if INTENTS[i] == NONE_INTENT else 1.0
                            for i in range(len(INTENTS))])
        self.intent_p = weights / weights.sum()
        self.none_p = np.array([p for _, p in self.NONE_KINDS])

    def draw_utterance(self, rng: np.random.Generator) -> int:
        """An utterance index (or NONE_NOISE_ONLY / NONE_SILENCE) with the intents balanced."""
        intent = int(rng.choice(len(INTENTS), p=self.intent_p))
        source = "speech"
        if INTENTS[intent] == NONE_INTENT:
            source = self.NONE_KINDS[int(rng.choice(len(self.NONE_KINDS), p=self.none_p))][0]
        if source == "speech":
            pool = self.by_intent[intent]
            return int(pool[rng.integers(len(pool))])
        return NONE_NOISE_ONLY if source == "noise" else NONE_SILENCE

    def draw_utterances(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of ``draw_utterance`` at once (another random stream, the same distribution)."""
        intents = rng.choice(len(INTENTS), size=n, p=self.intent_p)
        utts = np.empty(n, np.int64)
        for i in range(len(INTENTS)):
            sel = np.flatnonzero(intents == i)
            if INTENTS[i] != NONE_INTENT:
                utts[sel] = rng.choice(self.by_intent[i], size=len(sel))
                continue
            source = np.array([name for name, _ in self.NONE_KINDS])[
                rng.choice(len(self.NONE_KINDS), size=len(sel), p=self.none_p)]
            utts[sel] = np.where(source == "noise", NONE_NOISE_ONLY, NONE_SILENCE)
            speech = sel[source == "speech"]
            utts[speech] = rng.choice(self.by_intent[i], size=len(speech))
        return utts

    def draw(self, rng: np.random.Generator) -> Sample:
        utt = self.draw_utterance(rng)
        snr = None if rng.random() < self.clean_fraction else float(rng.uniform(*self.snr_range_db))
        return draw_sample(self.data, utt, rng, present_fraction=self.present_fraction, snr_db=snr)

    def batch(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        return collate(self.data, [self.draw(rng) for _ in range(size)], self.bank, rng)


def evaluation_samples(data: SplitData, seed: int, snr_db: float | None, present_fraction: float,
                       noise_only: int | None = None, silence: int | None = None) -> list[Sample]:
    """The fixed evaluation list: every utterance once, plus noise-only and silent windows.

    White, motor and babble noise are equally represented.
    """
    rng = np.random.default_rng([seed, 7919])
    kinds = sim_noise.NOISE_KINDS
    n_noise = noise_only if noise_only is not None else max(1, data.n_utterances // 10)
    n_silence = silence if silence is not None else max(1, data.n_utterances // 40)
    utts = list(range(data.n_utterances)) + [NONE_NOISE_ONLY] * n_noise + [NONE_SILENCE] * n_silence
    # Equal shares of each noise kind, shuffled so that no object or intent is
    # always heard over the same noise.
    noise_kinds = rng.permutation(np.resize(np.arange(len(kinds)), len(utts)))
    return [
        draw_sample(data, u, rng, present_fraction=present_fraction, snr_db=snr_db, noise_kind=kinds[k])
        for u, k in zip(utts, noise_kinds)
    ]
