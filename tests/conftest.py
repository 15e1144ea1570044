"""Shared pytest set-up: hardware markers are skipped where the hardware is absent."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from functools import lru_cache

import pytest

# `voxedge serve` keeps a generated operator token in its state directory (edge.service.token_store): the
# tests' servers use a folder of their own, not the user's ~/.local/state/voxedge.
if "VOXEDGE_STATE_DIR" not in os.environ:
    import tempfile

    os.environ["VOXEDGE_STATE_DIR"] = tempfile.mkdtemp(prefix="voxedge-test-state-")


# Asks the CUDA driver itself (libcuda's cuInit and cuDeviceGetCount), not torch: a Jetson image
# runs the TensorRT tests without torch. In a child process, so that the test process holds no
# CUDA context before anything forks.
_CUDA_PROBE = """
import ctypes, sys
try:
    lib = ctypes.CDLL("libcuda.so.1")
except OSError:
    sys.exit(1)
count = ctypes.c_int(0)
ok = lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
sys.exit(0 if ok else 1)
"""


@lru_cache(maxsize=None)
def _has_cuda() -> bool:
    try:
        return subprocess.run([sys.executable, "-c", _CUDA_PROBE], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@lru_cache(maxsize=None)
def _has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@lru_cache(maxsize=None)
def _is_jetson() -> bool:
    return os.path.exists("/etc/nv_tegra_release")


_HARDWARE = {
    "requires_cuda": (_has_cuda, "needs an NVIDIA GPU with CUDA"),
    "requires_tensorrt": (_has_tensorrt, "needs the TensorRT Python package"),
    "requires_jetson": (_is_jetson, "needs an NVIDIA Jetson (/etc/nv_tegra_release)"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker, (available, reason) in _HARDWARE.items():
            if marker in item.keywords and not available():
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))


# The hardware tests need a converted reference bundle (fp32, fp16, int8). A Jetson image has no
# torch to convert one: make it on a workstation (`make demo-bundle` writes bundle/), copy it over
# and point this variable at it.
TEST_BUNDLE_ENV = "VOXEDGE_TEST_BUNDLE"


@pytest.fixture
def hardware_bundle(tmp_path):
    """A copy of the reference bundle that a test may add engines to: ``$VOXEDGE_TEST_BUNDLE``, or one
    converted here where torch is installed."""
    dest = tmp_path / "bundle"
    given = os.environ.get(TEST_BUNDLE_ENV)
    if given:
        if not os.path.isfile(os.path.join(given, "manifest.json")):
            pytest.fail(f"{TEST_BUNDLE_ENV}={given} is not a bundle (no manifest.json)")
        shutil.copytree(given, dest)
        return dest
    if importlib.util.find_spec("torch") is None:
        pytest.skip(f"no torch here to convert the reference model: run `make demo-bundle` on a workstation, "
                    f"copy bundle/ over and set {TEST_BUNDLE_ENV}=DIR")
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from reference_model.sets import write_sim_set

    write_sim_set(tmp_path / "calib", split="val", n=64)
    write_sim_set(tmp_path / "eval", split="test", n=64)
    convert(DEFAULT_CHECKPOINT, dest, calibration=tmp_path / "calib", eval_set=tmp_path / "eval", fp16=True,
            log=lambda *_: None)
    return dest
