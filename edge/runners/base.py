"""The runner contract: activate / infer / deactivate, inputs checked against the manifest.

Public methods check state and inputs and translate backend errors; backends
implement the ``_activate_impl`` / ``_infer_impl`` / ``_deactivate_impl`` hooks.
One runner belongs to one thread (the inference worker); it is not shared.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from edge.bundle import Bundle, TensorSpec, numpy_dtype


class RunnerError(Exception):
    """A runner was used in the wrong state, given bad inputs, or its backend failed."""


class Runner(ABC):
    """Runs one model file of a bundle."""

    backend = "abstract"

    def __init__(self, bundle: Bundle, precision: str = "fp32") -> None:
        from edge.int8_numerics import choose_model

        self.bundle = bundle
        self.requested_precision = precision
        choice = choose_model(bundle.manifest, precision, self.target_runtime())
        self.precision = choice.precision  # fp32 where int8 would not decide as its gate measured
        self.model_path = bundle.path / choice.path
        self.model_note = choice.note  # which file runs, and why: printed by serve and doctor
        self._active = False
        self.last_latency_s: float | None = None

    def target_runtime(self) -> str | None:
        """The ``ModelFile.runtime`` this backend prefers (``edge.int8_numerics``); None: any."""
        return None

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> Runner:
        if self._active:
            raise RunnerError(f"{self.backend} runner for {self.model_path.name} is already active")
        try:
            self._activate_impl()
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(f"{self.backend} could not load {self.model_path}: {exc}") from exc
        self._active = True
        return self

    def deactivate(self) -> None:
        if self._active:
            try:
                self._deactivate_impl()
            finally:
                self._active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def check_inputs(self, feed: dict[str, np.ndarray]) -> int:
        """Validate names, dtypes and shapes against the manifest; returns the batch size."""
        specs: tuple[TensorSpec, ...] = self.bundle.manifest.inputs
        missing = [s.name for s in specs if s.name not in feed]
        extra = sorted(set(feed) - {s.name for s in specs})
        if missing or extra:
            raise RunnerError(f"inputs must be exactly {[s.name for s in specs]}; missing {missing}, unexpected {extra}")
        batch = None
        for spec in specs:
            arr = feed[spec.name]
            if not isinstance(arr, np.ndarray) or arr.dtype != numpy_dtype(spec.dtype):
                got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise RunnerError(f"input {spec.name!r} must be a {spec.dtype} array, got {got}")
            if arr.ndim != len(spec.shape) or any(d != -1 and d != a for d, a in zip(spec.shape, arr.shape)):
                raise RunnerError(f"input {spec.name!r} has shape {list(arr.shape)}, the model takes {list(spec.shape)} "
                                  "(-1: any batch size)")
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise RunnerError(f"inputs disagree on the batch size ({batch} vs {arr.shape[0]} for {spec.name!r})")
        return int(batch or 0)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; returns the outputs by name, in the manifest's order."""
        if not self._active:
            raise RunnerError(f"{self.backend} runner is not active; call activate() (or use it as a context manager)")
        self.check_inputs(feed)
        t0 = time.perf_counter()
        try:
            out = self._infer_impl(feed)
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(f"{self.backend} inference failed: {exc}") from exc
        self.last_latency_s = time.perf_counter() - t0
        return out

    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate_impl(self) -> None:
        pass
