"""TensorRT engines of a bundle: keys, device checks, and ``voxedge build-engine``.

An engine is only valid for the exact ONNX file, TensorRT version and typing
mode, GPU (compute capability, name, multiprocessor count, memory), DLA core,
precision, batch profile and builder flags it was built with; the key records
all of them, the plan file is named by the key's digest, and a runner refuses
an engine whose key does not match the device it runs on.

A build cannot silently produce the wrong thing:
- the precision asked for is honoured or refused: no builder flag is skipped
  because this TensorRT lacks it. TensorRT 10.12 deprecated weak typing and 11
  removed its flags (``typing_mode``); under strong typing the ONNX file's own
  types decide, so an fp16 engine is built from the bundle's FP16 model;
- under weak typing (JetPack 6: TensorRT 10.3) the layers the bundle keeps in
  FP32 (the audio front end, whose DFT power overflows FP16) are pinned to FP32
  and the builder must obey (``pin_kept_float``);
- the finished engine runs the bundle's golden inputs and must agree with the
  golden outputs within the precision's tolerance, or it is not installed.

Plans are saved raw (no header), so ``trtexec --loadEngine`` and Triton load
them as they are. The timing cache is kept per (TensorRT version, GPU) under
``engines/`` and reused by later builds; one made elsewhere is set aside.

Everything that touches TensorRT or CUDA imports it lazily; it runs on the
robot only. The TensorRT path is unverified on hardware from the development
machines, which have no GPU: the tests drive it with a fake ``tensorrt``
module (``tests/fake_tensorrt.py``) that follows the real Python API.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edge.bundle import Bundle, BundleError, Manifest, ModelFile, load_bundle, sha256_file, write_bundle

ENGINE_DIR = "engines"
ORT_TRT_CACHE_DIR = f"{ENGINE_DIR}/ort-trt"  # ONNX Runtime's TensorRT provider caches (edge.runners.onnxruntime)
DEFAULT_WORKSPACE_MIB = 1024  # Orin Nano shares 8 GB between CPU and GPU: stay modest
DEFAULT_MAX_BATCH = 8
DEFAULT_OPT_BATCH = 1
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
# NVIDIA deprecated the weak-typing API (precision flags, layer precisions) in TensorRT 10.12 and
# removed it in 11; from 10.12 on voxedge builds strongly typed networks.
STRONG_TYPING_SINCE = (10, 12)
WEAK_TYPING_FLAGS = ("FP16", "INT8")
PIN_FLAG = "OBEY_PRECISION_CONSTRAINTS"
NO_TF32 = "no-TF32"  # recorded in a key's flags: TF32 (on by default) cleared for fp32 engines
# Memory is recorded in whole GiB: the Orin boards differ by GiB, and a JetPack update may move the
# carve-out by a few MiB, which must not invalidate every engine.
_GIB = 1 << 30


class EngineError(BundleError):
    """An engine cannot be built, or does not match this device."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on.

    Fields after ``flags`` came later: keys of older manifests load with their defaults ("" / 0 /
    None, i.e. "not recorded") and match no device, so those engines are rebuilt.
    """

    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str  # e.g. "8.7": every Orin (Nano, NX, AGX) reports it, hence the fields below
    precision: str
    batch_profile: tuple[int, int, int]  # min, opt, max
    flags: tuple[str, ...] = ()
    typing: str = ""  # "strong" or "weak" (typing_mode)
    device_name: str = ""
    sm_count: int = 0  # streaming multiprocessors
    total_memory_gib: int = 0
    dla_core: int | None = None  # None: the GPU

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def plan_name(self) -> str:
        return f"{ENGINE_DIR}/{self.precision}-{self.digest()}.plan"

    @classmethod
    def from_dict(cls, data: dict) -> EngineKey:
        """A key from a manifest entry; fields it lacks take their defaults, unknown fields are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["batch_profile"] = tuple(values["batch_profile"])
        values["flags"] = tuple(values.get("flags", ()))
        return cls(**values)


# The fields a device must match exactly (the batch is matched as "at least").
MATCHED_FIELDS = ("onnx_sha256", "tensorrt_version", "compute_capability", "precision", "typing",
                  "device_name", "sm_count", "total_memory_gib", "dla_core")
_RECORDED_LATER = ("typing", "device_name", "sm_count", "total_memory_gib")


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for or runs on (from pycuda)."""

    index: int
    name: str
    compute_capability: str
    sm_count: int
    total_memory_gib: int

    @property
    def slug(self) -> str:
        """A file-name-safe name, e.g. ``orin-8mp-8gib``."""
        name = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "gpu"
        return f"{name}-{self.sm_count}mp-{self.total_memory_gib}gib"


@dataclass(frozen=True)
class Tolerance:
    """How far an engine's outputs may stray from the golden (PyTorch FP32) outputs."""

    max_abs: float  # absolute floor of the limit
    max_abs_of_range: float  # limit relative to each golden output's range (peak to peak)
    min_cosine: float

    def limit(self, expected: np.ndarray) -> float:
        spread = float(np.ptp(expected)) if expected.size else 0.0
        return max(self.max_abs, self.max_abs_of_range * spread)

    def describe(self) -> str:
        return (f"max abs <= max({self.max_abs:g}, {self.max_abs_of_range:g} x the output's range), "
                f"cosine >= {self.min_cosine:g}")


# The manifest records no tolerance per precision, so these are ours. fp32 is convert's own check
# (convert.export.DEFAULT_TOLERANCE, with TF32 off); fp16 is convert.fp16's (2 % of the range, cosine
# 0.999); int8 is loose because the golden outputs are FP32 and the INT8 gate judges accuracy on a
# labelled set: here it catches broken engines (overflow, wrong scales, NaN), not rounding.
GOLDEN_TOLERANCE = {
    "fp32": Tolerance(1e-3, 1e-3, 0.9999),
    "fp16": Tolerance(1e-3, 0.02, 0.999),
    "int8": Tolerance(1e-2, 0.5, 0.95),
}

RunPlan = Callable[[bytes, dict[str, np.ndarray]], dict[str, np.ndarray]]


def check_batches(opt_batch: int, max_batch: int) -> None:
    """Raise EngineError unless 1 <= opt_batch <= max_batch."""
    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"batch sizes must satisfy 1 <= --opt-batch <= --max-batch; got opt {opt_batch}, "
                          f"max {max_batch} (e.g. --opt-batch 1 --max-batch {max(max_batch, 1)})")


def _shown(name: str, value) -> str:
    if name == "dla_core":
        return "the GPU" if value is None else f"DLA core {value}"
    if name in _RECORDED_LATER and value in ("", 0):
        return "not recorded (built by an older voxedge)"
    return repr(value)


def _rebuild_command(bundle_path: Path, device: EngineKey, max_batch: bool = False) -> str:
    command = f"voxedge build-engine {bundle_path} --precision {device.precision}"
    if device.dla_core is not None:
        command += f" --dla-core {device.dla_core}"
    if max_batch:
        command += f" --max-batch {device.batch_profile[2]}"
    return command


def check_key(engine: EngineKey, device: EngineKey, bundle_path: Path, plan: str | None = None) -> None:
    """Raise EngineError naming every field in which ``engine`` (at ``plan``) differs from what ``device``
    needs."""
    diffs = [f"{name}: engine {_shown(name, getattr(engine, name))}, here {_shown(name, getattr(device, name))}"
             for name in MATCHED_FIELDS if getattr(engine, name) != getattr(device, name)]
    short = engine.batch_profile[2] < device.batch_profile[2]
    if short:
        diffs.append(f"max batch: engine {engine.batch_profile[2]}, needed {device.batch_profile[2]}")
    if diffs:
        raise EngineError(f"the engine {plan or engine.plan_name} was built for another setup ({'; '.join(diffs)}); "
                          f"rebuild it here with: {_rebuild_command(bundle_path, device, short)}")


def _differences(key: EngineKey, device: EngineKey) -> int:
    return (sum(getattr(key, f) != getattr(device, f) for f in MATCHED_FIELDS)
            + (key.batch_profile[2] < device.batch_profile[2]))


def _usable(key: EngineKey, device: EngineKey) -> bool:
    return _differences(key, device) == 0


def find_engine(bundle: Bundle, device: EngineKey) -> Path:
    """The plan file usable with ``device``'s key, or an EngineError saying what differs and how to rebuild."""
    same = [(EngineKey.from_dict(e["key"]), e["path"]) for e in bundle.manifest.engines
            if e["key"]["precision"] == device.precision]
    for key, path in same:
        if _usable(key, device):
            return bundle.path / path  # the entry's own path: older keys digest differently now
    if same:  # say what differs from the closest one (e.g. the GPU engine, not the DLA one, for the GPU)
        key, path = min(same, key=lambda entry: _differences(entry[0], device))
        check_key(key, device, bundle.path, path)
    raise EngineError(f"the bundle has no usable {device.precision} engine for this device (batch up to "
                      f"{device.batch_profile[2]}); build it with: "
                      f"{_rebuild_command(bundle.path, device, max_batch=True)}")


def onnx_precision(engine_precision: str, typing: str = "weak") -> str:
    """Which ONNX file an engine is built from: the Q/DQ model for int8; for fp16 the FP16 model under strong
    typing (its types decide) and the FP32 model with the FP16 flag under weak typing; FP32 otherwise."""
    if engine_precision == "int8":
        return "int8"
    return "fp16" if engine_precision == "fp16" and typing == "strong" else "fp32"


def engine_model(bundle: Bundle, precision: str, typing: str) -> ModelFile:
    """The bundle's model file an engine of ``precision`` is built from, or an EngineError saying what to do.

    Only files for any runtime qualify: the CPU INT8 model (7-bit weights, ``runtime: onnxruntime-cpu``)
    is made for ONNX Runtime's kernels and never feeds TensorRT.
    """
    if precision not in ENGINE_PRECISIONS:
        raise EngineError(f"engine precision {precision!r} is not one of {list(ENGINE_PRECISIONS)}")
    source = onnx_precision(precision, typing)
    files = [f for f in bundle.manifest.files if f.precision == source]
    for f in files:
        if f.runtime is None:
            return f
    if source == "fp16":
        raise EngineError("this TensorRT types networks strongly (10.12 and later), so an fp16 engine is built "
                          "from the bundle's FP16 model (model.fp16.onnx), which this bundle lacks. Convert "
                          "again with --fp16, or build --precision fp32 or int8")
    if source == "int8" and files:
        raise EngineError(f"the bundle's only INT8 model ({files[0].path}) is made for ONNX Runtime's CPU kernels "
                          "(7-bit weights); TensorRT needs the full-range Q/DQ model (model.int8.qdq.onnx). "
                          f"Re-quantize with: voxedge calibrate {bundle.path} --calibration SET")
    if source == "int8":
        raise EngineError("the bundle has no INT8 model; convert with --calibration SET --eval SET, or build "
                          "--precision fp16")
    raise EngineError("the bundle has no FP32 model; convert the model again")


def _version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", str(text))
    if not match:
        raise EngineError(f"cannot read the TensorRT version {text!r}; reinstall TensorRT")
    return int(match[1]), int(match[2])


def typing_mode(trt) -> str:
    """"strong" or "weak": how this TensorRT types networks.

    Rule: strong where the weak-typing precision flags (``BuilderFlag.FP16``/``INT8``) are gone (11) or
    deprecated (10.12 and later, with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``); weak before
    that (JetPack 6's 10.3 has STRONGLY_TYPED too, but there weak typing with precision flags is the
    supported way to mix precisions in one network).
    """
    has_weak_flags = all(hasattr(trt.BuilderFlag, f) for f in WEAK_TYPING_FLAGS)
    has_strong_flag = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if not has_weak_flags:
        return "strong"
    if has_strong_flag and _version(trt.__version__) >= STRONG_TYPING_SINCE:
        return "strong"
    return "weak"


def network_flags(trt, typing: str) -> int:
    """The ``create_network`` flags: STRONGLY_TYPED under strong typing (ignored, and harmless, on 11)."""
    if typing == "strong" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # TensorRT 10: explicit batch is the only mode; 11 types strongly without the flag


def device_key(bundle: Bundle, precision: str, batch_profile=(1, DEFAULT_OPT_BATCH, DEFAULT_MAX_BATCH),
               flags: tuple[str, ...] = (), device: int = 0, dla_core: int | None = None) -> EngineKey:
    """The key an engine needs on CUDA device ``device`` (imports tensorrt and pycuda).

    ``flags`` are recorded, not matched: they follow from the precision and typing.
    """
    trt = _import_tensorrt()
    typing = typing_mode(trt)
    info = device_info(device)
    model = engine_model(bundle, precision, typing)
    return EngineKey(sha256_file(bundle.path / model.path), trt.__version__, info.compute_capability, precision,
                     tuple(batch_profile), tuple(sorted(flags)), typing, info.name, info.sm_count,
                     info.total_memory_gib, dla_core)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError("TensorRT is not installed here. Engines are built on the robot: JetPack 6 ships "
                          "TensorRT 10.3 (use the voxedge Jetson image, or pip install 'voxedge[trt]' there)") from exc
    return trt


def _import_cuda():
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineError("pycuda is not installed; install 'voxedge[trt]' on the robot") from exc
    return cuda


def device_info(device: int = 0) -> DeviceInfo:
    """Name, compute capability, multiprocessor count and memory of CUDA device ``device``."""
    cuda = _import_cuda()
    cuda.init()
    count = cuda.Device.count()
    if not 0 <= device < count:
        raise EngineError(f"there is no CUDA device {device} here ({count} found); pass --device 0"
                          + (f" to {count - 1}" if count > 1 else ""))
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return DeviceInfo(device, str(dev.name()), f"{major}.{minor}",
                      int(dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)),
                      round(dev.total_memory() / _GIB))


@contextmanager
def _cuda_context(device: int) -> Iterator[None]:
    """Make ``device``'s primary context current, so TensorRT builds and runs on that GPU."""
    cuda = _import_cuda()
    ctx = cuda.Device(device).retain_primary_context()
    ctx.push()
    try:
        yield
    finally:
        ctx.pop()
        ctx.detach()


def kept_float_prefixes(bundle: Bundle) -> tuple[str, ...]:
    """The node-name prefixes the bundle keeps in FP32, from what conversion recorded.

    Sources, merged: ``provenance.keep_float_prefixes`` (where a converter records it), the INT8
    settings (``provenance.calibration.settings.keep_float_prefixes``) and the FP16 model's kept nodes
    (``report.json``: ``fp16.kept_fp32``). An FP32-only bundle records none.
    """
    provenance = bundle.manifest.provenance or {}
    found = list(provenance.get("keep_float_prefixes") or ())
    settings = (provenance.get("calibration") or {}).get("settings") or {}
    found += settings.get("keep_float_prefixes") or ()
    report = bundle.manifest.reports.get("json")
    if report and (bundle.path / report).is_file():
        try:
            data = json.loads((bundle.path / report).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = {}
        if isinstance(data, dict):
            found += (data.get("fp16") or {}).get("kept_fp32") or ()
    unique = sorted({p for p in found if isinstance(p, str) and p})
    # A node name under a recorded prefix adds nothing: keep the shortest prefixes only.
    return tuple(p for p in unique if not any(p != q and p.startswith(q) for q in unique))


def pin_kept_float(trt, network, prefixes: tuple[str, ...]) -> list[str]:
    """Pin every layer whose name starts with one of ``prefixes`` to FP32 (weak typing only); returns their names.

    The ONNX parser names layers after their ONNX nodes (with a suffix where one node makes several).
    Quantize/dequantize layers are skipped: a Q/DQ model names the quantizer of a kept tensor after it
    (``/audio_encoder/Sub_output_0_QuantizeLinear``), and its output is int8 by definition. Outputs that
    are not floating point (shapes, indices) keep their type.
    """
    if not prefixes:
        return []
    skipped = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    floats = (trt.float32, trt.float16)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not layer.name.startswith(prefixes) or layer.type in skipped:
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outputs:
            continue
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def fast_fp16(compute_capability: str) -> bool:
    """Whether a GPU of this compute capability has fast FP16 (all but 6.1 from 5.3 on; every Jetson since TX1).

    TensorRT 10.5 deprecated ``Builder.platform_has_fast_fp16`` ("query data type support from CUDA
    directly") and 11 removed it; strong typing asks this instead.
    """
    major, minor = (int(x) for x in compute_capability.split(".")[:2])
    return (major, minor) >= (5, 3) and (major, minor) != (6, 1)


def _builder_flag(trt, name: str):
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise EngineError(f"this TensorRT ({trt.__version__}) has no BuilderFlag.{name}, so it cannot build the "
                          "precision asked for under weak typing; use JetPack 6's TensorRT 10.3 or TensorRT 10.12+ "
                          "(strong typing), or build --precision fp32")
    return flag


def precision_flags(trt, builder, precision: str, typing: str, compute_capability: str) -> tuple[str, ...]:
    """The builder flags that make ``precision`` happen, or an EngineError when this device cannot honour it."""
    if precision == "fp32":
        return ()
    if typing == "strong":
        # The ONNX file's types decide; precision flags do not exist (11) or are deprecated (10.12+).
        if precision == "fp16" and not fast_fp16(compute_capability):
            raise EngineError(f"this GPU (compute capability {compute_capability}) has no fast FP16; build "
                              "--precision fp32 or int8")
        return ()
    has_fast_fp16 = bool(builder.platform_has_fast_fp16)
    if precision == "fp16" and not has_fast_fp16:
        raise EngineError("TensorRT reports no fast FP16 on this GPU (Builder.platform_has_fast_fp16 is False); "
                          "build --precision fp32 or int8")
    # INT8: Q/DQ layers need the INT8 flag; FP16 lets the layers between them leave FP32 where that is fast.
    wanted = ("FP16",) if precision == "fp16" else ("INT8", "FP16") if has_fast_fp16 else ("INT8",)
    for name in wanted:
        _builder_flag(trt, name)
    return wanted


def use_dla(trt, builder, config, dla_core: int, precision: str) -> tuple[str, ...]:
    """Put the network on DLA core ``dla_core`` with GPU fallback; returns the flags set."""
    cores = int(builder.num_DLA_cores)
    if cores == 0:
        raise EngineError(f"--dla-core {dla_core}: this device has no DLA (Orin Nano has none; Orin NX and "
                          "AGX Orin do); build without --dla-core")
    if not 0 <= dla_core < cores:
        raise EngineError(f"--dla-core {dla_core}: this device has DLA cores 0 to {cores - 1}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run stay on the GPU
    return ("GPU_FALLBACK",)


def batch_profile(network, opt_batch: int, max_batch: int) -> tuple[dict[str, tuple], tuple[int, int, int]]:
    """(min/opt/max shapes for each input whose batch is dynamic, the engine's batch profile).

    Inputs with a fixed batch get no profile entry; ``max_batch`` must then equal that batch.
    """
    shapes: dict[str, tuple] = {}
    fixed: dict[str, int] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if not dims:
            continue  # a scalar has no batch
        if dims[0] != -1:
            fixed[tensor.name] = dims[0]
        elif -1 in dims[1:]:
            raise EngineError(f"input {tensor.name!r} has dynamic sizes besides the batch ({list(dims)}); "
                              "voxedge builds batch profiles only: export the model with those sizes fixed")
        else:
            shapes[tensor.name] = tuple((b, *dims[1:]) for b in (1, opt_batch, max_batch))
    batches = sorted(set(fixed.values()))
    if len(batches) > 1:
        raise EngineError(f"the model's inputs have different fixed batch sizes ({fixed}); export it again")
    if batches:
        if max_batch != batches[0]:
            raise EngineError(f"input(s) {sorted(fixed)} have a fixed batch of {batches[0]}, so the engine takes "
                              f"exactly that; build with --max-batch {batches[0]} --opt-batch "
                              f"{min(opt_batch, batches[0])}")
        if not shapes:
            return shapes, (batches[0],) * 3
    return shapes, (1, opt_batch, max_batch)


def timing_cache_name(trt_version: str, info: DeviceInfo) -> str:
    """Where a device's timing cache lives in the bundle: per TensorRT version and GPU."""
    return f"{ENGINE_DIR}/timing-trt{trt_version}-cc{info.compute_capability}-{info.slug}.cache"


def _create_cache(config, blob: bytes, log):
    try:
        return config.create_timing_cache(blob)
    except (RuntimeError, TypeError, ValueError) as exc:  # TensorRT raises on a damaged blob
        log(f"  the timing cache could not be read ({exc})")
        return None


def attach_timing_cache(config, path: Path, log=print):
    """Give ``config`` the timing cache at ``path``, or an empty one if that is missing, damaged, or from another
    device or TensorRT (never ``ignore_mismatch``: TensorRT warns such a cache may give wrong or slow engines).
    Returns the cache object, which the caller keeps alive until the build ends (TensorRT 10.3 does not), or
    None when TensorRT accepts no cache at all."""
    blob = path.read_bytes() if path.is_file() else b""
    if blob:
        cache = _create_cache(config, blob, log)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        log(f"  timing cache {path.name} was made by another device or TensorRT version, or is damaged: "
            "starting from an empty one (this build tunes from scratch)")
    cache = _create_cache(config, b"", log)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log("  TensorRT accepted no timing cache; building without one")
    return None


def timing_cache_bytes(config, log=print) -> bytes | None:
    """The timing cache to save after a build, or None (logged) when there is none to save."""
    cache = config.get_timing_cache()
    if cache is None:
        log("  no timing cache to save (TensorRT returned none); the engine is kept")
        return None
    try:
        data = cache.serialize()
    except (RuntimeError, TypeError, ValueError) as exc:
        log(f"  the timing cache could not be saved ({exc}); the engine is kept")
        return None
    return bytes(data) if data is not None else None


@dataclass(frozen=True)
class GoldenRow:
    """One output of the golden check."""

    name: str
    max_abs: float
    cosine: float
    limit: float
    min_cosine: float
    problem: str = ""  # why it fails regardless of the numbers (missing, shape, NaN)

    @property
    def passed(self) -> bool:
        return not self.problem and self.max_abs <= self.limit and self.cosine >= self.min_cosine


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def compare_golden(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], tolerance: Tolerance
                   ) -> list[GoldenRow]:
    """Each golden output against the engine's: max abs difference, cosine, and the limits they must meet."""
    rows = []
    for name, want in expected.items():
        limit = tolerance.limit(want)
        have = got.get(name)
        nan = float("nan")
        if have is None:
            rows.append(GoldenRow(name, nan, nan, limit, tolerance.min_cosine, "the engine has no such output"))
        elif have.shape != want.shape:
            rows.append(GoldenRow(name, nan, nan, limit, tolerance.min_cosine,
                                  f"shape {list(have.shape)}, golden {list(want.shape)}"))
        elif not np.isfinite(have).all():
            bad = int((~np.isfinite(have)).sum())
            rows.append(GoldenRow(name, nan, nan, limit, tolerance.min_cosine, f"{bad} values are NaN or inf"))
        else:
            diff = float(np.abs(have.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
            rows.append(GoldenRow(name, diff, _cosine(have, want), limit, tolerance.min_cosine))
    return rows


def golden_table(rows: list[GoldenRow]) -> str:
    """The golden check as a table, one output a line (as ``polygraphy run --trt --onnxrt`` reports)."""
    lines = [f"  {'output':<18}{'max abs':>12}{'cosine':>12}   {'limit (max abs / cosine)':<26}result"]
    for r in rows:
        verdict = "ok" if r.passed else f"FAIL{': ' + r.problem if r.problem else ''}"
        lines.append(f"  {r.name:<18}{r.max_abs:>12.3g}{r.cosine:>12.6f}   "
                     f"{f'{r.limit:.3g} / {r.min_cosine:g}':<26}{verdict}")
    return "\n".join(lines)


def load_golden(bundle: Bundle) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The bundle's golden inputs and (PyTorch FP32) outputs by tensor name."""
    name = bundle.manifest.reports.get("golden")
    if not name or not (bundle.path / name).is_file():
        raise EngineError("the bundle has no golden inputs and outputs (reports.golden) to check an engine "
                          "against; convert the model again with this voxedge")
    with np.load(bundle.path / name) as saved:
        inputs = {k.removeprefix("input."): saved[k] for k in saved.files if k.startswith("input.")}
        outputs = {k.removeprefix("output."): saved[k] for k in saved.files if k.startswith("output.")}
    missing = [s.name for s in bundle.manifest.inputs if s.name not in inputs]
    if missing or not outputs:
        raise EngineError(f"the bundle's golden file {name} lacks inputs {missing} or outputs; convert the model "
                          "again")
    return {s.name: inputs[s.name] for s in bundle.manifest.inputs}, outputs


def run_golden(run_plan: RunPlan, plan: bytes, inputs: dict[str, np.ndarray], chunk: int, fixed: bool
               ) -> dict[str, np.ndarray]:
    """Run ``plan`` on the golden inputs ``chunk`` samples at a time (padded up to ``chunk`` when the engine's
    batch is ``fixed``); returns the outputs for all samples."""
    n = len(next(iter(inputs.values())))
    parts = []
    for start in range(0, n, chunk):
        feed = {k: v[start:start + chunk] for k, v in inputs.items()}
        real = len(next(iter(feed.values())))
        if fixed and real < chunk:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], chunk - real, axis=0)]) for k, v in feed.items()}
        parts.append({k: np.asarray(v)[:real] for k, v in run_plan(plan, feed).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build_engine(bundle_path: str | Path, precision: str = "fp16", max_batch: int = DEFAULT_MAX_BATCH,
                 opt_batch: int = DEFAULT_OPT_BATCH, workspace_mib: int = DEFAULT_WORKSPACE_MIB, log=print,
                 device: int = 0, dla_core: int | None = None, run_plan: RunPlan | None = None) -> Path:
    """Build a TensorRT engine from a bundle's ONNX model, check it on the golden data, and register it in the
    manifest (atomically). Unverified on hardware from the development machines (see the module docstring).

    Under weak typing (TensorRT < 10.12) fp32 and fp16 build from ``model.fp32.onnx`` (fp16 with the FP16
    flag) and int8 from the Q/DQ model with INT8 (and FP16 where fast), the kept-float layers pinned to
    FP32; under strong typing each precision builds from its own ONNX file. ``run_plan(plan, feed)``
    runs a serialized engine (default: ``edge.runners.tensorrt.run_plan`` on ``device``).

    Raises:
        EngineError: bad batch sizes, a precision this TensorRT or GPU cannot honour, no DLA, a parse or
            build failure, or an engine that disagrees with the golden outputs; the bundle is then unchanged.
    """
    check_batches(opt_batch, max_batch)
    if precision not in ENGINE_PRECISIONS:
        raise EngineError(f"engine precision {precision!r} is not one of {list(ENGINE_PRECISIONS)}")
    if dla_core is not None and precision == "fp32":
        raise EngineError("the DLA runs fp16 and int8 only; build --precision fp16 or int8, or without --dla-core")
    trt = _import_tensorrt()
    info = device_info(device)
    bundle = load_bundle(bundle_path)
    typing = typing_mode(trt)
    model = engine_model(bundle, precision, typing)
    golden_in, golden_out = load_golden(bundle)  # before minutes of building
    if run_plan is None:
        from edge.runners.tensorrt import run_plan as run_on_gpu

        run_plan = functools.partial(run_on_gpu, device=device, dla_core=dla_core)
    onnx_path = bundle.path / model.path
    cache_rel = timing_cache_name(trt.__version__, info)
    with _cuda_context(device):
        built = _build(trt, bundle, onnx_path, precision, typing, info, opt_batch, max_batch, workspace_mib,
                       dla_core, bundle.path / cache_rel, log)
        plan_bytes, cache_bytes, profile, flags, build_s = built
        fixed = profile[0] == profile[2] and profile[0] != 1
        try:
            got = run_golden(run_plan, plan_bytes, golden_in, profile[2], fixed)
        except Exception as exc:  # noqa: BLE001 - any failure to run means the engine is not installed
            raise EngineError(f"the built engine could not run the golden inputs ({exc}); it was not installed "
                              "and the bundle is unchanged") from exc
    key = EngineKey(sha256_file(onnx_path), trt.__version__, info.compute_capability, precision, profile,
                    tuple(sorted(flags)), typing, info.name, info.sm_count, info.total_memory_gib, dla_core)
    tolerance = GOLDEN_TOLERANCE[precision]
    rows = compare_golden(got, golden_out, tolerance)
    table = golden_table(rows)
    log(f"golden check ({len(next(iter(golden_in.values())))} samples of {bundle.manifest.reports['golden']}; "
        f"{precision}: {tolerance.describe()}):\n{table}")
    if not all(r.passed for r in rows):
        raise EngineError(f"the {precision} engine disagrees with the bundle's golden outputs, so it was not "
                          f"installed and the bundle is unchanged:\n{table}\n{_what_to_do(precision)}")

    def populate(tmp: Path) -> Manifest:
        for f in bundle.manifest.files:
            (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.path / f.path, tmp / f.path)
        (tmp / key.plan_name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / key.plan_name).write_bytes(plan_bytes)
        if cache_bytes is not None:  # the plan is installed whether or not the cache could be saved
            (tmp / cache_rel).write_bytes(cache_bytes)
        entries = [e for e in bundle.manifest.engines if e["path"] != key.plan_name]
        entries.append({"path": key.plan_name, "key": asdict(key), "build_s": build_s})
        return Manifest(**{**vars(bundle.manifest), "engines": tuple(entries)})

    write_bundle(bundle.path, populate)
    log(f"built {key.plan_name} in {build_s:.0f} s")
    return bundle.path / key.plan_name


def _what_to_do(precision: str) -> str:
    if precision == "fp32":
        return ("What to do: look for TensorRT warnings above about layers it runs differently, and report the "
                "model with this table: in FP32 TensorRT and PyTorch should agree.")
    then = ("keep more of the model in FP32 (quantization.keep_float_prefixes in the conversion config) and "
            "convert again" if precision == "fp16" else
            "re-quantize with a more representative calibration set (voxedge calibrate), or keep more of the "
            "model in floating point (quantization.keep_float_prefixes)")
    return f"What to do: build --precision fp32 to confirm the engine path works here, then {then}."


def _build(trt, bundle: Bundle, onnx_path: Path, precision: str, typing: str, info: DeviceInfo, opt_batch: int,
           max_batch: int, workspace_mib: int, dla_core: int | None, cache_path: Path, log):
    """Parse, configure and build; returns (plan, timing cache or None, batch profile, flags, seconds)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, typing))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    # Layer names, precisions and formats stay in the plan, so the engine inspector (scripts/gpu_check.py)
    # can show which precision each layer of the kept-float front end really runs in.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    flags = list(precision_flags(trt, builder, precision, typing, info.compute_capability))
    for name in flags:
        config.set_flag(_builder_flag(trt, name))
    if precision == "fp32":
        # TF32 is on by default and rounds FP32 products to 10-bit mantissas: an "fp32" engine would not be.
        config.clear_flag(trt.BuilderFlag.TF32)
        flags.append(NO_TF32)
    if typing == "weak" and precision != "fp32":
        flags += _pin(trt, bundle, network, config, log)
    if dla_core is not None:
        flags += use_dla(trt, builder, config, dla_core, precision)
    shapes, profile = batch_profile(network, opt_batch, max_batch)
    if shapes:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            opt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    cache = attach_timing_cache(config, cache_path, log)  # held here: it must outlive the build
    monitor = _progress_monitor(trt, log)
    config.progress_monitor = monitor
    where = f"DLA core {dla_core}" if dla_core is not None else f"{info.name} (GPU {info.index})"
    log(f"building {precision} engine from {onnx_path.name} ({typing} typing, batch {profile[0]}..{profile[2]}, "
        f"workspace {workspace_mib} MiB, on {where}); this takes minutes on a Jetson")
    t0 = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError("TensorRT failed to build the engine (see the messages above); the bundle is unchanged")
    plan_bytes = bytes(plan)
    build_s = time.monotonic() - t0
    cache_bytes = timing_cache_bytes(config, log) if cache is not None else None
    return plan_bytes, cache_bytes, profile, tuple(flags), build_s


def _pin(trt, bundle: Bundle, network, config, log) -> list[str]:
    """Weak typing: pin the bundle's kept-float layers to FP32 and make the builder obey; returns the flags set.

    OBEY, not PREFER: PREFER lets TensorRT fall back to FP16 with only a warning where it finds no FP32
    kernel, which is exactly the silent overflow this exists to prevent; OBEY fails the build instead.
    """
    prefixes = kept_float_prefixes(bundle)
    if not prefixes:
        log("  warning: the bundle records no layers to keep in FP32 (convert with --fp16 or --calibration "
            "records them); TensorRT chooses every layer's precision, and the golden check decides")
        return []
    pinned = pin_kept_float(trt, network, prefixes)
    if not pinned:
        log(f"  warning: no layer of the network starts with the kept-float prefixes {list(prefixes)}; "
            "nothing is pinned to FP32, and the golden check decides")
        return []
    config.set_flag(_builder_flag(trt, PIN_FLAG))
    log(f"  {len(pinned)} layers pinned to FP32 (names starting with {', '.join(prefixes)})")
    return [PIN_FLAG]


def _progress_monitor(trt, log):
    class _Monitor(trt.IProgressMonitor):
        """Logs TensorRT's build phases; TensorRT calls it from its own threads."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        # TensorRT's order (IProgressMonitor::phaseStart): the phase, its parent (None at the top), its steps.
        def phase_start(self, phase_name, parent_phase, num_steps):
            indent = "    " if parent_phase else "  "
            inside = f" (in {parent_phase})" if parent_phase else ""
            log(f"{indent}{phase_name}: {num_steps} steps{inside}")

        def step_complete(self, phase_name, step):
            return True  # keep building; False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return _Monitor()
