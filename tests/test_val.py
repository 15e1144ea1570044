"""``voxedge val`` (issue 18 point 5): a bundle measured on a labelled set, per precision, as serve runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration.val import _auc
from tests.calibration_fixtures import write_small_sets

ROOT = Path(__file__).resolve().parents[1]


def test_auc_by_ranks():
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    assert _auc(scores, np.array([True, True, False, False])) == 1.0
    assert _auc(scores, np.array([False, False, True, True])) == 0.0
    assert _auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([True, False, True, False])) == 0.5
    assert _auc(scores, np.array([True, False, True, False])) == 0.75
    assert _auc(scores, np.array([True, True, True, True])) is None


@pytest.fixture(scope="module")
def bundle_and_sets(tmp_path_factory):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    tmp = tmp_path_factory.mktemp("val")
    sets = write_small_sets(tmp)
    bundle = convert(DEFAULT_CHECKPOINT, tmp / "bundle", log=lambda *_: None)
    return bundle, sets


def test_val_reports_accuracy_false_accepts_auc_grounding_and_confusion(bundle_and_sets, tmp_path):
    from calibration.gate import score
    from calibration.sampleset import read_set

    bundle, sets = bundle_and_sets
    out = tmp_path / "val"
    r = subprocess.run([sys.executable, "-m", "edge.cli", "val", str(bundle.path), str(sets / "eval"), "--out",
                        str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "false accepts" in r.stdout and "labelled/decided" in r.stdout and "warning: 64 labelled samples" in r.stdout
    [res] = json.loads((out / "val.json").read_text())
    assert res["precision"] == "fp32" and res["n_intent"] == 64 and (out / "confusion-fp32.png").stat().st_size > 5000
    assert sum(map(sum, res["confusion"])) == 64 and 0.0 <= res["accuracy_decided"] <= 1.0
    assert res["command_auc"] is None or 0.0 <= res["command_auc"] <= 1.0
    assert res["target_error_width_fraction"] is not None and res["grounded_rate"] is not None
    # the same argmax accuracy as the INT8 gate's scorer on the same model and set
    gate = score(bundle.model_path("fp32"), read_set(sets / "eval"), bundle.manifest)
    assert res["accuracy_argmax"] == pytest.approx(gate.intent_accuracy)
    assert res["target_error_width_fraction"] == pytest.approx(gate.target_error_width_fraction, rel=1e-6)


def test_val_refuses_what_it_cannot_measure(bundle_and_sets, tmp_path):
    import shutil

    bundle, sets = bundle_and_sets
    r = subprocess.run([sys.executable, "-m", "edge.cli", "val", str(bundle.path), str(sets / "eval"), "--precision",
                        "int8", "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "has no int8 model" in r.stderr and "Traceback" not in r.stderr
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(sets / "eval", unlabelled)
    index = unlabelled / "index.jsonl"
    lines = [json.loads(x) for x in index.read_text().splitlines()]
    for rec in lines:
        rec["intent"] = None
    index.write_text("".join(json.dumps(x) + "\n" for x in lines))
    meta = json.loads((unlabelled / "set.json").read_text())
    import hashlib

    meta["index_sha256"] = hashlib.sha256(index.read_bytes()).hexdigest()
    (unlabelled / "set.json").write_text(json.dumps(meta))
    r = subprocess.run([sys.executable, "-m", "edge.cli", "val", str(bundle.path), str(unlabelled), "--quiet",
                        "--out", str(tmp_path / "o2")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "no labelled intents" in r.stderr and "Traceback" not in r.stderr, r.stderr
