"""Inference runners behind one contract (``Runner``): ONNX Runtime anywhere, TensorRT on the robot.

Backends import their heavy packages lazily, in ``activate``; ``make_runner``
picks one by name.
"""

from __future__ import annotations

from edge.runners.base import Runner, RunnerError

BACKENDS = {"onnxruntime": "edge.runners.onnxruntime:OnnxRuntimeRunner",
            "tensorrt": "edge.runners.tensorrt:TensorRtRunner",
            "kserve": "edge.runners.kserve:KServeRunner"}  # by its URL: kserve://HOST:PORT/MODEL (edge.runners.kserve)


def make_runner(backend: str, bundle, precision: str = "fp32", **options) -> Runner:
    """A runner of ``backend`` for one model file of a loaded bundle."""
    import importlib

    from edge.runners.kserve import is_remote

    if is_remote(backend):  # a remote server: the URL is the backend's option
        backend, options = "kserve", {**options, "url": backend}
    if backend not in BACKENDS:
        raise RunnerError(f"unknown runner backend {backend!r}; available: {sorted(BACKENDS)}")
    module, _, cls = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module), cls)(bundle, precision, **options)


__all__ = ["BACKENDS", "Runner", "RunnerError", "make_runner"]
