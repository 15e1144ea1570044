"""The model's outputs as a decision: intent probabilities, the command threshold, target and presence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.contract.vocabulary import NONE_INTENT


@dataclass(frozen=True)
class Decoded:
    intent: str  # what the robot acts on: the model's intent if confident enough, else "none"
    model_intent: str  # the most likely intent, whatever its probability
    confidence: float  # its softmax probability
    accepted: bool  # a command the robot acts on (not "none", at or above the command threshold)
    probabilities: dict[str, float]
    target_xy: tuple[float, float] | None  # normalised image point of the named object, if the model has one
    presence: float | None  # probability that the named object is in view, if the model has the head


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def sigmoid(logit: float) -> float:
    return float(1.0 / (1.0 + np.exp(-float(logit))))


def decode_outputs(out: dict[str, np.ndarray], heads, index: int = 0) -> Decoded:
    """Sample ``index`` of a model's outputs (by name) decided with the bundle's ``heads``."""
    probs = softmax(np.asarray(out[heads.intent_output][index]))
    labels = heads.intent_labels
    best = int(probs.argmax())
    model_intent = labels[best]
    accepted = model_intent != NONE_INTENT and probs[best] >= heads.command_threshold
    target = None
    if heads.target_point_output:
        xy = np.asarray(out[heads.target_point_output][index], np.float64).ravel()
        target = (float(xy[0]), float(xy[1]))
    presence = None
    if heads.presence_output:
        presence = sigmoid(np.asarray(out[heads.presence_output][index]).ravel()[0])
    return Decoded(intent=model_intent if accepted else NONE_INTENT, model_intent=model_intent,
                   confidence=float(probs[best]), accepted=bool(accepted),
                   probabilities={label: float(p) for label, p in zip(labels, probs)},
                   target_xy=target, presence=presence)
