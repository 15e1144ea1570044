"""The failsafe on the product path (issue 16 point 6): SIGKILL a real ``voxedge serve`` while it drives.

Two trials of ``bench/bench_failsafe_serve.py`` (the bench runs 20 and gives the README's figures): the
firmware simulator outlives the server, the motors stop and the failsafe stays latched. The bound here is
the simulator log's window (550 ms), not the 300 ms goal: timing figures come from the bench.
"""

from __future__ import annotations

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import load_bench, sim_bundle  # noqa: F401 (fixture)


@requires_gcc
def test_killing_a_real_serve_while_it_drives_stops_the_motors_and_latches_the_failsafe(sim_bundle):  # noqa: F811
    from firmware_bridge.spec import State

    bench = load_bench("bench_failsafe_serve")
    r = bench.run(str(sim_bundle.path), trials=2, log=print)
    assert r["stopped"] == 2, r["results"]
    assert r["latched_failsafe"] == 2 and all(x["final_state"] == int(State.FAILSAFE) for x in r["results"])
