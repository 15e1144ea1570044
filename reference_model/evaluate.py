"""Evaluation of the reference model on a held-out split (unseen voices and scenes).

Reports intent accuracy and its confusion matrix, ROC-AUC of command vs none,
false accepts on "none" audio (distractor speech, noise, silence), presence
accuracy, and whether the target point lands inside the named object's box.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edge.contract.vocabulary import INTENTS, NONE_INTENT, OBJECT_INTENTS
from reference_model.errors import CheckpointError, ConfigError
from reference_model.io import atomic_write, load_or_build, progress_bar, write_json

NONE_INDEX = INTENTS.index(NONE_INTENT)
OBJECT_INTENT_IDS = [INTENTS.index(i) for i in OBJECT_INTENTS]
DEFAULT_SNR_DB = 10.0
EVAL_SEED = 1234
BOX_WIDTH_BINS_PX = ((0, 8), (8, 12), (12, 20), (20, 40), (40, 161))
# A command is acted on only when its probability reaches the command threshold;
# otherwise the decision is "none". The threshold is chosen on the validation
# split (never the test split) as the lowest one whose false-accept rate on
# "none" audio stays within a cap for each group of synthesis methods:
# espeak-ng's own methods (formant and Klatt voices) at most THRESHOLD_MAX_FALSE_ACCEPT,
# and each other synthesizer (a method the training split never uses, see
# DataConfig.other_voices) at most THRESHOLD_MAX_FALSE_ACCEPT_OTHER. Both are
# half of issue 14's targets (1 % and 2 %), a margin for the test split.
THRESHOLD_MAX_FALSE_ACCEPT = 0.005
THRESHOLD_MAX_FALSE_ACCEPT_OTHER = 0.01
ESPEAK_METHODS = ("espeak-ng", "klatt")
THRESHOLD_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95


def run_model(model, data, samples, batch_size: int = 128, progress: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` over ``samples``; returns predictions and labels as numpy arrays."""
    import torch

    from reference_model.dataset import collate

    model.eval()
    chunks: list[dict[str, np.ndarray]] = []
    with torch.no_grad(), progress_bar(len(samples), "evaluate", progress) as bar:
        for start in range(0, len(samples), batch_size):
            batch = collate(data, samples[start : start + batch_size])
            logits, xy, presence, _ = model(torch.from_numpy(batch["image"]), torch.from_numpy(batch["audio"]))
            batch.pop("image")
            batch.pop("audio")
            batch.update(
                intent_logits=logits.numpy(), pred_xy=xy.numpy(), presence_logit=presence.numpy()
            )
            chunks.append(batch)
            bar.update(len(batch["intent"]))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def decide(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Intent decisions: the most likely intent, or "none" when a command's probability is below ``threshold``."""
    pred = probs.argmax(1)
    return np.where((pred != NONE_INDEX) & (probs.max(1) < threshold), NONE_INDEX, pred)


def threshold_groups(methods: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """Per group of synthesis methods (see THRESHOLD_MAX_FALSE_ACCEPT): which samples it judges and its
    false-accept cap. Noise-only and silent windows (method ``""``) count in every group."""
    methods = np.asarray(methods).astype(str)
    shared = methods == ""
    groups = {"espeak-ng": (shared | np.isin(methods, ESPEAK_METHODS), THRESHOLD_MAX_FALSE_ACCEPT)}
    for method in sorted(set(methods.tolist()) - set(ESPEAK_METHODS) - {""}):
        groups[method] = (shared | (methods == method), THRESHOLD_MAX_FALSE_ACCEPT_OTHER)
    return groups


def group_false_accepts(out: dict[str, np.ndarray], methods: np.ndarray | None,
                        threshold: float) -> dict[str, tuple[float | None, float]]:
    """Per group of ``threshold_groups``: (false-accept rate on its "none" audio at ``threshold``, or None
    when it has none; its cap). Without ``methods``, all of it is judged as espeak-ng's."""
    is_none = out["intent"] == NONE_INDEX
    if methods is None:
        methods = np.full(len(is_none), "espeak-ng")
    accepted = decide(_softmax(out["intent_logits"]), threshold) != NONE_INDEX
    rates: dict[str, tuple[float | None, float]] = {}
    for group, (sel, cap) in threshold_groups(methods).items():
        sel = sel & is_none
        rates[group] = (float(accepted[sel].mean()) if sel.any() else None, cap)
    return rates


def choose_threshold(out: dict[str, np.ndarray], methods: np.ndarray | None = None) -> float:
    """The lowest command threshold on THRESHOLD_GRID whose false-accept rate on "none" audio is within
    every group's cap (``group_false_accepts``); the grid's top when none is (the caller reports that)."""
    for threshold in THRESHOLD_GRID:
        rates = group_false_accepts(out, methods, threshold).values()
        if all(rate is None or rate <= cap for rate, cap in rates):
            return threshold
    return THRESHOLD_GRID[-1]


def compute_metrics(out: dict[str, np.ndarray], utt_kind: np.ndarray | None = None, image_width: int = 160,
                    threshold: float = 0.0) -> dict:
    """Metrics from ``run_model`` output.

    Args:
        out: predictions and labels from ``run_model``.
        utt_kind: per sample, the audio source of "none" samples (speech, noise, silence).
        image_width: model input width in pixels, for the per-object-size breakdown.
        threshold: command threshold (see ``decide``); 0 means the plain argmax.
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score

    probs = _softmax(out["intent_logits"])
    argmax = probs.argmax(1)
    pred = decide(probs, threshold)
    label = out["intent"]
    is_none = label == NONE_INDEX
    metrics: dict = {
        "n_samples": len(label),
        "command_threshold": float(threshold),
        "argmax_intent_accuracy": float((argmax == label).mean()),
        "argmax_false_accept_rate": float((argmax[is_none] != NONE_INDEX).mean()) if is_none.any() else None,
        "intent_accuracy": float((pred == label).mean()),
        "per_intent_accuracy": {
            INTENTS[i]: float((pred[label == i] == i).mean()) for i in range(len(INTENTS)) if (label == i).any()
        },
        "confusion_matrix": confusion_matrix(label, pred, labels=list(range(len(INTENTS)))).tolist(),
        "false_accept_rate": float((pred[is_none] != NONE_INDEX).mean()) if is_none.any() else None,
        "command_miss_rate": float((pred[~is_none] == NONE_INDEX).mean()) if (~is_none).any() else None,
    }
    if is_none.any() and (~is_none).any():
        metrics["command_vs_none_roc_auc"] = float(roc_auc_score(~is_none, 1.0 - probs[:, NONE_INDEX]))
    if utt_kind is not None:
        metrics["false_accept_by_source"] = {
            kind: float((pred[is_none & (utt_kind == kind)] != NONE_INDEX).mean())
            for kind in ("speech", "noise", "silence")
            if (is_none & (utt_kind == kind)).any()
        }

    obj = np.isin(label, OBJECT_INTENT_IDS)
    if obj.any():
        presence = out["presence"][obj] > 0.5
        pred_presence = out["presence_logit"][obj] > 0.0
        metrics["presence_accuracy"] = float((presence == pred_presence).mean())
        if presence.any() and (~presence).any():
            metrics["presence_roc_auc"] = float(roc_auc_score(presence, out["presence_logit"][obj]))
        visible = obj & (out["presence"] > 0.5)
        if visible.any():
            xy, box = out["pred_xy"][visible], out["target_box"][visible]
            inside = (xy[:, 0] >= box[:, 0]) & (xy[:, 0] <= box[:, 2]) & (xy[:, 1] >= box[:, 1]) & (
                xy[:, 1] <= box[:, 3]
            )
            err = np.abs(xy - out["target_xy"][visible])
            width_px = (box[:, 2] - box[:, 0]) * image_width
            metrics["target_in_box_by_width_px"] = {
                f"{lo}-{hi}": {"n": int(sel.sum()), "rate": float(inside[sel].mean())}
                for lo, hi in BOX_WIDTH_BINS_PX
                if (sel := (width_px >= lo) & (width_px < hi)).any()
            }
            metrics.update(
                n_target_samples=int(visible.sum()),
                target_in_box_rate=float(inside.mean()),
                # the named object grounded: the right intent *and* the point inside its box
                grounded_rate=float((inside & (pred[visible] == label[visible])).mean()),
                target_error_mean_width_fraction=float(np.hypot(err[:, 0], err[:, 1] * 0.75).mean()),
            )
    return metrics


def synthesis_method(voice: str) -> str:
    """``"klatt"`` for espeak-ng's Klatt-engine variants (never trained on), ``"sam"`` for SAM, the engine for
    ``sim.other_voices``' (``"pico"``, ``"piper"``, ``"gnuspeech"``), else ``"espeak-ng"``."""
    from sim.other_voices import ENGINES
    from sim.speech import HELD_OUT_METHOD_VARIANTS

    engine = voice.split(":", 1)[0] if ":" in voice else None
    if engine == "sam" or engine in ENGINES:
        return engine
    variant = voice.split("+", 1)[1] if "+" in voice else None
    return "klatt" if variant in HELD_OUT_METHOD_VARIANTS else "espeak-ng"


def sample_methods(data, samples) -> np.ndarray:
    """Per sample, the synthesis method of its speech; ``""`` for noise-only and silent windows."""
    return np.array([synthesis_method(str(data.utt_voice[s.utt])) if s.utt >= 0 else "" for s in samples])


def metrics_by_method(out: dict[str, np.ndarray], methods: np.ndarray, utt_kind: np.ndarray | None = None,
                      image_width: int = 160, threshold: float = 0.0) -> dict[str, dict]:
    """``compute_metrics`` per synthesis method; noise-only and silent windows count in every group."""
    groups = sorted({str(m) for m in methods} - {""})  # plain str keys: checkpoints load weights-only
    result = {}
    for method in groups:
        sel = (methods == method) | (methods == "")
        result[method] = compute_metrics({k: v[sel] for k, v in out.items()},
                                         None if utt_kind is None else utt_kind[sel], image_width, threshold)
    return result


def utterance_kinds(samples) -> np.ndarray:
    """Label each sample's audio source: speech (a command or a distractor), noise or silence."""
    from reference_model.dataset import NONE_NOISE_ONLY, NONE_SILENCE

    return np.array([
        "noise" if s.utt == NONE_NOISE_ONLY else "silence" if s.utt == NONE_SILENCE else "speech"
        for s in samples
    ])


def plot_confusion(matrix, path: Path, title: str) -> None:
    """Save a labelled confusion-matrix heat map (row-normalised) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(INTENTS)), INTENTS, rotation=45, ha="right")
    ax.set_yticks(range(len(INTENTS)), INTENTS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("spoken")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


SYNTHESIZERS = ("espeak-ng", "sam", "pico", "piper", "gnuspeech")  # the last three: sim.other_voices.ENGINES


def respoken(data, synthesizer: str, cache_root: str | Path):
    """``data`` with every utterance spoken again by ``synthesizer`` (same text, labels, scenes and noise).

    "sam" (``sim.sam``) is a synthesizer the model never heard in any split: evaluation only. "pico", "piper"
    and "gnuspeech" are ``sim.other_voices``' engines (a corpus with ``other_voices`` trains on the first two
    and validates on GnuSpeech). The respoken utterances are cached beside the split.
    """
    import dataclasses

    if synthesizer == "espeak-ng":
        return data
    if synthesizer not in SYNTHESIZERS:
        raise ValueError(f"unknown synthesizer {synthesizer!r}; expected one of {SYNTHESIZERS}")
    texts = [str(t) for t in data.utt_text]
    if synthesizer == "sam":
        from sim import sam

        recipe = repr(sam.VOICES) + sam.SAM_PACKAGE
    else:
        from sim import other_voices

        recipe = (repr(other_voices.ENGINE_VOICES[synthesizer]) + other_voices.PACKAGES[synthesizer]
                  + f"v{other_voices.CACHE_FORMAT_VERSION}")
    key = hashlib.sha256(("\n".join(texts) + recipe).encode()).hexdigest()[:16]

    def speak() -> dict[str, np.ndarray]:
        if synthesizer == "sam":
            voices = [sam.VOICES[i % len(sam.VOICES)] for i in range(len(texts))]
            audio = sam.synthesize_sam_fitting(texts, voices, Path(cache_root))
            names = [f"sam:{v.name}" for v in voices]
        else:
            audio, names = other_voices.speak_fitting(texts, synthesizer, Path(cache_root) / "speech")
        return {"audio": np.concatenate(audio).astype(np.float32),
                "offsets": np.concatenate([[0], np.cumsum([len(a) for a in audio])]).astype(np.int64),
                "voices": np.array(names)}

    def load(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as z:
            return {k: z[k] for k in ("audio", "offsets", "voices")}

    spoken = load_or_build(Path(cache_root) / f"{data.name}-{synthesizer}-{key}.npz", load, speak,
                           lambda arrays, path: atomic_write(path, lambda f: np.savez(f, **arrays)),
                           f"{synthesizer} speech")
    return dataclasses.replace(data, utt_audio=spoken["audio"], utt_offsets=spoken["offsets"],
                               utt_voice=spoken["voices"])


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", snr_db: float | None = DEFAULT_SNR_DB,
                        out_dir: str | Path | None = None, cache_root: str | Path = "data",
                        progress: bool = True, synthesizer: str = "espeak-ng",
                        threshold: float | None = None) -> dict:
    """Evaluate a checkpoint on a split at a fixed SNR; writes metrics JSON and a confusion plot.

    ``synthesizer="sam"`` speaks the split's commands again with SAM, which no split uses. ``threshold``
    scores the decisions at another command threshold than the checkpoint's (another operating point);
    the outputs' names then end in ``-threshold<T>``.
    """
    if threshold is not None:
        check_threshold(threshold)
    from reference_model.dataset import DataConfig, evaluation_samples, load_split
    from reference_model.model import load_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint} does not exist; train one with `voxedge train` or `make reference-model`"
        )
    model, meta = load_checkpoint(checkpoint)
    data_cfg = DataConfig.from_dict(meta["data_config"])
    data = respoken(load_split(data_cfg, split, cache_root, progress=progress), synthesizer, cache_root)
    samples = evaluation_samples(data, EVAL_SEED, snr_db, data_cfg.present_fraction)
    out = run_model(model, data, samples, progress=progress)
    kinds = utterance_kinds(samples)
    chosen = threshold is not None
    threshold = threshold if chosen else meta.get("command_threshold", 0.0)
    metrics = compute_metrics(out, kinds, image_width=data_cfg.image_width, threshold=threshold)
    methods = sample_methods(data, samples)
    if len(set(methods) - {""}) > 1:
        metrics["by_synthesis_method"] = metrics_by_method(out, methods, kinds, data_cfg.image_width, threshold)
    metrics.update(split=split, snr_db=snr_db, synthesizer=synthesizer, checkpoint=checkpoint.name,
                   threshold_source="--threshold" if chosen else "validation split",
                   checkpoint_sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest())
    if out_dir is not None:
        out_dir = Path(out_dir)
        name = evaluation_name(split, synthesizer, threshold if chosen else None)
        voices = "unseen voices" if synthesizer == "espeak-ng" else f"spoken by {synthesizer}"
        plot_confusion(metrics["confusion_matrix"], out_dir / f"confusion-{name}.png",
                       f"{split} split ({voices}, unseen scenes), {_snr_text(snr_db)}")
        write_json(out_dir / f"metrics-{name}.json", metrics)
    return metrics


def check_threshold(threshold: float) -> None:
    """Refuse a command threshold that is not a probability in [0, 1) (0 is the plain argmax)."""
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"--threshold must be in [0, 1) (a command probability; 0 is the plain argmax), "
                          f"got {threshold}")


def evaluation_name(split: str, synthesizer: str = "espeak-ng", threshold: float | None = None) -> str:
    """The stem of an evaluation's outputs (metrics-<name>.json, confusion-<name>.png)."""
    name = split if synthesizer == "espeak-ng" else f"{split}-{synthesizer}"
    return name if threshold is None else f"{name}-threshold{threshold:.2f}"


def _snr_text(snr_db: float | None) -> str:
    return "clean audio" if snr_db is None else f"{snr_db:g} dB SNR"


def format_metrics(m: dict) -> str:
    """A short human-readable summary."""
    given = m.get("threshold_source") == "--threshold"
    source = "given with --threshold" if given else "chosen on the validation split"
    lines = [
        f"split {m.get('split', '?')} spoken by {m.get('synthesizer', 'espeak-ng')} at {_snr_text(m.get('snr_db'))}, "
        f"{m['n_samples']} samples",
        f"  command threshold          {m.get('command_threshold', 0.0):.2f}   ({source})",
        f"  intent accuracy            {100 * m['intent_accuracy']:.2f} %   (target >= 97 %)",
    ]
    if m.get("target_in_box_rate") is not None:
        lines.append(f"  target point inside box    {100 * m['target_in_box_rate']:.2f} %   (target >= 95 %,"
                     f" n={m['n_target_samples']})")
        lines.append(f"  named object grounded      {100 * m['grounded_rate']:.2f} %   (right intent and point in box)")
    for size, v in (m.get("target_in_box_by_width_px") or {}).items():
        lines.append(f"    object {size:>6} px wide         {100 * v['rate']:6.2f} %   (n={v['n']})")
    if m.get("false_accept_rate") is not None:
        lines.append(f"  false accept on none       {100 * m['false_accept_rate']:.2f} %   (target <= 1 %)")
    for k, v in (m.get("false_accept_by_source") or {}).items():
        lines.append(f"    from {k:<8}               {100 * v:.2f} %")
    if m.get("argmax_false_accept_rate") is not None:
        lines.append(f"  without threshold (argmax) intent accuracy {100 * m['argmax_intent_accuracy']:.2f} %, "
                     f"false accept {100 * m['argmax_false_accept_rate']:.2f} %")
    if m.get("command_vs_none_roc_auc") is not None:
        lines.append(f"  command vs none ROC-AUC    {m['command_vs_none_roc_auc']:.4f}")
    if m.get("presence_accuracy") is not None:
        lines.append(f"  presence accuracy          {100 * m['presence_accuracy']:.2f} %")
    for name, acc in m["per_intent_accuracy"].items():
        lines.append(f"    {name:<12} {100 * acc:6.2f} %")
    for method, mm in (m.get("by_synthesis_method") or {}).items():
        lines.append(f"  speech synthesized by {method}: intent {100 * mm['intent_accuracy']:.2f} %, grounded "
                     f"{100 * mm.get('grounded_rate', float('nan')):.2f} %, false accept "
                     f"{100 * (mm['false_accept_rate'] or 0):.2f} %")
    return "\n".join(lines)
