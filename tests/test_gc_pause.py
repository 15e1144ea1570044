"""edge.gc_pause: what start-up made is frozen out of the collector while a runtime runs, and let go after."""

from __future__ import annotations

import gc

import pytest

from edge import gc_pause


@pytest.fixture()
def unheld():
    assert gc_pause.holders() == 0, "a runtime from another test still holds the freeze"
    yield
    while gc_pause.holders():
        gc_pause.release()


def test_a_hold_takes_the_tracked_objects_out_of_full_collections_and_release_puts_them_back(unheld):
    old = len(gc.get_objects(generation=2))
    assert old > 10_000  # pytest, numpy and the project are loaded: a full collection walks all of these
    gc_pause.hold()
    assert gc.get_freeze_count() >= old
    assert len(gc.get_objects(generation=2)) < old // 10
    gc_pause.release()
    assert gc.get_freeze_count() == 0
    assert len(gc.get_objects(generation=2)) >= old


def test_the_freeze_lasts_until_the_last_holder_lets_go(unheld):
    gc_pause.hold()
    gc_pause.hold()
    gc_pause.release()
    assert gc_pause.holders() == 1 and gc.get_freeze_count() > 0
    frozen = gc.get_freeze_count()
    made_since = [[i] for i in range(1000)]  # tracked containers, made after the hold
    gc_pause.settle()
    assert gc.get_freeze_count() >= frozen + len(made_since)
    gc_pause.release()
    assert gc_pause.holders() == 0 and gc.get_freeze_count() == 0


def test_settle_without_a_hold_freezes_nothing_and_a_release_without_one_is_refused(unheld):
    gc_pause.settle()
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="without a matching hold"):
        gc_pause.release()


def test_a_started_voxedge_serve_keeps_its_start_up_out_of_full_collections(tmp_path):
    """bench/bench_gc_pause.py on a real ``voxedge serve --sim``: it times; this checks the counts."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gc.json"
    run = subprocess.run([sys.executable, str(root / "bench" / "bench_gc_pause.py"), "--rounds", "1",
                          "--settle-s", "0.5", "--out", str(out)], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["frozen_objects"] > 20_000  # the model, onnxruntime, Flask, the panel: frozen at start-up
    assert result["tracked_objects"] < result["frozen_objects"] / 20  # what a full collection still walks
    assert len(result["frozen_ms"]) == len(result["not_frozen_ms"]) == 1
