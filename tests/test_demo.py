"""``voxedge demo`` headless, as a user runs it: one episode of each kind, the table, the JSON and the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import sim_bundle  # noqa: F401 (fixture)

VOXEDGE = [sys.executable, "-m", "edge.cli"]


@requires_gcc
@pytest.mark.slow
def test_voxedge_demo_runs_each_kind_and_writes_its_report(sim_bundle, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = subprocess.run([*VOXEDGE, "demo", str(sim_bundle.path), "--episodes", "1", "--seed", "0",
                        "--precision", "fp32", "--out", str(out)], capture_output=True, text=True, timeout=600)
    met = "targets (go_to >= 95 %, no motion on any 'none'): met" in r.stdout
    assert r.returncode == (0 if met else 1), r.stderr[-3000:]  # exit 1 when the targets are missed
    data = json.loads((out / "demo.json").read_text())
    go, stop, none = data["episodes"]
    assert [go["kind"], stop["kind"], none["kind"]] == ["go_to", "stop", "none"]
    assert set(data["summary"]) == {"go_to", "stop", "none"}
    # go_to: heard, driven, and judged by where the robot ended
    assert go["intent"] == "go_to" and go["final_distance_m"] is not None and go["error"] is None
    assert go["success"] == (go["final_distance_m"] <= 0.3 and go["outcome"] in ("reached", "lost"))
    # stop: the robot was set driving first ("go forward", repeated if unheard), then the stop was said
    assert stop["error"] is None and stop["outcome"] in ("stopped", "not stopped by the command")
    # none: distractor speech never moves the robot
    assert none["success"] and none["outcome"] == "still"
    assert (out / "demo.png").stat().st_size > 10_000
    assert "first motion p50" in r.stdout and "targets (go_to >= 95 %, no motion on any 'none')" in r.stdout


@pytest.mark.parametrize("rates, line, ok", [
    ({"go_to": 0.96, "stop": 1.0, "none": 1.0}, "targets (go_to >= 95 %, no motion on any 'none'): met", True),
    ({"go_to": 0.9, "none": 1.0}, "targets (go_to >= 95 %, no motion on any 'none'): MISSED", False),
    ({"none": 1.0}, "targets (no motion on any 'none'): met", True),
    ({"none": 0.5}, "targets (no motion on any 'none'): MISSED", False),
    ({"stop": 0.0}, "targets: none measured (they are for go_to and none episodes)", True),
])
def test_the_verdict_names_only_the_targets_that_were_measured(rates, line, ok):
    from simrobot.demo import target_verdict

    assert target_verdict({kind: {"success_rate": r} for kind, r in rates.items()}) == (line, ok)


@pytest.mark.parametrize("args, message", [
    (["--kinds", "go_to,dance"], "unknown episode kinds ['dance']"),
    (["no-such-bundle"], "no bundle at no-such-bundle"),
    (["--bundle", "old-flag-bundle"], "no bundle at old-flag-bundle"),  # the old name still works, with a warning
])
def test_voxedge_demo_refuses_bad_arguments_clearly(tmp_path, args, message):
    r = subprocess.run([*VOXEDGE, "demo", "--out", str(tmp_path / "out"), *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
