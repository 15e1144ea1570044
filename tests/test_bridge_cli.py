"""``voxedge bridge`` through the real entry point, against the simulator (--sim)."""

from __future__ import annotations

import json

import pytest

from edge.cli import main
from tests.bridge_fixtures import requires_gcc


@requires_gcc
def test_sim_arm_drive_and_json_summary(capsys):
    assert main(["bridge", "--sim", "--arm", "--gripper", "open", "--drive", "0.3", "0.0", "--seconds", "1",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert "arm: ARM executed" in out and "gripper open: GRIPPER_OPEN executed" in out
    summary = json.loads(out[out.index("{"):])
    assert 0.15 < summary["x_m"] < 0.35 and abs(summary["y_m"]) < 0.01
    assert summary["state"] == "ARMED" and summary["gripper"] == "OPEN" and summary["schema_match"]
    assert summary["stats"]["controls_failed"] == 0 and summary["stats"]["mcu_setpoints_applied"] >= 15


@requires_gcc
def test_sim_estop_then_recover(capsys):
    assert main(["bridge", "--sim", "--estop", "--telemetry", "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "e-stop: ESTOP executed" in out and "final: state=ESTOP" in out


@requires_gcc
def test_a_drive_beyond_the_hard_limits_says_it_is_clamped(capsys):
    assert main(["bridge", "--sim", "--arm", "--drive", "5", "-9", "--seconds", "0.3", "--json"]) == 0
    out = capsys.readouterr().out
    assert "--drive 5 m/s is beyond the hard limit of 0.5 m/s; driving at 0.5 m/s" in out
    assert "--drive -9 rad/s is beyond the hard limit of 3 rad/s; driving at -3 rad/s" in out
    assert json.loads(out[out.index("{"):])["stats"]["setpoints_clamped"] == 0, "the CLI sent what it printed"


@requires_gcc
def test_driving_disarmed_is_a_user_error(capsys):
    assert main(["bridge", "--sim", "--drive", "0.2", "0.0"]) == 2
    err = capsys.readouterr().err
    assert "cannot drive: the robot is DISARMED" in err and "--arm" in err


def test_missing_port_is_a_user_error(capsys):
    assert main(["bridge", "--link", "/dev/no-such-robot"]) == 2
    err = capsys.readouterr().err
    assert "voxedge bridge: error: serial port '/dev/no-such-robot' does not exist" in err


@pytest.mark.parametrize("argv, message", [
    (["--drive", "nan", "0"], "give finite speeds"),
    (["--seconds", "100"], "use a value in (0, 30]"),
])
def test_bad_values_are_user_errors(capsys, argv, message):
    try:
        code = main(["bridge", "--link", "/dev/no-such-robot", *argv])
    except SystemExit as exc:  # argparse rejects --seconds itself
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
