"""Dataset generation from sim and a tiny training run that must learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_model.audio_bank import BankConfig, load_bank
from reference_model.augment import AugmentConfig
from reference_model.dataset import (
    ABSENT,
    NONE_NOISE_ONLY,
    NONE_SILENCE,
    VISIBLE,
    DataConfig,
    SplitSize,
    TrainSampler,
    _counts,
    collate,
    evaluation_samples,
    load_split,
)
from reference_model.errors import ConfigError
from sim.commands import INTENT_INDEX, INTENTS, OBJECT_TYPES
from sim.speech import voice_split

TINY = DataConfig(
    seed=3,
    train=SplitSize(240, _counts(12, 36, 30), babble_sources=8, noise_clips=8),
    val=SplitSize(60, _counts(3, 12, 6), babble_sources=4, noise_clips=4),
    test=SplitSize(60, _counts(3, 12, 6), babble_sources=4, noise_clips=4),
)


SMALL_BANK = BankConfig(windows_per_utterance=3, noise_only_windows=60, silence_windows=40,
                        augment=AugmentConfig(rirs=8))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def train_split(cache):
    return load_split(TINY, "train", cache)


def test_split_shapes_and_labels(train_split):
    d = train_split
    assert d.images.shape == (240, 120, 160, 3) and d.images.dtype == np.uint8
    assert d.obj_state.shape == (240, len(OBJECT_TYPES))
    assert d.n_utterances == 12 * 6 + 36 * 2 + 30
    assert set(np.unique(d.utt_intent)) == set(range(len(INTENTS)))
    # object commands name an object; the others do not
    has_obj = np.isin(d.utt_intent, [INTENT_INDEX["go_to"], INTENT_INDEX["pick_up"]])
    assert (d.utt_object[has_obj] >= 0).all() and (d.utt_object[~has_obj] == -1).all()
    # every object type appears clearly visible somewhere, and visible centres lie in their boxes
    assert (d.obj_state == VISIBLE).any(axis=0).all()
    vis = d.obj_state == VISIBLE
    c, b = d.obj_center[vis], d.obj_box[vis]
    assert ((c[:, 0] >= b[:, 0]) & (c[:, 0] <= b[:, 2]) & (c[:, 1] >= b[:, 1]) & (c[:, 1] <= b[:, 3])).all()
    for kind, clips in d.noise.items():
        assert clips.shape == (8, 32000), kind


def test_splits_use_disjoint_voices_and_are_cached(cache, train_split):
    test = load_split(TINY, "test", cache)
    assert not set(test.utt_voice) & set(train_split.utt_voice)
    assert set(train_split.utt_voice) <= {v.espeak_name for v in voice_split()["train"]}
    again = load_split(TINY, "train", cache)  # from the cache: identical
    assert np.array_equal(again.images, train_split.images)
    assert np.array_equal(again.utt_audio, train_split.utt_audio)


def test_samples_pair_commands_with_fitting_scenes(train_split):
    d = train_split
    rng = np.random.default_rng(0)
    sampler = TrainSampler(d, present_fraction=0.5)
    batch = sampler.batch(rng, 256)
    assert batch["image"].shape == (256, 120, 160, 3) and batch["audio"].shape == (256, 32000)
    assert np.abs(batch["audio"]).max() <= 1.0
    obj = batch["object"] >= 0
    assert 0.3 < batch["presence"][obj].mean() < 0.7
    assert (batch["presence"][~obj] == 0).all()
    # a present target is the visible centre of the named object in that image
    samples = [sampler.draw(np.random.default_rng(i)) for i in range(200)]
    for s in samples:
        o = d.utt_object[s.utt] if s.utt >= 0 else -1
        if o >= 0:
            assert d.obj_state[s.scene, o] in (VISIBLE, ABSENT)


def test_evaluation_samples_are_fixed_and_cover_noise_and_silence(train_split):
    a = evaluation_samples(train_split, 5, 10.0, 0.85)
    b = evaluation_samples(train_split, 5, 10.0, 0.85)
    assert a == b
    utts = [s.utt for s in a]
    assert NONE_NOISE_ONLY in utts and NONE_SILENCE in utts
    assert {s.noise_kind for s in a} == {"white", "motor", "babble"}
    batch = collate(train_split, a[:8])
    assert batch["audio"].dtype == np.float32


def test_tiny_training_run_learns(cache, tmp_path):
    from reference_model.evaluate import compute_metrics, run_model
    from reference_model.model import load_checkpoint
    from reference_model.train import RunConfig, TrainConfig, train

    config = RunConfig(data=TINY, train=TrainConfig(steps=160, batch_size=32, lr=3e-3, warmup_steps=10,
                                                    eval_every=80, checkpoint_every=80, snr_range_db=(20, 30)),
                       bank=SMALL_BANK)
    out = tmp_path / "tiny.pt"
    lines: list[str] = []
    meta = train(config, out, cache_root=cache, run_dir=tmp_path / "run", progress=False,
                 log=lambda *a: lines.append(" ".join(map(str, a))))
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert (tmp_path / "run" / "state.pt").is_file()
    assert [h["step"] for h in meta["history"]] == [80, 160]
    # the threshold's validation false accepts are logged and kept, and a breached cap is said aloud
    from reference_model.evaluate import THRESHOLD_MAX_FALSE_ACCEPT

    false_accepts = meta["validation_false_accepts"]
    assert set(false_accepts) == {"espeak-ng"} and 0.0 <= false_accepts["espeak-ng"] <= 1.0
    reported = (f"command threshold {meta['command_threshold']:.2f}; validation false accepts there: "
                f"espeak-ng {100 * false_accepts['espeak-ng']:.2f} %")
    assert any(line.startswith(reported) for line in lines)
    warned = any(line.startswith("warning: no threshold") for line in lines)
    assert warned == (false_accepts["espeak-ng"] > THRESHOLD_MAX_FALSE_ACCEPT)

    model, _ = load_checkpoint(out)
    data = load_split(TINY, "train", cache)
    metrics = compute_metrics(run_model(model, data, evaluation_samples(data, 0, None, 0.85)))
    chance = 1 / len(INTENTS)
    assert metrics["intent_accuracy"] > 4 * chance, metrics["intent_accuracy"]

    # evaluate at the checkpoint's own command threshold, then at another operating point (`--threshold`)
    from reference_model.evaluate import evaluate_checkpoint

    def scored(threshold):
        return evaluate_checkpoint(out, split="val", snr_db=10.0, out_dir=tmp_path / "eval", cache_root=cache,
                                   progress=False, threshold=threshold)

    own, argmax = scored(None), scored(0.0)
    assert own["command_threshold"] == meta["command_threshold"]
    assert own["threshold_source"] == "validation split"
    assert argmax["command_threshold"] == 0.0 and argmax["threshold_source"] == "--threshold"
    assert argmax["intent_accuracy"] == own["argmax_intent_accuracy"]
    assert sorted(p.name for p in (tmp_path / "eval").glob("metrics-*.json")) == [
        "metrics-val-threshold0.00.json", "metrics-val.json"]
    with pytest.raises(ValueError, match="threshold"):
        scored(1.0)

    # Resuming a finished run restores its state: no more steps, identical weights.
    logs = []
    train(config, tmp_path / "again.pt", cache_root=cache, run_dir=tmp_path / "run", resume=True,
          progress=False, log=logs.append)
    assert any("resumed" in line and "step 160" in line for line in logs)
    again, _ = load_checkpoint(tmp_path / "again.pt")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_cell_labels_mark_every_visible_object_at_its_centre(train_split):
    from reference_model.train import cell_labels

    d = train_split
    scenes = np.arange(20)
    labels = cell_labels(d, scenes, (15, 20))
    background = len(OBJECT_TYPES)
    for row, s in zip(labels, scenes):
        seen = set(np.unique(row).tolist()) - {background}
        assert seen == set(np.flatnonzero(d.obj_state[s] != ABSENT).tolist())
        for o in seen:
            cx, cy = d.obj_center[s, o]
            assert row[int(cy * 15), int(cx * 20)] == o


def test_a_damaged_cache_file_is_regenerated(cache, capsys):
    first = load_split(TINY, "val", cache)
    path = cache / f"val-{TINY.digest('val')}.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as if the disk filled up mid-write
    again = load_split(TINY, "val", cache)
    said = capsys.readouterr().out
    assert "cached split" in said and "is unreadable" in said and "rebuilding" in said
    assert np.array_equal(first.images, again.images) and np.array_equal(first.utt_audio, again.utt_audio)
    assert path.stat().st_size == len(data)


def test_the_feature_bank_holds_augmented_windows_of_every_utterance_and_is_cached(cache, train_split, capsys):
    from reference_model.model import ReferenceModel
    from reference_model.speech_embedding import EMBED_DIM

    encoder = ReferenceModel().audio_encoder
    digest = TINY.digest("train")
    bank = load_bank(encoder, train_split, digest, SMALL_BANK, seed=0, cache_root=cache, snr_range_db=(0, 30))
    n = train_split.n_utterances
    assert bank.features.shape == (3 * n + 100, EMBED_DIM, 16) and bank.features.dtype == np.float16
    assert np.isfinite(bank.features).all()
    assert list(bank.utt[:6]) == [0, 0, 0, 1, 1, 1]
    assert (bank.utt == NONE_NOISE_ONLY).sum() == 60 and (bank.utt == NONE_SILENCE).sum() == 40
    # three different windows of one utterance (augmentation, offset, noise), not one copied
    assert not np.array_equal(bank.features[0], bank.features[1])
    rng = np.random.default_rng(0)
    assert all(bank.utt[bank.entries([u], rng)[0]] == u for u in (0, 5, n - 1, NONE_NOISE_ONLY, NONE_SILENCE))
    many = np.array([0, 5, n - 1, NONE_NOISE_ONLY, NONE_SILENCE] * 40)
    picked = bank.entries(many, rng)
    assert np.array_equal(bank.utt[picked], many)
    assert len(set(picked[many == 5])) == 3  # every window of an utterance is used
    # the second load reads the cache: the same windows
    again = load_bank(encoder, train_split, digest, SMALL_BANK, seed=0, cache_root=cache, snr_range_db=(0, 30))
    assert np.array_equal(again.features, bank.features)
    # a sampler with the bank hands out features in place of audio
    batch = TrainSampler(train_split, 0.85, bank=bank).batch(rng, 16)
    assert "audio" not in batch and batch["audio_features"].shape == (16, EMBED_DIM, 16)


def test_the_banks_noise_only_and_quiet_windows_are_babble_as_often_as_configured(train_split):
    import dataclasses

    from reference_model.audio_bank import make_window

    # Silent babble clips make every babble window all zeros; white noise and motor hum never are.
    data = dataclasses.replace(train_split, noise={**train_split.noise,
                                                   "babble": np.zeros_like(train_split.noise["babble"])})

    def babble_share(fraction: float, utt: int) -> float:
        config = dataclasses.replace(SMALL_BANK, babble_fraction=fraction)
        rng = np.random.default_rng(1)
        return float(np.mean([not make_window(data, utt, rng, config, None).any() for _ in range(300)]))

    for utt in (NONE_NOISE_ONLY, NONE_SILENCE):
        assert babble_share(0.0, utt) == 0.0 and babble_share(1.0, utt) == 1.0
        assert 0.5 < babble_share(0.6, utt) < 0.7
    # speech windows still draw their noise from every kind
    assert make_window(data, 0, np.random.default_rng(1), SMALL_BANK, None).any()
    with pytest.raises(ConfigError, match="babble_fraction"):
        BankConfig(babble_fraction=1.5)


def test_audio_pretraining_learns_the_commands_from_the_bank_and_leaves_the_image_side_alone(cache, train_split):
    from reference_model.model import ReferenceModel
    from reference_model.train import TrainConfig, pretrain_audio

    torch.manual_seed(0)
    model = ReferenceModel()
    bank = load_bank(model.audio_encoder, train_split, TINY.digest("train"), SMALL_BANK, seed=0, cache_root=cache,
                     snr_range_db=(0, 30))
    image_before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    head_before = model.intent_head[0].weight.detach().clone()
    embedding_before = next(model.audio_encoder.embedding.parameters()).detach().clone()
    sampler = TrainSampler(train_split, 0.85, bank=bank)
    cfg = TrainConfig(audio_pretrain_steps=150, audio_pretrain_batch=64, lr=3e-3, warmup_steps=10)
    model.train()
    losses = pretrain_audio(model, bank, sampler, cfg, np.random.default_rng(0), progress=False)
    # 9 intents: chance-level cross-entropy is ln 9 = 2.2
    assert losses["intent"] < 1.2, losses
    assert "aux_object" in losses
    assert not torch.equal(model.intent_head[0].weight, head_before)
    assert torch.equal(next(model.audio_encoder.embedding.parameters()), embedding_before)  # frozen
    for k, v in model.image_encoder.state_dict().items():
        assert torch.equal(v, image_before[k]), k


def test_fine_tuning_caches_the_activations_below_the_last_block_and_trains_that_block_slower(cache, train_split):
    from reference_model.model import ModelConfig, ReferenceModel
    from reference_model.train import TrainConfig, _param_groups, pretrain_audio

    torch.manual_seed(0)
    model = ReferenceModel(ModelConfig(finetune_blocks=1))
    embedding = model.audio_encoder.embedding
    bank = load_bank(model.audio_encoder, train_split, TINY.digest("train"), SMALL_BANK, seed=0, cache_root=cache,
                     snr_range_db=(0, 30))
    assert bank.features.shape[1:] == (96, 40, 2)  # a bank of its own, not the frozen model's
    cut = embedding.split_index(1)
    lower_before = [p.detach().clone() for p in embedding.net[:cut].parameters()]
    upper_before = [p.detach().clone() for p in embedding.net[cut:].parameters()]
    cfg = TrainConfig(audio_pretrain_steps=30, audio_pretrain_batch=32, lr=3e-3, warmup_steps=5,
                      finetune_lr_scale=0.1)
    scales = {id(p): g["scale"] for g in _param_groups(model, [model], cfg, 0.3) for p in g["params"]}
    assert all(scales[id(p)] == pytest.approx(0.03) for p in embedding.net[cut:].parameters())
    assert scales[id(model.intent_head[0].weight)] == 0.3 and scales[id(model.key.weight)] == 1.0
    assert not any(id(p) in scales for p in embedding.net[:cut].parameters())
    model.train()
    pretrain_audio(model, bank, TrainSampler(train_split, 0.85, bank=bank), cfg, np.random.default_rng(0),
                   progress=False)
    assert all(torch.equal(p, b) for p, b in zip(embedding.net[:cut].parameters(), lower_before))
    assert not all(torch.equal(p, b) for p, b in zip(embedding.net[cut:].parameters(), upper_before))


def test_audio_pretraining_settings_are_checked():
    from reference_model.errors import ConfigError
    from reference_model.train import TrainConfig

    with pytest.raises(ConfigError, match="audio_pretrain_steps"):
        TrainConfig(audio_pretrain_steps=-1)
    with pytest.raises(ConfigError, match="audio_lr_scale"):
        TrainConfig(audio_lr_scale=0.0)
    with pytest.raises(ConfigError, match="finetune_lr_scale"):
        TrainConfig(finetune_lr_scale=1.5)


def test_batched_utterance_draws_follow_the_single_draw_distribution(train_split):
    sampler = TrainSampler(train_split, 0.85)
    many = sampler.draw_utterances(np.random.default_rng(1), 20000)
    one_by_one = np.array([sampler.draw_utterance(np.random.default_rng([2, i])) for i in range(4000)])
    none = INTENT_INDEX["none"]

    def shares(utts):
        speech = utts[utts >= 0]
        intents = np.bincount(train_split.utt_intent[speech], minlength=len(INTENTS)).astype(float)
        intents[none] += (utts < 0).sum()
        return intents / len(utts), (utts == NONE_NOISE_ONLY).mean(), (utts == NONE_SILENCE).mean()

    a, b = shares(many), shares(one_by_one)
    assert np.abs(a[0] - b[0]).max() < 0.03, (a, b)
    assert abs(a[1] - b[1]) < 0.02 and abs(a[2] - b[2]) < 0.02
    assert a[1] > 0.03 and a[2] > 0.02  # noise-only and silence windows are drawn
