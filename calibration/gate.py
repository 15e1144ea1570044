"""Accuracy gate: a quantized model may replace FP32 only if it decides (almost) the same.

Both models run with ONNX Runtime on the CPU over a labelled evaluation set,
fed as the robot feeds them (``calibration.sampleset.model_feed``).
Limits: intent accuracy may drop by at most 0.5 points, and the mean target-point
error may grow by at most 1 % of the image width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError
from calibration.sampleset import SampleSet, feed_size
from edge.contract.vocabulary import OBJECT_INTENTS  # intents whose target point is meaningful

MAX_ACCURACY_DROP = 0.005  # 0.5 percentage points
MAX_TARGET_ERROR_INCREASE = 0.01  # fraction of the image width


@dataclass(frozen=True)
class GateLimits:
    """How much worse than FP32 a quantized model may be."""

    max_accuracy_drop: float = MAX_ACCURACY_DROP
    max_target_error_increase: float = MAX_TARGET_ERROR_INCREASE


DEFAULT_LIMITS = GateLimits()

@dataclass(frozen=True)
class ModelScore:
    intent_accuracy: float
    target_error_width_fraction: float  # mean distance to the labelled target, in image widths
    n_intent: int
    n_target: int
    confusion: tuple[tuple[int, ...], ...] = ()  # [spoken][decided] counts over the intent labels


@dataclass(frozen=True)
class GateResult:
    reference: ModelScore
    candidate: ModelScore
    accuracy_drop: float
    target_error_increase: float
    passed: bool
    limits: GateLimits = field(default_factory=GateLimits)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        verdict = "passes" if self.passed else "FAILS"
        return (f"accuracy gate {verdict}: intent accuracy {100 * self.reference.intent_accuracy:.2f} % -> "
                f"{100 * self.candidate.intent_accuracy:.2f} % (drop {100 * self.accuracy_drop:.2f} points, limit "
                f"{100 * self.limits.max_accuracy_drop:.2f}); target error {100 * self.reference.target_error_width_fraction:.2f} % "
                f"-> {100 * self.candidate.target_error_width_fraction:.2f} % of the width (increase "
                f"{100 * self.target_error_increase:.2f}, limit {100 * self.limits.max_target_error_increase:.2f})")


def score(model_path: str | Path, eval_set: SampleSet, manifest, emulate_qdq: bool = False) -> ModelScore:
    """Intent accuracy and target error of an ONNX model on a labelled set, with ONNX Runtime (CPU).

    ``emulate_qdq``: run a Q/DQ model's quantization in float (the arithmetic TensorRT computes) instead
    of ONNX Runtime's int8 kernels (``edge.runners.onnxruntime.make_session``).
    """
    from edge.runners.onnxruntime import make_session

    heads, pre = manifest.heads, manifest.preprocessing
    labels = list(heads.intent_labels)
    session = make_session(model_path, emulate_qdq=emulate_qdq)
    names = [o.name for o in session.get_outputs()]
    confusion = np.zeros((len(labels), len(labels)), np.int64)
    correct = n_intent = n_target = 0
    err_sum = 0.0
    start = 0
    aspect = pre.image_height / pre.image_width
    for feed in eval_set.feeds(manifest, 64):
        out = dict(zip(names, session.run(None, feed)))
        recs = eval_set.records[start : start + feed_size(feed)]
        start += len(recs)
        pred = out[heads.intent_output].argmax(1)
        for rec, p, k in zip(recs, pred, range(len(recs))):
            if rec.intent is not None:
                if rec.intent not in labels:
                    raise CalibrationError(f"sample {rec.id}: intent {rec.intent!r} is not one of the model's {labels}")
                correct += int(labels[int(p)] == rec.intent)
                confusion[labels.index(rec.intent), int(p)] += 1
                n_intent += 1
            if rec.target_xy is not None and heads.target_point_output:
                d = np.asarray(out[heads.target_point_output][k], np.float64) - np.asarray(rec.target_xy)
                err_sum += float(np.hypot(d[0], d[1] * aspect))
                n_target += 1
    if n_intent == 0:
        raise CalibrationError(f"evaluation set {eval_set.path} has no labelled intents; the gate needs labels")
    return ModelScore(correct / n_intent, err_sum / n_target if n_target else 0.0, n_intent, n_target,
                      tuple(tuple(int(v) for v in row) for row in confusion))


def pseudo_labelled(eval_set: SampleSet, fp32_path, manifest) -> SampleSet:
    """``eval_set`` with the FP32 model's own decisions as labels (for unlabelled sets, e.g. a robot's audit log).

    Gating against these measures how far the quantized model strays from FP32:
    FP32 scores 100 % by construction, the candidate scores its agreement.
    """
    import dataclasses

    from edge.runners.onnxruntime import make_session

    heads = manifest.heads
    session = make_session(fp32_path)
    names = [o.name for o in session.get_outputs()]
    records, start = [], 0
    for feed in eval_set.feeds(manifest, 64):
        out = dict(zip(names, session.run(None, feed)))
        for k, rec in enumerate(eval_set.records[start : start + feed_size(feed)]):
            intent = heads.intent_labels[int(out[heads.intent_output][k].argmax())]
            target = None
            if heads.target_point_output and intent in OBJECT_INTENTS:
                target = tuple(float(v) for v in out[heads.target_point_output][k])
            records.append(dataclasses.replace(rec, intent=intent, target_xy=target))
        start += feed_size(feed)
    return dataclasses.replace(eval_set, records=tuple(records),
                               meta={**eval_set.meta, "labels": f"pseudo: FP32 decisions of {Path(fp32_path).name}"})


def accuracy_gate(fp32_path, candidate_path, eval_set: SampleSet, manifest, limits: GateLimits | None = None,
                  reference: ModelScore | None = None, emulate_qdq: bool = False) -> GateResult:
    """Compare a candidate (e.g. INT8 Q/DQ) with the FP32 model on ``eval_set``.

    ``reference`` is the FP32 score when already known (the precision search
    gates several candidates against the same FP32 model). ``emulate_qdq`` runs
    the candidate's Q/DQ arithmetic in float (see ``score``).
    """
    limits = limits or DEFAULT_LIMITS
    ref = reference or score(fp32_path, eval_set, manifest)
    cand = score(candidate_path, eval_set, manifest, emulate_qdq=emulate_qdq)
    drop = ref.intent_accuracy - cand.intent_accuracy
    increase = cand.target_error_width_fraction - ref.target_error_width_fraction
    passed = drop <= limits.max_accuracy_drop + 1e-12 and increase <= limits.max_target_error_increase + 1e-12
    return GateResult(ref, cand, drop, increase, passed=passed, limits=limits)
