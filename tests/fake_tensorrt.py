"""A fake ``tensorrt`` and ``pycuda.driver`` for testing ``voxedge build-engine`` without a GPU.

It speaks TensorRT's Python API as the bindings define it (NVIDIA/TensorRT ``python/src/infer/pyCore.cpp``
and ``pyGraph.cpp`` at ``release/10.3`` and ``main`` = 11.1) and records what the code under test asks
for: network creation flags, builder flags set and cleared, layer precisions and output types,
optimization profiles, timing-cache calls, DLA settings and progress-monitor calls. It enforces the rules
that make a real build fail where a wrong configuration would: precision flags or layer precisions on a
strongly typed network, Q/DQ layers without INT8 under weak typing, a dynamic input without a profile,
inconsistent profile shapes.

Two API shapes:
- ``"10.3"`` (JetPack 6): weak typing; ``BuilderFlag.FP16``/``INT8``/``OBEY_``/``PREFER_PRECISION_CONSTRAINTS``
  and ``Builder.platform_has_fast_fp16`` exist (``STRONGLY_TYPED`` too, since 9.x);
- ``"11"``: strong typing only; those flags and ``platform_has_fast_fp16`` are gone.

The parser reads the real ONNX file (with ``onnx``): inputs with their shapes (-1 for a named or unknown
dimension) and one layer per node, named after it, as the ONNX parser names them.

Install with ``install(monkeypatch, api=...)``; knobs are keyword arguments of ``FakeState``.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GIB = 1 << 30

BuilderFlag10 = enum.IntEnum("BuilderFlag", {
    "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "DISABLE_TIMING_CACHE": 6, "TF32": 7,
    "SPARSE_WEIGHTS": 8, "OBEY_PRECISION_CONSTRAINTS": 11, "PREFER_PRECISION_CONSTRAINTS": 12, "BF16": 19})
BuilderFlag11 = enum.IntEnum("BuilderFlag", {
    "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "DISABLE_TIMING_CACHE": 6, "TF32": 7, "SPARSE_WEIGHTS": 8})
NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5,
                                     "BF16": 7, "INT64": 8})
LayerType = enum.IntEnum("LayerType", {name: i for i, name in enumerate((
    "CONVOLUTION", "ACTIVATION", "POOLING", "ELEMENTWISE", "UNARY", "SHUFFLE", "SLICE", "MATRIX_MULTIPLY",
    "CONSTANT", "SHAPE", "REDUCE", "CONCATENATION", "SOFTMAX", "GATHER", "CAST", "QUANTIZE", "DEQUANTIZE",
    "IDENTITY"))})
DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})

_LAYER_OF_OP = {"Conv": "CONVOLUTION", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "MaxPool": "POOLING",
                "AveragePool": "POOLING", "GlobalAveragePool": "REDUCE", "ReduceMean": "REDUCE",
                "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE",
                "Pow": "ELEMENTWISE", "Log": "UNARY", "Sqrt": "UNARY", "Exp": "UNARY", "Reshape": "SHUFFLE",
                "Transpose": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Squeeze": "SHUFFLE", "Flatten": "SHUFFLE",
                "Slice": "SLICE", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY",
                "Constant": "CONSTANT", "Shape": "SHAPE", "Concat": "CONCATENATION", "Softmax": "SOFTMAX",
                "Gather": "GATHER", "Cast": "CAST", "QuantizeLinear": "QUANTIZE",
                "DequantizeLinear": "DEQUANTIZE"}
_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL", 16: "BF16"}
WEAK_ONLY_FLAGS = ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")


@dataclass
class FakeState:
    """Knobs (set when installing) and records (read by tests)."""

    api: str = "10.3"
    version: str = ""
    fast_fp16: bool = True
    dla_cores: int = 0
    input_shapes: dict = field(default_factory=dict)  # name -> shape, replacing the ONNX file's
    cache_mismatch: bool = False  # set_timing_cache returns False for a non-empty cache
    cache_raises_on: bytes | None = None  # create_timing_cache raises on exactly this blob
    timing_cache_none: bool = False  # get_timing_cache returns None
    serialize_raises: bool = False
    drop_flags: tuple[str, ...] = ()  # BuilderFlag members to remove from this API shape
    # records
    parsed: list = field(default_factory=list)
    network_flags: list = field(default_factory=list)
    networks: list = field(default_factory=list)
    configs: list = field(default_factory=list)
    cache_calls: list = field(default_factory=list)  # ("create" | "set", blob, result)
    monitor_calls: list = field(default_factory=list)
    built: list = field(default_factory=list)  # the problems of each build (empty: it succeeded)
    cuda: types.ModuleType | None = None  # the fake pycuda.driver (contexts pushed, per device)

    @property
    def config(self) -> FakeConfig:
        return self.configs[-1]

    @property
    def network(self) -> FakeNetwork:
        return self.networks[-1]


class FakeTensor:
    def __init__(self, name: str, shape: tuple, dtype) -> None:
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


class FakeLayer:
    def __init__(self, network: FakeNetwork, name: str, type_, outputs: list[FakeTensor]) -> None:
        self._network = network
        self.name, self.type, self._outputs = name, type_, outputs
        self._precision = DataType.FLOAT
        self.precision_is_set = False
        self.output_types: dict[int, object] = {}

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> FakeTensor:
        return self._outputs[index]

    @property
    def precision(self):
        return self._precision

    @precision.setter
    def precision(self, dtype) -> None:
        if self._network.strongly_typed:  # NetworkDefinitionCreationFlag.STRONGLY_TYPED's documented rule
            raise RuntimeError("setting layer precision is not allowed in a strongly typed network")
        self._precision, self.precision_is_set = dtype, True

    def set_output_type(self, index: int, dtype) -> None:
        if self._network.strongly_typed:
            raise RuntimeError("setting layer output types is not allowed in a strongly typed network")
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self, flags: int, strongly_typed: bool) -> None:
        self.flags, self.strongly_typed = flags, strongly_typed
        self.inputs: list[FakeTensor] = []
        self.layers: list[FakeLayer] = []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> FakeTensor:
        return self.inputs[index]


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, input, min, opt, max) -> None:  # noqa: A002 - the binding's argument names
        dims = [tuple(min), tuple(opt), tuple(max)]
        if len({len(d) for d in dims}) != 1 or any(not a <= b <= c for a, b, c in zip(*dims)):
            raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
        self.shapes[input] = tuple(dims)


class FakeHostMemory(bytes):
    """IHostMemory supports the buffer protocol; bytes does too."""


class FakeTimingCache:
    def __init__(self, state: FakeState, blob: bytes) -> None:
        self._state, self.blob = state, blob

    def serialize(self):
        if self._state.serialize_raises:
            raise RuntimeError("fake: timing cache serialization failed")
        return FakeHostMemory(b"fake-timing-cache:" + self._state.version.encode())


class FakeConfig:
    def __init__(self, state: FakeState, trt) -> None:
        self._state, self._trt = state, trt
        self.flags: set[str] = set()
        self.cleared: set[str] = set()
        self.pools: dict = {}
        self.profiles: list[FakeProfile] = []
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.progress_monitor = None
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self._cache: FakeTimingCache | None = None

    def set_flag(self, flag) -> None:
        self.flags.add(flag.name)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag.name)
        self.cleared.add(flag.name)

    def get_flag(self, flag) -> bool:
        return flag.name in self.flags

    def set_memory_pool_limit(self, pool, pool_size: int) -> None:
        self.pools[pool.name] = pool_size

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache) -> FakeTimingCache:
        blob = bytes(serialized_timing_cache)
        if self._state.cache_raises_on is not None and blob == self._state.cache_raises_on:
            self._state.cache_calls.append(("create", blob, "raised"))
            raise RuntimeError("fake: the timing cache blob is damaged")
        self._state.cache_calls.append(("create", blob, "ok"))
        return FakeTimingCache(self._state, blob)

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        ok = not (self._state.cache_mismatch and cache.blob and not ignore_mismatch)
        self._state.cache_calls.append(("set", cache.blob, ok, ignore_mismatch))
        if ok:
            self._cache = cache
        return ok

    def get_timing_cache(self):
        return None if self._state.timing_cache_none else self._cache


class FakeBuilder:
    def __init__(self, state: FakeState, trt, logger) -> None:
        self._state, self._trt = state, trt

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self._state.network_flags.append(flags)
        strong = self._state.api == "11" or bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        network = FakeNetwork(flags, strong)
        self._state.networks.append(network)
        return network

    def create_builder_config(self) -> FakeConfig:
        config = FakeConfig(self._state, self._trt)
        self._state.configs.append(config)
        return config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    @property
    def num_DLA_cores(self) -> int:
        return self._state.dla_cores

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig):
        problems = self._problems(network, config)
        monitor = config.progress_monitor
        if monitor is not None:  # as PyProgressMonitor calls the Python override: positionally, TensorRT's order
            calls = [("phase_start", ("Building engine", None, 2)),
                     ("phase_start", ("Tactic selection", "Building engine", 3)),
                     *[("step_complete", ("Tactic selection", step)) for step in range(3)],
                     ("phase_finish", ("Tactic selection",)), ("phase_finish", ("Building engine",))]
            for name, args in calls:
                self._state.monitor_calls.append((name, args, getattr(monitor, name)(*args)))
        self._state.built.append(problems)
        if problems:
            return None  # the real builder logs the error and returns None
        record = {"flags": sorted(config.flags), "profiles": len(config.profiles)}
        return FakeHostMemory(b"FAKEPLAN" + json.dumps(record).encode())

    def _problems(self, network: FakeNetwork, config: FakeConfig) -> list[str]:
        problems = []
        if network.strongly_typed:
            problems += [f"BuilderFlag.{f} is not allowed for a strongly typed network"
                         for f in WEAK_ONLY_FLAGS if f in config.flags]
        elif "INT8" not in config.flags and any(layer.type == LayerType.QUANTIZE for layer in network.layers):
            problems.append("Int8 precision has been set for a layer or layer output, but int8 is not configured")
        profiled = {name for p in config.profiles for name in p.shapes}
        problems += [f"no optimization profile for dynamic input {t.name}" for t in network.inputs
                     if -1 in t.shape and t.name not in profiled]
        return problems


class FakeBuilder10(FakeBuilder):
    @property
    def platform_has_fast_fp16(self) -> bool:
        return self._state.fast_fp16


class FakeParser:
    def __init__(self, state: FakeState, network: FakeNetwork, logger) -> None:
        self._state, self._network = state, network
        self.num_errors = 0

    def get_error(self, index: int) -> str:
        return "fake parser error"

    def parse_from_file(self, path: str) -> bool:
        import onnx

        self._state.parsed.append(Path(path).name)
        model = onnx.load(path, load_external_data=False)
        for tensor in model.graph.input:
            tt = tensor.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            shape = tuple(self._state.input_shapes.get(tensor.name, shape))
            self._network.inputs.append(FakeTensor(tensor.name, shape, DataType[_ONNX_TYPES.get(tt.elem_type,
                                                                                                 "FLOAT")]))
        for node in model.graph.node:
            kind = LayerType[_LAYER_OF_OP.get(node.op_type, "IDENTITY")]
            dtype = self._output_type(node)
            outputs = [FakeTensor(name, (), dtype) for name in node.output]
            self._network.layers.append(FakeLayer(self._network, node.name, kind, outputs))
        return True

    @staticmethod
    def _output_type(node):
        if node.op_type == "QuantizeLinear":
            return DataType.INT8
        if node.op_type == "Shape":
            return DataType.INT64
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), 1)
            return DataType[_ONNX_TYPES.get(to, "FLOAT")]
        return DataType.FLOAT


class IProgressMonitor:
    def __init__(self) -> None:
        pass


def make_tensorrt(state: FakeState) -> types.ModuleType:
    """A ``tensorrt`` module of ``state.api``'s shape."""
    trt = types.ModuleType("tensorrt")
    state.version = state.version or ("10.3.0" if state.api == "10.3" else "11.1.0")
    trt.__version__ = state.version
    base = BuilderFlag10 if state.api == "10.3" else BuilderFlag11
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {m.name: m.value for m in base if m.name not in state.drop_flags})
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.DataType, trt.LayerType, trt.DeviceType, trt.MemoryPoolType = DataType, LayerType, DeviceType, MemoryPoolType
    trt.ProfilingVerbosity = ProfilingVerbosity
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32

    class Logger:
        WARNING = 2

        def __init__(self, severity=WARNING) -> None:
            self.severity = severity

    trt.Logger = Logger
    trt.IProgressMonitor = IProgressMonitor
    builder_cls = FakeBuilder10 if state.api == "10.3" else FakeBuilder
    trt.Builder = lambda logger: builder_cls(state, trt, logger)
    trt.OnnxParser = lambda network, logger: FakeParser(state, network, logger)
    trt.fake = state
    return trt


@dataclass
class FakeGpu:
    name: str = "Orin"
    compute_capability: tuple[int, int] = (8, 7)
    sm_count: int = 8
    total_memory: int = int(7.4 * GIB)  # an Orin Nano 8 GB shows about 7.4 GiB to CUDA


class FakeContext:
    def __init__(self, log: list, index: int) -> None:
        self._log, self._index = log, index

    def push(self) -> None:
        self._log.append(("push", self._index))

    def pop(self) -> None:
        self._log.append(("pop", self._index))

    def detach(self) -> None:
        self._log.append(("detach", self._index))


def make_pycuda(gpus: list[FakeGpu]) -> tuple[types.ModuleType, types.ModuleType]:
    """``pycuda`` and ``pycuda.driver`` with ``gpus``; ``driver.contexts`` records push/pop per device."""
    driver = types.ModuleType("pycuda.driver")
    driver.contexts = []
    driver.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")
    driver.init = lambda flags=0: None

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < len(gpus):
                raise RuntimeError("cuDeviceGet failed: invalid device ordinal")
            self._index, self._gpu = index, gpus[index]

        @staticmethod
        def count() -> int:
            return len(gpus)

        def name(self) -> str:
            return self._gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return self._gpu.compute_capability

        def total_memory(self) -> int:
            return self._gpu.total_memory

        def get_attribute(self, attribute) -> int:
            assert attribute == "MULTIPROCESSOR_COUNT"
            return self._gpu.sm_count

        def retain_primary_context(self) -> FakeContext:
            return FakeContext(driver.contexts, self._index)

    driver.Device = Device
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package, driver


def install(monkeypatch, api: str = "10.3", gpus: list[FakeGpu] | None = None, **knobs) -> FakeState:
    """Put a fake ``tensorrt`` of ``api``'s shape and a fake ``pycuda.driver`` in ``sys.modules``."""
    state = FakeState(api=api, **knobs)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(state))
    package, driver = make_pycuda(gpus or [FakeGpu()])
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    state.cuda = driver
    return state


class GoldenReplay:
    """A ``run_plan`` that answers with the bundle's golden outputs for the rows it is fed (as a correct engine
    would), optionally changed by ``alter(outputs) -> outputs``; records the plans and batch sizes it ran."""

    def __init__(self, golden_path: Path, alter=None) -> None:
        with np.load(golden_path) as saved:
            self.inputs = {k.removeprefix("input."): saved[k] for k in saved.files if k.startswith("input.")}
            self.outputs = {k.removeprefix("output."): saved[k] for k in saved.files if k.startswith("output.")}
        self.alter = alter
        self.calls: list[tuple[bytes, int]] = []

    def __call__(self, plan: bytes, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = next(iter(feed))
        rows = [next(i for i, ref in enumerate(self.inputs[name]) if np.array_equal(ref, x)) for x in feed[name]]
        self.calls.append((bytes(plan), len(rows)))
        out = {k: v[rows].copy() for k, v in self.outputs.items()}
        return self.alter(out) if self.alter else out
