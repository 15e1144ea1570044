"""Training of the reference model: Adam, progress bar, periodic checkpoints, resumable.

``voxedge train --config reference_model/configs/reference.json --out ckpt.pt``
writes the final checkpoint (weights + configs + validation metrics) atomically
and keeps a resumable training state under ``runs/<name>/state.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.contract.vocabulary import INTENTS, OBJECT_TYPES
from reference_model.audio_bank import BankConfig, load_bank
from reference_model.augment import AugmentConfig
from reference_model.dataset import (
    ABSENT,
    DataConfig,
    TrainSampler,
    evaluation_samples,
    load_split,
    utterance_labels,
)
from reference_model.errors import CheckpointError, ConfigError
from reference_model.evaluate import (
    THRESHOLD_GRID,
    choose_threshold,
    compute_metrics,
    group_false_accepts,
    metrics_by_method,
    run_model,
    sample_methods,
    utterance_kinds,
)
from reference_model.io import atomic_write, progress_bar, write_json
from reference_model.model import ModelConfig, ReferenceModel

CHECKPOINT_FORMAT = "voxedge-reference/1"
CELL_POSITIVE_WEIGHT = 10.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    label_smoothing: float = 0.05
    w_target: float = 5.0  # L1 on the normalised target point
    w_attention: float = 0.3  # cross-entropy of attention on the target's grid cell
    w_presence: float = 0.5
    w_aux: float = 0.5  # object-identity (audio) and per-cell object-type (image) losses
    snr_range_db: tuple[float, float] = (0.0, 30.0)
    clean_fraction: float = 0.1
    eval_every: int = 500
    checkpoint_every: int = 250
    val_snr_db: float = 10.0
    seed: int = 0
    threads: int = 0  # 0: torch's default (all cores)
    # Speech-embedding models only: before the joint steps, the audio side (head, intent and
    # object-identity heads) learns on the cached feature bank alone. With no image, a step at
    # 4x the batch costs about a third of a joint step (2-core AMD EPYC), so the audio side
    # sees many more windows.
    audio_pretrain_steps: int = 0
    audio_pretrain_batch: int = 256
    audio_lr_scale: float = 1.0  # learning rate of the pretrained audio parts in the joint steps, x lr
    finetune_lr_scale: float = 0.1  # of speech_embedding's fine-tuned blocks (model.finetune_blocks), x their part's

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "audio_pretrain_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"train.lr must be in (0, 1), got {self.lr!r}")
        if self.audio_pretrain_steps < 0:
            raise ConfigError(f"train.audio_pretrain_steps must be >= 0, got {self.audio_pretrain_steps!r}")
        for name in ("audio_lr_scale", "finetune_lr_scale"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"train.{name} must be in (0, 1], got {getattr(self, name)!r}")


_SECTIONS = ("model", "data", "train", "bank")


@dataclass(frozen=True)
class RunConfig:
    """A whole training run: model, data, optimiser and augmented-window bank settings (one JSON file)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bank: BankConfig = field(default_factory=BankConfig)  # used with the speech-embedding front end

    def __post_init__(self) -> None:
        model_hw = (self.model.image_width, self.model.image_height)
        data_hw = (self.data.image_width, self.data.image_height)
        if model_hw != data_hw:
            raise ConfigError(f"model image size {model_hw} differs from data image size {data_hw}; "
                              "set the same width and height in both sections")

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"training config {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"training config {path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise ConfigError(f"training config {path} must be a JSON object of sections "
                              '{"model": {...}, "data": {...}, "train": {...}, "bank": {...}}')
        unknown = set(raw) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"training config {path} has unknown sections {sorted(unknown)}; "
                              f"expected {', '.join(_SECTIONS)}")
        try:
            train = dict(raw.get("train", {}))
            if "snr_range_db" in train:
                train["snr_range_db"] = tuple(train["snr_range_db"])
            bank = dict(raw.get("bank", {}))
            if "augment" in bank:
                bank["augment"] = AugmentConfig(**bank["augment"])
            return cls(
                model=ModelConfig.from_dict(raw.get("model", {})),
                data=DataConfig.from_dict(raw.get("data", {})),
                train=TrainConfig(**train),
                bank=BankConfig(**bank),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"training config {path}: {exc}") from exc

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": self.data.to_dict(), "train": asdict(self.train),
                "bank": self.bank.to_dict()}

    def with_seed(self, seed: int | None) -> RunConfig:
        """This run with another training seed (``voxedge train --seed``): the initial weights, the batches
        and the feature bank's windows change, the generated splits do not. Runs that differ only in it
        measure the spread of training itself."""
        if seed is None:
            return self
        if seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {seed}")
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed))

    def with_budget(self, steps: int | None = None, train_fraction: float | None = None) -> RunConfig:
        """This run with fewer steps and/or a fraction of the training split (``voxedge train --steps
        --train-fraction``): a check of a set-up in minutes. The checkpoint records what actually ran."""
        import dataclasses

        config = self
        if steps is not None:
            if steps < 1:
                raise ConfigError(f"--steps must be >= 1, got {steps}")
            t = config.train
            config = dataclasses.replace(config, train=dataclasses.replace(
                t, steps=steps, eval_every=min(t.eval_every, steps), checkpoint_every=min(t.checkpoint_every, steps),
                warmup_steps=min(t.warmup_steps, max(1, steps // 10))))
        if train_fraction is not None:
            if not 0.0 < train_fraction <= 1.0:
                raise ConfigError(f"--train-fraction must be in (0, 1], got {train_fraction}")
            data, bank = config.data, config.bank
            config = dataclasses.replace(
                config, data=dataclasses.replace(data, train=data.train.scaled(train_fraction)),
                bank=dataclasses.replace(bank, noise_only_windows=max(1, round(bank.noise_only_windows * train_fraction)),
                                         silence_windows=max(1, round(bank.silence_windows * train_fraction))))
        return config


def cell_labels(data, scenes: np.ndarray, grid_hw) -> np.ndarray:
    """Object type (0..11) at the grid cell holding each visible object's centre; 12 elsewhere."""
    h, w = grid_hw
    labels = np.full((len(scenes), h, w), len(OBJECT_TYPES), np.int64)
    state = data.obj_state[scenes]
    n, obj = np.nonzero(state != ABSENT)
    centre = data.obj_center[scenes[n], obj]
    rows = np.clip((centre[:, 1] * h).astype(int), 0, h - 1)
    cols = np.clip((centre[:, 0] * w).astype(int), 0, w - 1)
    labels[n, rows, cols] = obj
    return labels


def _command_losses(logits, object_logits, intent: np.ndarray, named: np.ndarray,
                    cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """What the audio side is trained on: the intent, and which object the command names (where it names one)."""
    losses = {"intent": nn.functional.cross_entropy(logits, torch.from_numpy(intent),
                                                    label_smoothing=cfg.label_smoothing)}
    has = torch.from_numpy(named >= 0)
    if has.any():
        losses["aux_object"] = cfg.w_aux * nn.functional.cross_entropy(object_logits[has],
                                                                       torch.from_numpy(named)[has])
    return losses


def _losses(outputs, batch, cfg: TrainConfig, grid_hw) -> dict[str, torch.Tensor]:
    (logits, xy, presence_logit, attn), object_logits, cell_logits = outputs
    presence = torch.from_numpy(batch["presence"])
    losses = _command_losses(logits, object_logits, batch["intent"], batch["object"], cfg)
    losses["presence"] = cfg.w_presence * nn.functional.binary_cross_entropy_with_logits(presence_logit, presence)
    cells = torch.from_numpy(batch["cells"])
    weight = torch.ones(len(OBJECT_TYPES) + 1)
    weight[:-1] = CELL_POSITIVE_WEIGHT  # a few object cells among ~300 background ones
    losses["aux_cells"] = cfg.w_aux * nn.functional.cross_entropy(cell_logits, cells, weight=weight)
    mask = presence > 0.5
    if mask.any():
        target = torch.from_numpy(batch["target_xy"])[mask]
        losses["target"] = cfg.w_target * (xy[mask] - target).abs().sum(-1).mean()
        h, w = grid_hw
        cell = (target[:, 1] * h).long().clamp(0, h - 1) * w + (target[:, 0] * w).long().clamp(0, w - 1)
        att = attn[mask].flatten(1)
        losses["attention"] = cfg.w_attention * -torch.log(att.gather(1, cell[:, None]).clamp_min(1e-8)).mean()
    return losses


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return float(cfg.lr * 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress))))


def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


# Settings that do not change the result of training; a run may resume with them changed.
_RESUME_IGNORED = ("threads", "eval_every", "checkpoint_every")


def _resume_key(config: dict) -> dict:
    return {**config, "train": {k: v for k, v in config.get("train", {}).items() if k not in _RESUME_IGNORED}}


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f"training state {path} is unreadable ({exc}); delete it to start afresh") from exc


def _step(optimizer, losses: dict[str, torch.Tensor], running: dict[str, float], bar) -> None:
    """One optimiser step on the summed losses; keeps their running means on the progress bar."""
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    for k, v in losses.items():
        running[k] = 0.95 * running.get(k, v.item()) + 0.05 * v.item()
    bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
    bar.update()


def _audio_parts(model: ReferenceModel) -> list[nn.Module]:
    """What hears the command: the audio head and the heads fed by its embedding alone."""
    return [model.audio_encoder, model.intent_head, model.object_head]


def _param_groups(model: ReferenceModel, parts: list[nn.Module], cfg: TrainConfig, audio_scale: float) -> list[dict]:
    """The trainable parameters of ``parts`` in groups by learning-rate scale (``group["scale"]`` x lr):
    the audio parts at ``audio_scale``, fine-tuned pretrained blocks at ``cfg.finetune_lr_scale`` of that."""
    audio = {id(p) for part in _audio_parts(model) for p in part.parameters()}
    pretrained = {id(p) for p in getattr(model.audio_encoder, "embedding", nn.Module()).parameters()}
    groups: dict[float, list] = {}
    for part in parts:
        for p in part.parameters():
            if p.requires_grad:
                scale = (audio_scale if id(p) in audio else 1.0) * (cfg.finetune_lr_scale if id(p) in pretrained else 1.0)
                groups.setdefault(scale, []).append(p)
    return [{"params": params, "scale": scale} for scale, params in groups.items()]


def pretrain_audio(model: ReferenceModel, bank, sampler: TrainSampler, cfg: TrainConfig, rng: np.random.Generator,
                   progress: bool = True) -> dict[str, float]:
    """Train the audio side on the feature bank alone (intent + named object), intents balanced as in
    the joint steps; returns the final running losses."""
    optimizer = torch.optim.AdamW(_param_groups(model, _audio_parts(model), cfg, 1.0), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    schedule = dataclasses.replace(cfg, steps=cfg.audio_pretrain_steps)
    running: dict[str, float] = {}
    with progress_bar(cfg.audio_pretrain_steps, "audio pretrain", progress) as bar:
        for step in range(cfg.audio_pretrain_steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, schedule) * group["scale"]
            utts = sampler.draw_utterances(rng, cfg.audio_pretrain_batch)
            feats = torch.from_numpy(bank.features[bank.entries(utts, rng)].astype(np.float32))
            intent, named = utterance_labels(sampler.data, utts)
            emb = model.audio_encoder.head(feats)
            losses = _command_losses(model.intent_head(emb), model.object_head(emb), intent, named, cfg)
            _step(optimizer, losses, running, bar)
    return running


def validate(model, data, samples) -> dict:
    """Validation metrics, overall and per synthesis method (the Klatt method is never trained on)."""
    out = run_model(model, data, samples)
    model.train()
    kinds = utterance_kinds(samples)
    metrics = compute_metrics(out, kinds)
    methods = sample_methods(data, samples)
    if len(set(methods) - {""}) > 1:
        metrics["by_synthesis_method"] = metrics_by_method(out, methods, kinds)
    return metrics


def _held_out_text(m: dict) -> str:
    """The validation figures of the synthesis methods never trained on (Klatt, GnuSpeech), for the log."""
    from sim.other_voices import HELD_OUT_ENGINES

    by_method = m.get("by_synthesis_method") or {}
    parts = []
    for method, label in [("klatt", "Klatt"), *((e, e) for e in HELD_OUT_ENGINES)]:
        held = by_method.get(method)
        if held:
            parts.append(f" | unseen method ({label}): intent {100 * held['intent_accuracy']:.2f}%, grounded "
                         f"{100 * held.get('grounded_rate', float('nan')):.2f}%")
    return "".join(parts)


def train(config: RunConfig, out: str | Path, *, cache_root: str | Path = "data", run_dir: str | Path | None = None,
          resume: bool = False, progress: bool = True, log=print) -> dict:
    """Train the reference model and write the final checkpoint to ``out``; returns its metadata."""
    out = Path(out)
    run_dir = Path(run_dir) if run_dir else Path("runs") / out.stem
    state_path = run_dir / "state.pt"
    cfg = config.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    t0 = time.monotonic()
    log("preparing data (cached under %s after the first run)" % cache_root)
    train_data = load_split(config.data, "train", cache_root, progress=progress)
    val_data = load_split(config.data, "val", cache_root, progress=progress)
    val_samples = evaluation_samples(val_data, cfg.seed, cfg.val_snr_db, config.data.present_fraction)
    model = ReferenceModel(config.model)
    bank = None
    if config.model.audio_frontend == "speech_embedding":
        log("speech-embedding features of augmented training windows (cached under %s after the first run)"
            % cache_root)
        bank = load_bank(model.audio_encoder, train_data, config.data.digest("train"), config.bank, cfg.seed,
                         cache_root, cfg.snr_range_db, cfg.clean_fraction, progress=progress, log=log)
    data_s = time.monotonic() - t0

    # The audio parts may learn slower in the joint steps, the fine-tuned pretrained blocks slower still.
    groups = _param_groups(model, [model], cfg, cfg.audio_lr_scale if bank is not None else 1.0)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 99])
    sampler = TrainSampler(train_data, config.data.present_fraction, cfg.snr_range_db, cfg.clean_fraction, bank=bank)
    start_step, history, elapsed_before = 0, [], 0.0
    if resume and state_path.exists():
        state = _load_state(state_path)
        if _resume_key(state.get("config", {})) != _resume_key(config.to_dict()):
            raise ConfigError(f"cannot resume from {state_path}: it was trained with another config; "
                              "delete it or drop --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start_step, history, elapsed_before = state["step"], state["history"], state.get("elapsed_s", 0.0)
        log(f"resumed from {state_path} at step {start_step}")
    elif resume:
        log(f"no training state at {state_path}; starting from step 0")
    elif state_path.exists():
        log(f"starting afresh: {state_path} will be replaced (use --resume to continue it)")

    model.train()
    if bank is not None and cfg.audio_pretrain_steps and start_step == 0:
        t_pre = time.monotonic()
        pre_losses = pretrain_audio(model, bank, sampler, cfg, np.random.default_rng([cfg.seed, 77]), progress)
        m = validate(model, val_data, val_samples)
        history.append({"step": 0, "loss": pre_losses, "val": m, "elapsed_s": time.monotonic() - t_pre})
        log(f"audio pretraining ({cfg.audio_pretrain_steps} steps, {time.monotonic() - t_pre:.0f} s): val intent acc "
            f"{100 * m['intent_accuracy']:.2f}%{_held_out_text(m)}")
    train_t0 = time.monotonic() - elapsed_before
    running: dict[str, float] = {}
    bar = progress_bar(cfg.steps, "train", progress)
    bar.update(start_step)
    for step in range(start_step, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg) * group["scale"]
        batch = sampler.batch(rng, cfg.batch_size)
        batch["cells"] = cell_labels(train_data, batch["scene"], config.model.grid_hw)
        if bank is None:
            outputs = model.forward_train(torch.from_numpy(batch["image"]), torch.from_numpy(batch["audio"]))
        else:
            outputs = model.forward_train(torch.from_numpy(batch["image"]),
                                          audio_features=torch.from_numpy(batch["audio_features"]))
        losses = _losses(outputs, batch, cfg, config.model.grid_hw)
        _step(optimizer, losses, running, bar)

        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            m = validate(model, val_data, val_samples)
            history.append({"step": done, "loss": dict(running), "val": m, "elapsed_s": time.monotonic() - train_t0})
            log(f"step {done}: val intent acc {100 * m['intent_accuracy']:.2f}% | target in box "
                f"{100 * m.get('target_in_box_rate', float('nan')):.2f}% | false accept "
                f"{100 * (m['false_accept_rate'] or 0):.2f}%{_held_out_text(m)}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                "step": done, "history": history, "config": config.to_dict(),
                                "elapsed_s": time.monotonic() - train_t0}, state_path)
    bar.close()
    # The command threshold is part of the model: the runtime acts on a command
    # only when its probability reaches it. It is chosen on the validation split.
    val_methods = sample_methods(val_data, val_samples)
    val_out = run_model(model, val_data, val_samples)
    threshold = choose_threshold(val_out, val_methods)
    model.train()
    val_false_accepts = group_false_accepts(val_out, val_methods, threshold)
    log(f"command threshold {threshold:.2f}; validation false accepts there: " + ", ".join(
        f"{group} {100 * rate:.2f} % (cap {100 * cap:.1f} %)"
        for group, (rate, cap) in val_false_accepts.items() if rate is not None))
    over = [group for group, (rate, cap) in val_false_accepts.items() if rate is not None and rate > cap]
    if over:
        caps = "its cap" if len(over) == 1 else "their caps"
        log(f"warning: no threshold up to {THRESHOLD_GRID[-1]:.2f} keeps validation false accepts on "
            f"{' and '.join(over)} within {caps}, so this model acts on more 'none' audio than the caps "
            "allow; measure it with `voxedge evaluate` before deploying it")

    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_config": config.model.to_dict(),
        "data_config": config.data.to_dict(),
        "train_config": asdict(config.train),
        "intents": list(INTENTS),
        "objects": [" ".join(o) for o in OBJECT_TYPES],
        "steps": cfg.steps,
        "command_threshold": threshold,
        "validation_false_accepts": {group: rate for group, (rate, _) in val_false_accepts.items()},
        "val_metrics": history[-1]["val"] if history else None,
        "history": [{"step": h["step"], "loss": h["loss"], "elapsed_s": h["elapsed_s"],
                     "val_intent_accuracy": h["val"]["intent_accuracy"]} for h in history],
        "timing_s": {"data": data_s, "train": time.monotonic() - train_t0},
        "versions": {"torch": str(torch.__version__), "python": platform.python_version(), "numpy": np.__version__},
    }
    _atomic_torch_save({**meta, "state_dict": model.state_dict()}, out)
    write_json(out.with_suffix(".json"), meta)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) after {cfg.steps} steps "
        f"in {(time.monotonic() - t0) / 60:.1f} min")
    return meta
