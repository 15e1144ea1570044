"""Schemathesis against our own OpenAPI document: generated requests for every operation, zero 5xx answers."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency: pip install 'voxedge[dev]'")

from schemathesis.checks import not_a_server_error

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import TOKEN, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

pytestmark = requires_gcc


@pytest.fixture(scope="module")
def api_schema(sim_runtime):
    from edge.service import ServiceConfig, create_app

    runtime, _ = sim_runtime
    # Generous rate limits: this test is about server errors, not 429s.
    app = create_app(runtime, ServiceConfig(token=TOKEN, infer_rate_per_s=1e6, infer_burst=10**6,
                                            motion_rate_per_s=1e6, motion_burst=10**6))
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


SKIP = {
    "/stream.mjpg": "endless stream (covered by test_service.py)",
    "/api/events": "endless stream (covered by test_service.py)",
    "/api/estop": "latches the robot (covered by test_service.py)",
}
EXAMPLES_PER_OPERATION = 25


def test_no_generated_request_makes_the_service_fail(api_schema):
    # The schemathesis pytest plugin does not load with this pytest; drive its strategies with hypothesis.
    from hypothesis import HealthCheck, given, settings

    tried = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.path in SKIP:
            continue
        tried.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(checks=[not_a_server_error], headers={"Host": "localhost"})

        run()
    assert len(tried) >= 15, tried
