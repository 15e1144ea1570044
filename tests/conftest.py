"""Shared pytest set-up: hardware markers are skipped where the hardware is absent."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import pytest


@lru_cache(maxsize=None)
def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


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
