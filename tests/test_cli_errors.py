"""One error path for every command (issue 18 point 2): a bad invocation is one line, never a traceback.

Each case runs the real ``voxedge`` command line with an input people get wrong: an impossible or
read-only ``--out``, a missing or damaged bundle, a backend whose library is not installed, a bad value.
It must exit 1 or 2 with ``voxedge COMMAND: error: ...`` on one line, and ``--debug`` must still give the
traceback.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge_fixtures import requires_gcc

ROOT = Path(__file__).resolve().parents[1]
IMPOSSIBLE = "/proc/voxedge-cannot-write-here/out"


def _voxedge(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from edge.bundle import MANIFEST_NAME, hash_files, load_bundle, write_manifest

    tmp = tmp_path_factory.mktemp("cli-errors")
    good = convert(DEFAULT_CHECKPOINT, tmp / "bundle", log=lambda *_: None).path
    damaged = tmp / "damaged"
    shutil.copytree(good, damaged)
    m = load_bundle(damaged, verify=False).manifest
    for f in m.files:
        if f.path.endswith(".onnx"):
            model = damaged / f.path
            model.write_bytes(model.read_bytes()[:4096])  # truncated, then re-hashed: it passes the hash check
    (damaged / MANIFEST_NAME).unlink()
    write_manifest(damaged, dataclasses.replace(m, files=hash_files(damaged, {f.path: f for f in m.files})))
    return good, damaged


def _assert_one_line(r: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert r.returncode in (1, 2), (r.returncode, out[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"voxedge {command}: error: ") or last.startswith(f"usage: voxedge {command}"), last
    for needle in needles:
        assert needle in last, last


@pytest.mark.parametrize("args, needle", [
    (("convert", "--out", IMPOSSIBLE), "cannot be written"),
    (("make-set", "-n", "4", "--out", IMPOSSIBLE), "cannot be written"),
    (("train", "--out", IMPOSSIBLE + "/model.pt"), "cannot be written"),
    (("evaluate", "--out", IMPOSSIBLE), "cannot be written"),
    (("import-set", "/nonexistent-src", "--out", "/tmp/voxedge-never-written"), "nonexistent-src"),
    (("calibrate", "/nonexistent-bundle", "--data", "/nonexistent-set"), "nonexistent"),
    (("check-trt", "/nonexistent.onnx"), "nonexistent.onnx"),
    (("serve", "/nonexistent-bundle", "--sim", "--port", "0"), "nonexistent-bundle"),
    (("bridge", "--link", "/dev/voxedge-no-such-port"), "does not exist"),
    (("serve", "--precision", "int4"), "invalid choice"),
    (("make-set", "-n", "4", "--out", "README.md/out"), "README.md is a file"),
    (("convert", "--out", "README.md"), "is a file, not a bundle directory"),
    (("import-set", "/tmp", "--out", "/tmp/voxedge-never-written", "--size", "160by120"), "WIDTHxHEIGHT"),
])
def test_bad_invocations_are_one_line(args, needle):
    r = _voxedge(*args, timeout=120)
    _assert_one_line(r, args[0], needle)


@requires_gcc
def test_demo_with_an_impossible_out_fails_before_the_episodes(bundles):
    good, _ = bundles
    r = _voxedge("demo", good, "--out", IMPOSSIBLE, timeout=120)
    _assert_one_line(r, "demo", "cannot be written")


@requires_gcc
def test_demo_with_a_damaged_model_is_one_line(bundles):
    _, damaged = bundles
    r = _voxedge("demo", damaged, "--precision", "fp32", "--out", ROOT / "runs" / "never-written", timeout=120)
    _assert_one_line(r, "demo")
    assert not (ROOT / "runs" / "never-written").exists(), "a failed demo left its --out folder behind"


@requires_gcc
def test_serve_with_a_damaged_model_or_a_missing_backend_is_one_line(bundles):
    good, damaged = bundles
    r = _voxedge("serve", damaged, "--sim", "--port", "0", "--precision", "fp32", timeout=120)
    _assert_one_line(r, "serve")
    r = _voxedge("serve", good, "--sim", "--port", "0", "--backend", "tensorrt", "--precision", "fp32", timeout=120)
    _assert_one_line(r, "serve")


def test_debug_shows_the_traceback():
    r = _voxedge("--debug", "convert", "--out", IMPOSSIBLE)
    assert r.returncode != 0 and "Traceback" in r.stderr
