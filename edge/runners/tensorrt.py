"""TensorRT runner: a bundle's engine for this device, run with pycuda.

One CUDA context (the selected device's primary context), one stream, pinned
host buffers and device buffers sized for the engine's largest batch, allocated
once when a ``PlanSession`` opens; ``run`` copies in, runs ``execute_async_v3``
and copies out on that stream. The runner's engine must carry the key of this
device (ONNX file, TensorRT version and typing, GPU, DLA core, precision,
batch): ``edge.engine`` refuses any other and says how to rebuild.
``run_plan`` runs a plan once, for ``voxedge build-engine``'s golden check.

TensorRT 10 API (JetPack 6 ships 10.3): tensors by name (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``, ``set_input_shape``,
``set_tensor_address``). Runs on the robot only; unverified on hardware from the
development machines, which have no GPU (tests carry ``requires_tensorrt``).
"""

from __future__ import annotations

import numpy as np

from edge.engine import (DEFAULT_MAX_BATCH, DEFAULT_OPT_BATCH, device_key, engine_model, find_engine,
                         onnx_precision, typing_mode)
from edge.runners.base import Runner, RunnerError

_MISSING = ("the TensorRT runner needs tensorrt and pycuda (JetPack 6; pip install 'voxedge[trt]'); elsewhere "
            "use the onnxruntime runner")


def _imports():
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise RunnerError(_MISSING) from exc
    return trt, cuda


class PlanSession:
    """One serialized engine deserialized on one CUDA device, with buffers for ``max_batch``.

    ``declared``: the tensor names the bundle's manifest declares (any other engine tensor is refused);
    ``output_order``: the order of ``run``'s outputs (default: the engine's).
    """

    def __init__(self, plan: bytes, device: int = 0, dla_core: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, declared: set[str] | None = None,
                 output_order: list[str] | None = None, source: str = "the engine") -> None:
        self.plan = plan
        self.device = device
        self.dla_core = dla_core
        self.max_batch = max_batch
        self.declared = declared
        self.output_order = output_order
        self.source = source
        self._ctx = self._stream = self._context = self._engine = None
        self._buffers: dict[str, tuple[np.ndarray, object]] = {}
        self.outputs: list[str] = []

    def open(self) -> PlanSession:
        trt, cuda = _imports()
        cuda.init()
        self._ctx = cuda.Device(self.device).retain_primary_context()
        self._ctx.push()
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            if self.dla_core is not None:
                runtime.DLA_core = self.dla_core  # before deserializing: the engine's DLA layers run there
            self._engine = runtime.deserialize_cuda_engine(self.plan)
            if self._engine is None:
                raise RunnerError(f"TensorRT could not deserialize {self.source} (see the TensorRT log above)")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._allocate(trt, cuda)
        except BaseException:
            self._release()
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
            raise
        self._ctx.pop()
        return self

    def _allocate(self, trt, cuda) -> None:
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            if self.declared is not None and name not in self.declared:
                raise RunnerError(f"engine tensor {name!r} is not in the bundle's manifest {sorted(self.declared)}")
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dims = tuple(self._engine.get_tensor_shape(name))
            if is_input and -1 in dims:
                shape = tuple(self._engine.get_tensor_profile_shape(name, 0)[2])  # the profile's max
            else:  # a fixed-batch input has no profile entry; outputs follow the largest batch
                shape = tuple(self.max_batch if d == -1 else d for d in dims)
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            dev = cuda.mem_alloc(max(host.nbytes, 1))
            self._context.set_tensor_address(name, int(dev))
            self._buffers[name] = (host, dev)
            if not is_input:
                self.outputs.append(name)
        if self.output_order is not None:
            self.outputs.sort(key=self.output_order.index)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pycuda.driver as cuda

        self._ctx.push()
        try:
            for name, value in feed.items():
                host, dev = self._buffers[name]
                view = host[: value.size].reshape(value.shape)
                np.copyto(view, value)
                self._context.set_input_shape(name, value.shape)
                cuda.memcpy_htod_async(dev, view, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise RunnerError("TensorRT execute_async_v3 reported failure (see the TensorRT log above)")
            shapes = {}
            for name in self.outputs:
                host, dev = self._buffers[name]
                shapes[name] = tuple(self._context.get_tensor_shape(name))
                cuda.memcpy_dtoh_async(host[: int(np.prod(shapes[name]))], dev, self._stream)
            self._stream.synchronize()
            return {n: self._buffers[n][0][: int(np.prod(shapes[n]))].reshape(shapes[n]).copy() for n in self.outputs}
        finally:
            self._ctx.pop()

    def _release(self) -> None:
        for _, dev in self._buffers.values():
            dev.free()
        self._buffers.clear()
        self.outputs.clear()
        self._context = self._engine = self._stream = None

    def close(self) -> None:
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            self._release()
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None


def run_plan(plan: bytes, feed: dict[str, np.ndarray], device: int = 0,
             dla_core: int | None = None) -> dict[str, np.ndarray]:
    """Run a serialized engine once on ``feed`` (``voxedge build-engine``'s golden check)."""
    batch = len(next(iter(feed.values())))
    session = PlanSession(plan, device, dla_core, max_batch=max(batch, 1), source="the new engine").open()
    try:
        return session.run(feed)
    finally:
        session.close()


class TensorRtRunner(Runner):
    backend = "tensorrt"

    def __init__(self, bundle, precision: str = "int8", max_batch: int = DEFAULT_MAX_BATCH,
                 device: int = 0, dla_core: int | None = None) -> None:
        # The base class names the ONNX file; an engine of precision p is built from onnx_precision(p). Which
        # file that is for fp16 depends on this TensorRT's typing, known once it is imported (activate).
        super().__init__(bundle, onnx_precision(precision))
        self.precision = precision
        self.model_note = f"{precision} TensorRT engine built from {self.model_path.name}"
        self.max_batch = max_batch
        self.device = device
        self.dla_core = dla_core
        self.engine_path = None
        self._session: PlanSession | None = None

    def _activate_impl(self) -> None:
        trt, _ = _imports()
        self.model_path = self.bundle.path / engine_model(self.bundle, self.precision, typing_mode(trt)).path
        self.model_note = f"{self.precision} TensorRT engine built from {self.model_path.name}"
        key = device_key(self.bundle, self.precision, (1, DEFAULT_OPT_BATCH, self.max_batch),
                         device=self.device, dla_core=self.dla_core)
        self.engine_path = find_engine(self.bundle, key)  # EngineError: built elsewhere; names the rebuild command
        declared = {s.name for s in (*self.bundle.manifest.inputs, *self.bundle.manifest.outputs)}
        try:
            self._session = PlanSession(self.engine_path.read_bytes(), self.device, self.dla_core, self.max_batch,
                                        declared, [o.name for o in self.bundle.manifest.outputs],
                                        source=str(self.engine_path)).open()
        except RunnerError as exc:
            raise RunnerError(f"{exc}; rebuild it with: voxedge build-engine {self.bundle.path} "
                              f"--precision {self.precision}") from exc

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feed.values())).shape[0]
        if batch > self.max_batch:
            raise RunnerError(f"batch {batch} is larger than the engine's maximum {self.max_batch}; split it, or "
                              f"rebuild with: voxedge build-engine {self.bundle.path} --max-batch {batch}")
        return self._session.run(feed)

    def _deactivate_impl(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
