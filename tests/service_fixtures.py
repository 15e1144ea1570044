"""Fixtures for the service tests (imported explicitly): the real runtime on the simulated robot, served by waitress.

- ``sim_bundle``: the reference model converted (FP32 + INT8).
- ``sim_runtime``: (runtime, robot) on the simulated robot: the C firmware core on a pty, the sim camera, the sim
  microphone.
- ``live_server``: (base_url, token, runtime) for a real waitress server on 127.0.0.1 (ephemeral port).
"""

from __future__ import annotations

import pytest

TOKEN = "test-operator-token-0123456789"


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory):
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert

    return convert(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("svc") / "bundle", log=lambda *_: None)


@pytest.fixture(scope="module")
def sim_runtime(sim_bundle, tmp_path_factory):
    from edge.runtime import Runtime, RuntimeConfig
    from simrobot.robot import sim_setup

    robot, camera, microphone = sim_setup(seed=3, noise_dbfs=-55.0)
    link = robot.start()
    config = RuntimeConfig(bundle=str(sim_bundle.path), precision="fp32",
                           audit_log=str(tmp_path_factory.mktemp("audit") / "log"))
    runtime = Runtime(config, link=link, camera=camera, microphone=microphone).start()
    try:
        yield runtime, robot
    finally:
        runtime.stop()
        robot.stop()


@pytest.fixture(scope="module")
def live_server(sim_runtime):
    from edge.service import ServiceConfig, create_app
    from edge.service.server import Server

    runtime, _ = sim_runtime
    config = ServiceConfig(port=0, token=TOKEN)
    server = Server(create_app(runtime, config), config).start()
    try:
        yield server.url, TOKEN, runtime
    finally:
        server.stop()


def load_bench(name: str):
    """A script of bench/ as a module (they run as scripts, outside any package), for its short test version."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
