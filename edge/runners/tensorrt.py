"""TensorRT runner: a bundle's engine for this device, run with pycuda.

One CUDA context (the device's primary context), one stream, pinned host
buffers and device buffers sized for the engine's largest batch, allocated once
in ``activate``; ``infer`` copies in, runs ``execute_async_v3`` and copies out
on that stream. The engine must carry the key of this device (ONNX file,
TensorRT version, compute capability, precision, batch): ``edge.engine``
refuses any other and says how to rebuild.

TensorRT 10 API (JetPack 6 ships 10.3): tensors by name (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``, ``set_input_shape``,
``set_tensor_address``). Runs on the robot only; unverified on the development
machines, which have no GPU (tests carry ``requires_tensorrt``).
"""

from __future__ import annotations

import numpy as np

from edge.engine import DEFAULT_MAX_BATCH, DEFAULT_OPT_BATCH, device_key, find_engine, onnx_precision
from edge.runners.base import Runner, RunnerError


class TensorRtRunner(Runner):
    backend = "tensorrt"

    def __init__(self, bundle, precision: str = "int8", max_batch: int = DEFAULT_MAX_BATCH,
                 device: int = 0) -> None:
        # The base class names the ONNX file; an engine of precision p is built from onnx_precision(p).
        super().__init__(bundle, onnx_precision(precision))
        self.precision = precision
        self.model_note = f"{precision} TensorRT engine built from {self.model_path.name}"
        self.max_batch = max_batch
        self.device = device
        self.engine_path = None
        self._ctx = self._stream = self._context = self._engine = None
        self._buffers: dict[str, tuple[np.ndarray, object]] = {}
        self._outputs: list[str] = []

    def _activate_impl(self) -> None:
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise RunnerError("the TensorRT runner needs tensorrt and pycuda (JetPack 6; pip install "
                              "'voxedge[trt]'); elsewhere use the onnxruntime runner") from exc
        key = device_key(self.bundle, self.precision, (1, DEFAULT_OPT_BATCH, self.max_batch))
        self.engine_path = find_engine(self.bundle, key)  # EngineError: built elsewhere; names the rebuild command
        cuda.init()
        self._ctx = cuda.Device(self.device).retain_primary_context()
        self._ctx.push()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(logger)
            self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise RunnerError(f"TensorRT could not deserialize {self.engine_path}; rebuild it with: "
                                  f"voxedge build-engine {self.bundle.path} --precision {self.precision}")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            declared = {s.name for s in (*self.bundle.manifest.inputs, *self.bundle.manifest.outputs)}
            for i in range(self._engine.num_io_tensors):
                name = self._engine.get_tensor_name(i)
                if name not in declared:
                    raise RunnerError(f"engine tensor {name!r} is not in the bundle's manifest {sorted(declared)}")
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                if is_input:
                    shape = tuple(self._engine.get_tensor_profile_shape(name, 0)[2])  # the profile's max
                else:
                    shape = tuple(self.max_batch if d == -1 else d for d in self._engine.get_tensor_shape(name))
                host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
                dev = cuda.mem_alloc(max(host.nbytes, 1))
                self._context.set_tensor_address(name, int(dev))
                self._buffers[name] = (host, dev)
                if not is_input:
                    self._outputs.append(name)
            order = [o.name for o in self.bundle.manifest.outputs]
            self._outputs.sort(key=order.index)
        except BaseException:
            self._release()
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
            raise
        self._ctx.pop()

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pycuda.driver as cuda

        batch = next(iter(feed.values())).shape[0]
        if batch > self.max_batch:
            raise RunnerError(f"batch {batch} is larger than the engine's maximum {self.max_batch}; split it, or "
                              f"rebuild with: voxedge build-engine {self.bundle.path} --max-batch {batch}")
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
            for name in self._outputs:
                host, dev = self._buffers[name]
                shapes[name] = tuple(self._context.get_tensor_shape(name))
                cuda.memcpy_dtoh_async(host[: int(np.prod(shapes[name]))], dev, self._stream)
            self._stream.synchronize()
            return {n: self._buffers[n][0][: int(np.prod(shapes[n]))].reshape(shapes[n]).copy() for n in self._outputs}
        finally:
            self._ctx.pop()

    def _release(self) -> None:
        for _, dev in self._buffers.values():
            dev.free()
        self._buffers.clear()
        self._outputs.clear()
        self._context = self._engine = self._stream = None

    def _deactivate_impl(self) -> None:
        self._ctx.push()
        try:
            self._release()
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
