"""Every shell command in docs/own-model.md runs, in order, in an empty directory, as a reader would run them.

The page's ``sh`` blocks train the example model of docs/examples, convert it with
calibration and the accuracy gate, run it, record an audit log with ``voxedge serve``
and re-calibrate from it. Each block runs with ``bash -e -o pipefail`` and must exit 0;
then the files the page talks about are checked for what the page says about them.

Two things are prepared that a reader brings along: the simulated data cache (the
repository's ``data/`` files are linked in when they match, read-only, so make-set
does not spend minutes generating the same splits again), and ``my_recordings/``, a
folder of JPEG + WAV pairs with labels.jsonl for ``voxedge import-set``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-model.md"
SRC_LINE = "export VOXEDGE_SRC=~/voxedge"
BLOCK_TIMEOUT_S = 300
N_RECORDINGS = 8


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _link_data_cache(work: Path) -> None:
    """Link the repository's cached val/test splits into ``work/data``; they are only read."""
    from reference_model.dataset import DataConfig

    (work / "data").mkdir()
    config = DataConfig()
    for split in ("val", "test"):
        cached = ROOT / "data" / f"{split}-{config.digest(split)}.npz"
        if cached.is_file():
            (work / "data" / cached.name).symlink_to(cached)


def _make_recordings(work: Path) -> None:
    """``my_recordings/``: what a user brings: 640x480 JPEGs, 44.1 kHz stereo WAVs, labels for all but one."""
    import cv2
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    from calibration.sampleset import read_set
    from reference_model.sets import write_sim_set

    write_sim_set(work / ".sim-recordings", split="test", n=N_RECORDINGS, cache_root=work / "data", seed=7)
    sim = read_set(work / ".sim-recordings")
    out = work / "my_recordings"
    out.mkdir()
    labels = []
    for i, rec in enumerate(sim.records):
        name = f"kitchen_{i + 1:02d}"
        image, audio, _ = sim.load(i)
        big = cv2.resize(image, (640, 480), interpolation=cv2.INTER_LINEAR)
        assert cv2.imwrite(str(out / f"{name}.jpg"), big[:, :, ::-1])
        stereo = np.stack([resample_poly(audio, 441, 160)] * 2, axis=1)
        wavfile.write(out / f"{name}.wav", 44_100, np.round(np.clip(stereo, -1, 1) * 32767).astype("<i2"))
        if i < N_RECORDINGS - 1:
            labels.append({"name": name, "intent": rec.intent, "object": rec.object,
                           "target_xy": rec.target_xy})
    (out / "labels.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in labels))
    shutil.rmtree(work / ".sim-recordings")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXEDGE_") and k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    return env


def _run_blocks(work: Path) -> str:
    blocks = _blocks()
    assert sum(SRC_LINE in b for b in blocks) == 1, f"the page must set the checkout once with {SRC_LINE!r}"
    env = _env()
    outputs = []
    for block in blocks:
        script = block.replace(SRC_LINE, f"export VOXEDGE_SRC={shlex.quote(str(ROOT))}")
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], check=False, cwd=work,
                           env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert r.returncode == 0, (f"block failed (exit {r.returncode}):\n{block}\n"
                                   f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        outputs.append(r.stdout + r.stderr)
    return "\n".join(outputs)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _repo_snapshot() -> set[str]:
    """Files under the repository's places a careless doc command would write to."""
    places = [ROOT / "docs" / "examples", ROOT / "data"]
    return {str(p) for place in places if place.exists() for p in place.rglob("*")}


def test_the_page_covers_every_step():
    text = "\n".join(_blocks())
    for command in ("voxedge make-set", "voxedge import-set", "python my_model.py", "voxedge convert",
                    "--calibration", "--eval", "--fp16", "--no-precision-search", "voxedge serve",
                    "--audit-log", "voxedge calibrate", "--data robot-log"):
        assert command in text, f"docs/own-model.md runs no {command!r}"


@pytest.mark.slow
def test_every_shell_command_in_the_own_model_doc_works(tmp_path):
    before = _repo_snapshot()
    _link_data_cache(tmp_path)
    _make_recordings(tmp_path)

    output = _run_blocks(tmp_path)

    # The worked example: a custom factory, converted with FP16 and INT8, both gated.
    manifest = _json(tmp_path / "my-bundle" / "manifest.json")
    assert manifest["provenance"]["factory"] == "my_model:build"
    assert manifest["provenance"]["checkpoint"] == "my_model.pt"
    assert {f["precision"] for f in manifest["files"] if f["precision"]} == {"fp32", "fp16", "int8"}
    assert [o["name"] for o in manifest["outputs"]] == ["intent", "point", "seen", "heatmap"]
    assert manifest["heads"]["target_point_output"] == "point"
    assert manifest["heads"]["command_threshold"] == 0.5
    calibration = manifest["provenance"]["calibration"]
    assert calibration["id"] == "sim-val-128-seed1234" and calibration["n_samples"] == 128
    assert calibration["eval_set"]["labels"] == "labelled"
    assert "/audio/frontend/Log" in calibration["quantizer"]["kept_float"]

    report = _json(tmp_path / "my-bundle" / "report.json")
    assert set(report) >= {"verification", "fp16", "fp16_accuracy_gate", "accuracy_gate", "tensorrt_check",
                           "latency_ms_batch1", "timing_s"}
    for row in report["verification"]["fp32"]:
        assert row["max_abs"] <= 1e-3 and row["cosine"] >= 0.9999, row
    assert report["accuracy_gate"]["passed"] and report["fp16_accuracy_gate"]["passed"]
    assert report["accuracy_gate"]["reference"]["n_intent"] == 128
    assert report["tensorrt_check"] == {"fp32": [], "fp16": [], "int8": []}
    assert set(report["latency_ms_batch1"]) == {"fp32", "fp16", "int8"}
    assert (tmp_path / "my-bundle" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "INT8 gate passed: True" in output

    # Quantizing the front end too fails the gate: the search keeps layers in float;
    # with --no-precision-search the conversion is refused.
    searched = _json(tmp_path / "all-int8-bundle" / "report.json")["accuracy_gate"]
    assert searched["passed"] and searched["kept_float_for_accuracy"]
    assert "rejected with exit status 2" in output and not (tmp_path / "strict-bundle").exists()

    # Own pictures and recordings.
    own = _json(tmp_path / "my-set" / "set.json")
    assert own["n_samples"] == N_RECORDINGS and own["per_intent"].get("unlabelled") == 1
    assert len((tmp_path / "my-set" / "index.jsonl").read_text().splitlines()) == N_RECORDINGS

    # It runs: the one-shot check decides, and the served robot wrote an audit log ...
    assert re.search(r"sample \d+ \(said '\w+'\): int8 decides '\w+'", output), output
    audit = _json(tmp_path / "robot-log" / "set.json")
    assert audit["id"] == "audit-robot-log" and audit["n_samples"] >= 1
    # ... which re-calibrated the copy: gated on agreement with FP32, then on the labelled set.
    robot = _json(tmp_path / "robot-bundle" / "manifest.json")["provenance"]["calibration"]
    assert robot["id"] == "audit-robot-log" and robot["eval_set"]["id"] == "sim-test-128-seed1234"
    assert "gating on agreement with the FP32 model" in output
    assert _json(tmp_path / "robot-bundle" / "report.json")["accuracy_gate"]["passed"]
    untouched = _json(tmp_path / "my-bundle" / "manifest.json")["provenance"]["calibration"]
    assert untouched["id"] == calibration["id"]

    assert _repo_snapshot() == before, "the doc's commands wrote into the repository"
