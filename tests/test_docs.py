"""Every command in docs/api.md runs against a real server on the simulated robot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import live_server, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = requires_gcc


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_shell_command_in_the_api_doc_works(live_server, tmp_path):  # noqa: F811
    import cv2

    url, token, runtime = live_server
    golden = np.load(runtime.bundle.path / "golden.npz")
    cv2.imwrite(str(tmp_path / "frame.png"), golden["input.image"][0][:, :, ::-1])
    from edge.samples import encode_wav

    (tmp_path / "command.wav").write_bytes(encode_wav(golden["input.audio"][0], 16000))
    env = {**os.environ, "VOXEDGE": url, "TOKEN": token}
    outputs = []
    for block in _blocks("sh"):
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.replace("export VOXEDGE=", "true ")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (block, r.stdout, r.stderr)
        outputs.append(r.stdout)
    text = "\n".join(outputs)
    assert '"ready":true' in text and '"intent"' in text and "the model takes [-1, 120, 160, 3]" in text
    assert "voxedge_inference_stage_seconds_count" in text
    runtime.actuator.release_estop()  # the doc's e-stop latched the robot: clear it for the other tests
    runtime.actuator.request("clear_failsafe")
    runtime.link.wait_for_telemetry(lambda t: t.state.name == "DISARMED", timeout_s=2.0)


def test_the_python_example_in_the_api_doc_works(live_server):  # noqa: F811
    url, _, _ = live_server
    (code,) = _blocks("python")
    code = code.replace('url="127.0.0.1:8080"', f'url="{url.removeprefix("http://")}"')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().startswith("[["), r.stderr
