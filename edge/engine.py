"""TensorRT engines of a bundle: keys, device checks, and ``voxedge build-engine``.

An engine is only valid for the exact ONNX file, TensorRT version, GPU compute
capability, precision, batch profile and builder flags it was built with; the
key records all of them, the plan file is named by the key's digest, and a
runner refuses an engine whose key does not match the device it runs on.

Plans are saved raw (no header), so ``trtexec --loadEngine`` and Triton load
them as they are. The timing cache is kept per (compute capability, TensorRT
version) under ``engines/`` and reused by later builds.

Everything that touches TensorRT or CUDA imports it lazily; it runs on the
robot only (JetPack 6: TensorRT 10.3). This module is unverified on the
development machines, which have no GPU.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.bundle import Bundle, BundleError, Manifest, load_bundle, sha256_file, write_bundle

ENGINE_DIR = "engines"
DEFAULT_WORKSPACE_MIB = 1024  # Orin Nano shares 8 GB between CPU and GPU: stay modest
DEFAULT_MAX_BATCH = 8
DEFAULT_OPT_BATCH = 1


class EngineError(BundleError):
    """An engine cannot be built, or does not match this device."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on."""

    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str  # e.g. "8.7" for Orin
    precision: str
    batch_profile: tuple[int, int, int]  # min, opt, max
    flags: tuple[str, ...] = ()

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def plan_name(self) -> str:
        return f"{ENGINE_DIR}/{self.precision}-{self.digest()}.plan"

    @classmethod
    def from_dict(cls, data: dict) -> EngineKey:
        return cls(**{**data, "batch_profile": tuple(data["batch_profile"]), "flags": tuple(data.get("flags", ()))})


def check_key(engine: EngineKey, device: EngineKey, bundle_path: Path) -> None:
    """Raise EngineError naming every field in which ``engine`` differs from what ``device`` needs."""
    diffs = [f"{name}: engine {getattr(engine, name)!r}, here {getattr(device, name)!r}"
             for name in ("onnx_sha256", "tensorrt_version", "compute_capability", "precision")
             if getattr(engine, name) != getattr(device, name)]
    if engine.batch_profile[2] < device.batch_profile[2]:
        diffs.append(f"max batch: engine {engine.batch_profile[2]}, needed {device.batch_profile[2]}")
    if diffs:
        raise EngineError(f"the engine {engine.plan_name} was built for another setup ({'; '.join(diffs)}); "
                          f"rebuild it here with: voxedge build-engine {bundle_path} --precision {device.precision}")


def onnx_precision(engine_precision: str) -> str:
    """Which ONNX file an engine is built from: the Q/DQ model for int8, the FP32 model otherwise."""
    return "int8" if engine_precision == "int8" else "fp32"


def _usable(key: EngineKey, device: EngineKey) -> bool:
    same = ("onnx_sha256", "tensorrt_version", "compute_capability", "precision")
    return all(getattr(key, f) == getattr(device, f) for f in same) and key.batch_profile[2] >= device.batch_profile[2]


def find_engine(bundle: Bundle, device: EngineKey) -> Path:
    """The plan file usable with ``device``'s key, or an EngineError saying what differs and how to rebuild."""
    same = [EngineKey.from_dict(e["key"]) for e in bundle.manifest.engines if e["key"]["precision"] == device.precision]
    for key in same:
        if _usable(key, device):
            return bundle.path / key.plan_name
    if same:
        check_key(same[0], device, bundle.path)
    raise EngineError(f"the bundle has no usable {device.precision} engine for this device (batch up to "
                      f"{device.batch_profile[2]}); build it with: voxedge build-engine {bundle.path} "
                      f"--precision {device.precision} --max-batch {device.batch_profile[2]}")


def device_key(bundle: Bundle, precision: str, batch_profile=(1, DEFAULT_OPT_BATCH, DEFAULT_MAX_BATCH),
               flags: tuple[str, ...] = ()) -> EngineKey:
    """The key an engine needs on this device (imports tensorrt and pycuda)."""
    trt = _import_tensorrt()
    return EngineKey(sha256_file(bundle.model_path(onnx_precision(precision))), trt.__version__,
                     _compute_capability(), precision,
                     tuple(batch_profile), tuple(sorted(flags)))


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError("TensorRT is not installed here. Engines are built on the robot: JetPack 6 ships "
                          "TensorRT 10.3 (use the voxedge Jetson image, or pip install 'voxedge[trt]' there)") from exc
    return trt


def _compute_capability() -> str:
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineError("pycuda is not installed; install 'voxedge[trt]' on the robot") from exc
    cuda.init()
    major, minor = cuda.Device(0).compute_capability()
    return f"{major}.{minor}"


def build_engine(bundle_path: str | Path, precision: str = "fp16", max_batch: int = DEFAULT_MAX_BATCH,
                 opt_batch: int = DEFAULT_OPT_BATCH, workspace_mib: int = DEFAULT_WORKSPACE_MIB, log=print) -> Path:
    """Build a TensorRT engine from a bundle's ONNX model and register it in the manifest (atomically).

    ``precision`` fp32 and fp16 build from ``model.fp32.onnx`` (fp16 with the
    FP16 builder flag); int8 builds from the Q/DQ model with INT8 (and FP16 for
    the layers left in floating point).
    """
    trt = _import_tensorrt()
    bundle = load_bundle(bundle_path)
    onnx_path = bundle.model_path(onnx_precision(precision))
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    key = EngineKey(sha256_file(onnx_path), trt.__version__, _compute_capability(), precision,
                    (1, opt_batch, max_batch), tuple(sorted(flags)))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for flag in flags:
        if hasattr(trt.BuilderFlag, flag):  # TensorRT 11 drops some weak-typing flags
            config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        shapes = [tuple([b] + dims[1:]) for b in (1, opt_batch, max_batch)]
        profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(profile)
    cache_path = bundle.path / ENGINE_DIR / f"timing-sm{key.compute_capability}-trt{key.tensorrt_version}.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, log)
    log(f"building {precision} engine from {onnx_path.name} (batch 1..{max_batch}, workspace {workspace_mib} MiB); "
        "this takes minutes on a Jetson")
    t0 = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError("TensorRT failed to build the engine (see the messages above)")
    plan_bytes = bytes(plan)
    cache_bytes = bytes(config.get_timing_cache().serialize())
    build_s = time.monotonic() - t0

    def populate(tmp: Path) -> Manifest:
        for f in bundle.manifest.files:
            (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.path / f.path, tmp / f.path)
        (tmp / key.plan_name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / key.plan_name).write_bytes(plan_bytes)
        (tmp / cache_path.relative_to(bundle.path)).write_bytes(cache_bytes)
        entries = [e for e in bundle.manifest.engines if e["path"] != key.plan_name]
        entries.append({"path": key.plan_name, "key": asdict(key), "build_s": build_s})
        return Manifest(**{**vars(bundle.manifest), "engines": tuple(entries)})

    write_bundle(bundle.path, populate)
    log(f"built {key.plan_name} in {build_s:.0f} s")
    return bundle.path / key.plan_name


def _progress_monitor(trt, log):
    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, parent_phase, phase_name, num_steps):
            log(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # keep building

        def phase_finish(self, phase_name):
            pass

    return _Monitor()
