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
