"""The soak benchmark's short version: 2 minutes of the demo system with commands and a viewer, no leaks."""

from __future__ import annotations

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import load_bench, sim_bundle  # noqa: F401 (fixture)


@requires_gcc
def test_two_minutes_of_the_demo_system_grow_nothing(sim_bundle):  # noqa: F811
    bench = load_bench("bench_soak")
    r = bench.soak(str(sim_bundle.path), minutes=2.0, precision="fp32", log=lambda *_: None)
    assert r["counts"]["5xx"] == 0 and r["exit_code"] == 0, r["errors"]
    assert r["counts"]["said"] >= 25 and r["samples"][-1]["decisions"] >= 10
    assert r["counts"]["mjpeg_bytes"] > 100_000 and r["counts"]["sse_events"] >= 10
    assert r["rss_growth_after_warmup"] <= bench.MAX_RSS_GROWTH, r["samples"]
    assert not r["threads"]["grew"] and not r["fds"]["grew"], (r["threads"], r["fds"])
