"""voxedge doctor on real counterparts: a video file as the camera, a WAV as the microphone, the firmware simulator."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from tests.bridge_fixtures import requires_gcc

ROOT = Path(__file__).resolve().parents[1]


@requires_gcc
def test_doctor_reports_each_check_and_what_to_fix(tmp_path):
    import cv2

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    wav = tmp_path / "mic.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((rng.standard_normal(48000 * 3) * 3000).astype("<i2").tobytes())

    def doctor(*args):
        return subprocess.run([sys.executable, "-m", "edge.cli", "doctor", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)

    r = doctor(str(tmp_path / "no-bundle"), "--camera", str(video), "--mic", str(wav), "--link", "sim")
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line[:4] in ("OK  ", "WARN", "FAIL", "SKIP")}
    assert r.returncode == 1 and "1 problem(s) to fix" in r.stdout, r.stdout + r.stderr
    assert lines["bundle"].startswith("FAIL") and "no-bundle" in lines["bundle"]
    from edge.int8_numerics import cpu_int8

    cpu = cpu_int8()  # the CPU's int8 instruction set and what the probe measured
    assert lines["cpu"].startswith("OK") and cpu.isa in lines["cpu"] and cpu.model in lines["cpu"]
    assert ("saturating int16" in lines["cpu"]) == cpu.saturates
    assert lines["camera"].startswith("OK") and "160x120" in lines["camera"]
    assert lines["microphone"].startswith("OK") and "48000 Hz resampled to 16 kHz" in lines["microphone"]
    assert lines["robot"].startswith("OK") and "handshake" in lines["robot"]
    assert lines["disk"].startswith(("OK", "WARN")) and lines["clock"].startswith("OK")
    r = doctor(str(tmp_path / "no-bundle"), "--camera", str(tmp_path / "missing.avi"), "--mic", "sim", "--link", "")
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line[:4] in ("OK  ", "WARN", "FAIL", "SKIP")}
    assert lines["camera"].startswith("FAIL") and "voxedge devices" in lines["camera"]
    assert lines["microphone"].startswith("SKIP") and lines["robot"].startswith("FAIL")


def _doctor(*args):
    return subprocess.run([sys.executable, "-m", "edge.cli", "doctor", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@requires_gcc
def test_doctor_runs_the_models_on_the_golden_inputs_and_has_json(tmp_path):
    """Issue 18 point 4: a bundle whose model is damaged but re-hashed used to pass as "OK bundle"."""
    import dataclasses
    import json
    import shutil

    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from edge.bundle import MANIFEST_NAME, hash_files, load_bundle, write_manifest

    bundle = convert(DEFAULT_CHECKPOINT, tmp_path / "bundle", log=lambda *_: None)
    r = _doctor(bundle.path, "--camera", "sim", "--mic", "sim", "--link", "sim", "--json")
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["bundle"]["status"] == "OK" and "golden check passed for fp32" in checks["bundle"]["detail"]
    assert r.returncode == (0 if report["ready"] else 1) and "Traceback" not in r.stderr

    damaged = tmp_path / "damaged"
    shutil.copytree(bundle.path, damaged)
    model = damaged / bundle.manifest.file("fp32").path
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated ...
    m = load_bundle(damaged, verify=False).manifest
    known = {f.path: f for f in m.files}
    (damaged / MANIFEST_NAME).unlink()
    write_manifest(damaged, dataclasses.replace(m, files=hash_files(damaged, known)))  # ... and re-hashed
    r = _doctor(damaged, "--camera", "sim", "--mic", "sim", "--link", "sim")
    line = next(x for x in r.stdout.splitlines() if x.split()[1:2] == ["bundle"])
    assert r.returncode == 1 and line.startswith("FAIL") and "fp32" in line, r.stdout
    assert "Traceback" not in r.stdout + r.stderr

    r = _doctor("--camera", "sim", "--mic", "sim", "--link", "sim")  # no bundle at all
    line = next(x for x in r.stdout.splitlines() if x.split()[1:2] == ["bundle"])
    assert line.startswith("FAIL") and "no bundle given" in line and "NoneType" not in r.stdout
