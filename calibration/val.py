"""``voxedge val``: measure a bundle on a labelled sample set, per precision, as the robot would run it.

Like ``yolo val`` or ``polygraphy run``: a user's own data (``voxedge import-set``, a labelled audit log,
``voxedge make-set``) through each of the bundle's models, with the runner ``serve`` would use on this
machine (so an INT8 bundle on a CPU that saturates int8 runs what serve runs), and the decision rule the
robot applies (the manifest's command threshold). Per precision:

- intent accuracy: argmax, and as decided (below the threshold the decision is "none");
- false accepts: the share of samples labelled "none" on which the robot would act;
- command detection ROC-AUC: the top command probability separating commands from "none";
- grounding: mean distance of the target point to the labelled one, in image widths, and the share
  within 10 % of the width;
- the confusion matrix of the decisions (a table, and a PNG beside the JSON).

A set smaller than 200 labelled samples cannot resolve the INT8 gate's 0.5-point limit (one sample is
worth more than that): the result says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from calibration.sampleset import GATE_RESOLVING_SAMPLES, SampleSet, feed_size

GROUNDED_WITHIN = 0.10  # a target point within this fraction of the image width counts as grounded
BATCH = 32


@dataclass(frozen=True)
class ValResult:
    precision: str
    model: str
    n_intent: int
    accuracy_argmax: float
    accuracy_decided: float
    false_accept_rate: float | None  # None without "none"-labelled samples
    n_none: int
    command_auc: float | None  # None without both commands and "none"
    n_target: int
    target_error_width_fraction: float | None
    grounded_rate: float | None
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]  # [labelled][decided]
    warnings: tuple[str, ...]


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC-AUC by ranks (Mann-Whitney U), ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def validate(bundle, sample_set: SampleSet, precision: str, progress: bool = True) -> ValResult:
    """Run one of the bundle's precisions over the set and score it."""
    from edge.runners import make_runner

    manifest = bundle.manifest
    heads, pre = manifest.heads, manifest.preprocessing
    labels = tuple(heads.intent_labels)
    none = labels.index("none") if "none" in labels else None
    runner = make_runner("onnxruntime", bundle, precision, intra_op_threads=0)
    runner.activate()
    probs, truth, target_err = [], [], []
    try:
        start, total = 0, len(sample_set)
        for feed in sample_set.feeds(manifest, BATCH):
            out = runner.infer(feed)
            n = feed_size(feed)
            recs = sample_set.records[start:start + n]
            logits = np.asarray(out[heads.intent_output], np.float64)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            for k, rec in enumerate(recs):
                if rec.intent is None:
                    continue
                if rec.intent not in labels:
                    raise CalibrationError(f"sample {rec.id}: intent {rec.intent!r} is not one of the model's "
                                           f"{list(labels)}")
                probs.append(p[k])
                truth.append(labels.index(rec.intent))
                if rec.target_xy is not None and heads.target_point_output:
                    d = np.asarray(out[heads.target_point_output][k], np.float64) - np.asarray(rec.target_xy)
                    target_err.append(float(np.hypot(d[0], d[1] * pre.image_height / pre.image_width)))
            start += n
            if progress:
                print(f"  {precision}: {start}/{total} samples", end="\r", flush=True)
        if progress:
            print()
        model = runner.model_path.name
    finally:
        runner.deactivate()
    if not truth:
        raise CalibrationError(f"{sample_set.path} has no labelled intents (an audit log is unlabelled): label "
                               "it (labels.jsonl with voxedge import-set), or gate on agreement with FP32 with "
                               "voxedge calibrate")
    probs_a, truth_a = np.stack(probs), np.asarray(truth)
    argmax = probs_a.argmax(axis=1)
    decided = argmax.copy()
    if none is not None:
        decided[probs_a[np.arange(len(argmax)), argmax] < heads.command_threshold] = none
    confusion = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(confusion, (truth_a, decided), 1)
    fa = auc = None
    n_none = int((truth_a == none).sum()) if none is not None else 0
    if none is not None and n_none:
        fa = float((decided[truth_a == none] != none).mean())
        command_p = np.delete(probs_a, none, axis=1).max(axis=1)
        auc = _auc(command_p, truth_a != none)
    warnings = []
    if len(truth_a) < GATE_RESOLVING_SAMPLES:
        warnings.append(f"{len(truth_a)} labelled samples: one sample moves accuracy by {100 / len(truth_a):.2f} "
                        f"points, more than the INT8 gate's 0.5 (use {GATE_RESOLVING_SAMPLES} or more)")
    if none is not None and n_none == 0:
        warnings.append("no sample is labelled 'none': false accepts cannot be measured")
    err = np.asarray(target_err)
    return ValResult(
        precision=precision, model=model, n_intent=len(truth_a),
        accuracy_argmax=float((argmax == truth_a).mean()), accuracy_decided=float((decided == truth_a).mean()),
        false_accept_rate=fa, n_none=n_none, command_auc=auc, n_target=len(err),
        target_error_width_fraction=float(err.mean()) if len(err) else None,
        grounded_rate=float((err <= GROUNDED_WITHIN).mean()) if len(err) else None,
        labels=labels, confusion=tuple(tuple(int(v) for v in row) for row in confusion), warnings=tuple(warnings))


def confusion_table(r: ValResult) -> str:
    width = max(6, *(len(x) for x in r.labels)) + 1
    head = "labelled/decided"
    width = max(width, len(head) + 1)
    lines = [f"{head:<{width}}" + "".join(f"{x[:8]:>9}" for x in r.labels)]
    for name, row in zip(r.labels, r.confusion):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>9d}" for v in row))
    return "\n".join(lines)


def plot_confusion(r: ValResult, path: Path) -> Path | None:
    """The confusion matrix as a PNG (row-normalised colours, counts written in); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    m = np.asarray(r.confusion, np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(r.labels), 0.8 + 0.6 * len(r.labels)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(r.labels)), r.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(r.labels)), r.labels)
    for i in range(len(r.labels)):
        for j in range(len(r.labels)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                        fontsize=8)
    ax.set_xlabel("decided (as the robot would act)")
    ax.set_ylabel("labelled")
    ax.set_title(f"{r.precision} ({r.model}): {100 * r.accuracy_decided:.1f} % decided right, n={r.n_intent}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_line(r: ValResult) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    auc = "n/a" if r.command_auc is None else f"{r.command_auc:.4f}"
    return (f"{r.precision:<5} {r.model:<22} n={r.n_intent:<5} accuracy {pct(r.accuracy_decided)} (argmax "
            f"{pct(r.accuracy_argmax)})  false accepts {pct(r.false_accept_rate)} of {r.n_none}  AUC {auc}  "
            f"grounded {pct(r.grounded_rate)} (error {pct(r.target_error_width_fraction)} of the width)")


def write_results(results: list[ValResult], out: Path) -> Path:
    path = out / "val.json"
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return path
