"""A real ``voxedge serve BUNDLE --sim`` process for end-to-end tests (the remote backend, ROS 2).

The launcher is the benchmarks' (``bench/serving.py``: ``ServeProcess``, ``request``), so tests and benchmarks
start serve one way. ``Serve(bundle, state_dir, *flags).ready()`` starts one on the simulated robot with its own
state directory; ``arm`` and ``go_to`` drive it as an operator would.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.service_fixtures import load_bench

_serving = load_bench("serving")
free_port, request = _serving.free_port, _serving.request
# seed 5's arena (simrobot.robot.sim_setup): a green ball 2.3 m ahead, 6 degrees to the right
SEED, COMMAND = 5, "go to the green ball"


def until(predicate, timeout_s: float, what: str, period_s: float = 0.05):
    """``predicate()``'s first truthy value, polled; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout_s} s")
        time.sleep(period_s)


def moving(state: dict) -> bool:
    """Whether the state API's setpoint is not zero."""
    sp = state.get("setpoint") or {}
    return abs(sp.get("linear_m_s") or 0.0) > 0.0 or abs(sp.get("angular_rad_s") or 0.0) > 0.0


class Serve(_serving.ServeProcess):
    """One ``voxedge serve BUNDLE --sim`` process (e-stop listener on any free port)."""

    def __init__(self, bundle: str, state_dir: Path, *extra: str, seed: int = SEED) -> None:
        super().__init__([bundle, "--sim", "--seed", str(seed), "--estop-port", "0", *extra],
                         env={"VOXEDGE_STATE_DIR": str(state_dir)})

    def ready(self, timeout_s: float = 120.0) -> Serve:
        try:
            return super().ready(timeout_s)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None

    def arm(self) -> None:
        self.post("/api/arm")
        until(lambda: ((self.state()["link"]["telemetry"] or {}).get("state") == "ARMED"), 5.0, "armed")

    def go_to(self, command: str = COMMAND, tries: int = 3) -> dict:
        """Say ``command`` (the sim microphone) until the robot drives to it; the state then."""
        for attempt in range(tries):
            self.post("/api/say", {"text": command})
            try:
                return until(lambda: (s := self.state())["activity"]["mode"] == "go_to" and moving(s) and s, 12.0,
                             "driving to the object")
            except AssertionError:
                if attempt == tries - 1:
                    raise AssertionError(f"no go_to after {command!r}: {self.state()}\n" +
                                         "\n".join(self.output[-20:])) from None
        raise AssertionError("tries must be >= 1")
