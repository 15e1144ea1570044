"""A bundle replace killed at any step leaves the old or the new bundle whole, and the next start cleans up.

The crash is real: a child process replaces the bundle and is killed (``os._exit``, no cleanup runs) at
one step boundary of ``edge.atomic_dir.replace_dir``, once per boundary, with the one-step exchange
(``renameat2``) and with the two-rename fallback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge import atomic_dir
from edge.bundle import BundleError, load_bundle, write_bundle
from tests.test_bundle import _manifest

ROOT = Path(__file__).resolve().parents[1]
STEPS_EXCHANGE = ["staged", "synced", "exchanged", "exchange synced", "done"]
STEPS_FALLBACK = ["staged", "synced", "old moved aside", "new in place", "done"]

CHILD = """
import os, sys
from edge import atomic_dir
from edge.bundle import write_bundle
from tests.test_bundle import _manifest

dest, crash_at, exchange = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if not exchange:
    atomic_dir._exchange = lambda a, b: False
def step(name):
    if name == crash_at:
        os._exit(9)  # a crash: no cleanup, no finally
atomic_dir._step = step

def populate(tmp):
    (tmp / "model.fp32.onnx").write_bytes(b"new model")
    return _manifest()
write_bundle(dest, populate)
"""


def _old_bundle(dest: Path) -> None:
    def populate(tmp):
        (tmp / "model.fp32.onnx").write_bytes(b"old model")
        return _manifest()

    write_bundle(dest, populate)


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)


@pytest.mark.parametrize("exchange, steps", [(True, STEPS_EXCHANGE), (False, STEPS_FALLBACK)],
                         ids=["renameat2-exchange", "two-renames"])
def test_a_crash_at_any_step_leaves_the_old_or_the_new_bundle_and_the_next_load_cleans_up(tmp_path, exchange,
                                                                                          steps):
    if exchange and not atomic_dir._exchange(tmp_path, tmp_path):  # swapping a path with itself: a no-op probe
        pytest.skip("this kernel, libc or filesystem has no renameat2(RENAME_EXCHANGE)")
    seen = []
    for crash_at in steps:
        dest = tmp_path / crash_at.replace(" ", "-") / "bundle"
        dest.parent.mkdir()
        _old_bundle(dest)
        r = subprocess.run([sys.executable, "-c", CHILD, str(dest), crash_at, "1" if exchange else "0"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 9, (crash_at, r.stderr)
        bundle = load_bundle(dest)  # loads: recovery ran first, and every file matches its hash
        content = bundle.model_path("fp32").read_bytes()
        assert content in (b"old model", b"new model"), crash_at
        seen.append(content.split()[0].decode())
        assert _leftovers(dest) == [], (crash_at, _leftovers(dest))  # no staging or old directory survives
    # the crash points before the swap keep the old bundle, those after it have the new one
    assert seen[:2] == ["old", "old"] and seen[-1] == "new", seen


def test_a_replace_in_progress_elsewhere_is_not_cleaned_up_under_it(tmp_path):
    dest = tmp_path / "bundle"
    _old_bundle(dest)
    staging = tmp_path / ".bundle.inprogress.tmp"
    staging.mkdir()
    with atomic_dir._locked(dest):  # as another process's replace_dir holds it
        r = subprocess.run([sys.executable, "-c", "import sys; from edge.atomic_dir import recover; "
                            "print(recover(sys.argv[1]))", str(dest)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert r.stdout.strip() == "[]" and staging.is_dir()
    assert atomic_dir.recover(dest) == ["removed .bundle.inprogress.tmp (left by an interrupted replace)"]


def test_a_lost_bundle_is_restored_from_the_half_done_swap(tmp_path):
    dest = tmp_path / "bundle"
    _old_bundle(dest)
    os.replace(dest, atomic_dir.old_path(dest))  # cut between the two renames of the fallback
    assert load_bundle(dest).model_path("fp32").read_bytes() == b"old model"
    assert _leftovers(dest) == []


def test_bundle_files_that_are_symlinks_or_lead_outside_are_refused(tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(b"onnx bytes")
    dest = tmp_path / "b"

    def linked(tmp):
        (tmp / "model.fp32.onnx").symlink_to(outside)  # the same bytes, so the hash would match
        return _manifest()

    write_bundle(dest, linked)
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(dest)

    dest2 = tmp_path / "b2"
    _old_bundle(dest2)
    manifest = dest2 / "manifest.json"
    import hashlib
    import json

    data = json.loads(manifest.read_text())
    data["files"][0]["path"] = "../elsewhere.onnx"
    data["files"][0]["sha256"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="inside the bundle"):  # the manifest reader refuses it already
        load_bundle(dest2)
