"""What INT8 means on this CPU, and which model file of a bundle runs here.

ONNX Runtime fuses a Q/DQ model's DequantizeLinear -> Conv -> QuantizeLinear
into int8 kernels (QLinearConv, QLinearMatMul). On x86 those multiply uint8
activations (int8 shifted by 128) by int8 weights. With AVX2 or AVX-512 but no
VNNI, the kernel adds each pair of products in a *saturating int16*
(``vpmaddubsw``): 255 x 127 x 2 = 64770 does not fit, so large activations
against large weights give wrong sums. VNNI (``vpdpbusd``), AMX and ARM NEON
accumulate in int32 and are exact. So one INT8 model can decide differently on
two CPUs; ONNX Runtime's quantization guide names the cure: reduced-range (7-bit)
weights, with which a pair sums to at most 2 x 255 x 64 = 32640.

A bundle therefore carries two INT8 models (``calibration.int8``):
- ``model.int8.qdq.onnx``: full-range int8 weights, for TensorRT (and any
  runtime that accumulates in int32); gated with the Q/DQ arithmetic emulated in
  float, which is what TensorRT computes and is the same on every CPU;
- ``model.int8.cpu.qdq.onnx`` (``runtime: onnxruntime-cpu``): 7-bit weights, gated
  with ONNX Runtime's own int8 CPU kernels; no CPU can saturate its sums, so the
  gate holds on every CPU.

This module tells what this CPU does (the instruction sets, and a measured answer
from a tiny probe model, ``int8_probe.onnx``, built by ``calibration.probe_model``)
and picks the file a runner should load (``choose_model``). Torch- and onnx-free.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

ONNXRUNTIME_CPU = "onnxruntime-cpu"  # ModelFile.runtime of the 7-bit CPU model
# The largest |int8 weight| whose u8 x s8 pair sums fit int16: 2 x 255 x 64 = 32640 <= 32767.
SATURATION_FREE_WEIGHT_MAX_ABS = 64
PROBE_MODEL = Path(__file__).with_name("int8_probe.onnx")
PROBE_INPUT = "x"
PROBE_CHANNELS = 64  # input channels of the probe's 1x1 convolution: 32 pairs of products per output
PROBE_SHAPE = (1, PROBE_CHANNELS, 4, 4)
PROBE_EXPECTED = float(PROBE_CHANNELS)  # ones against weights of 1.0, summed exactly

# Instruction sets that decide how int8 products are summed, best first: (label, features, exact sums).
_ISA_ORDER = (
    ("AMX-INT8", ("amx_int8",), True),
    ("AVX-512 VNNI", ("avx512_vnni",), True),
    ("AVX-VNNI", ("avx_vnni",), True),
    ("AVX-512", ("avx512bw",), False),
    ("AVX2", ("avx2",), False),
    ("NEON dotprod", ("asimddp",), True),
    ("NEON", ("asimd",), True),
    ("SSE4.1", ("sse41",), True),
)
# numpy's CPUID-based feature names (they follow what an emulator such as qemu shows the program,
# where /proc/cpuinfo shows the host's) -> ours.
_NUMPY_FEATURES = {"AVX2": "avx2", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni", "ASIMD": "asimd",
                   "ASIMDDP": "asimddp", "SSE41": "sse41"}
# /proc/cpuinfo flag names -> ours, for what numpy does not report.
_CPUINFO_FLAGS = {"avx_vnni": "avx_vnni", "amx_int8": "amx_int8", "avx2": "avx2", "avx512bw": "avx512bw",
                  "avx512_vnni": "avx512_vnni", "asimd": "asimd", "asimddp": "asimddp", "sse4_1": "sse41"}


@dataclass(frozen=True)
class CpuInt8:
    """This CPU's int8 arithmetic: name, instruction sets, and whether full-range int8 sums saturate."""

    arch: str
    model: str
    isa: str  # the best int8 instruction set, e.g. "AVX2" or "AVX-512 VNNI"
    features: tuple[str, ...]
    saturates: bool | None  # measured with the probe model; None: ONNX Runtime is not installed
    expected_saturation: bool  # what the instruction sets alone predict

    def describe(self) -> str:
        if self.saturates is None:
            how = "int8 summation not measured (no onnxruntime)"
        elif self.saturates:
            how = "sums pairs of int8 products in a saturating int16 (measured): full-range int8 weights go wrong"
        else:
            how = "sums int8 products exactly in int32 (measured)"
        vnni = "" if "VNNI" in self.isa or "AMX" in self.isa or self.arch != "x86_64" else ", no VNNI"
        return f"{self.model} ({self.arch}): {self.isa}{vnni}; {how}"

    def to_dict(self) -> dict:
        return asdict(self)


def _read_cpuinfo() -> tuple[str, set[str]]:
    name, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, flags


def _numpy_cpu_features() -> dict[str, bool]:
    """numpy's runtime-dispatch table (read with CPUID); a private attribute, hence the fallbacks."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            return dict(__import__(module, fromlist=["__cpu_features__"]).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return {}


def _machine_model(cpuinfo_name: str) -> str:
    if cpuinfo_name:
        return cpuinfo_name
    try:  # Jetson and other ARM boards name the board, not the CPU
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"


def detect_features() -> tuple[str, str, tuple[str, ...]]:
    """(architecture, CPU model, int8-relevant features)."""
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    name, flags = _read_cpuinfo()
    numpy_flags = _numpy_cpu_features()
    found = {ours for theirs, ours in _NUMPY_FEATURES.items() if numpy_flags.get(theirs)}
    if not numpy_flags:
        found |= {ours for theirs, ours in _CPUINFO_FLAGS.items() if theirs in flags}
    if "avx2" in found:  # numpy reports neither; AVX-VNNI and AMX come with AVX2
        found |= {ours for theirs, ours in _CPUINFO_FLAGS.items() if theirs in ("avx_vnni", "amx_int8") and theirs in flags}
    if arch == "aarch64":
        found.add("asimd")  # Advanced SIMD is part of ARMv8-A
    return arch, _machine_model(name), tuple(sorted(found))


def isa_label(arch: str, features: tuple[str, ...]) -> tuple[str, bool]:
    """(the best int8 instruction set, whether it sums exactly)."""
    for label, needs, exact in _ISA_ORDER:
        if all(f in features for f in needs):
            return label, exact
    return (arch or "unknown"), True


def probe_saturation() -> bool | None:
    """Run ``int8_probe.onnx`` with ONNX Runtime's int8 kernels and with its Q/DQ emulated in float.

    The probe is a 1x1 convolution of ones (int8 127, uint8 255 after ONNX Runtime's shift) against
    weights of int8 127: exact sums give ``PROBE_EXPECTED``; saturating int16 pair sums give about 0.5.
    Returns None when onnxruntime is not installed.
    """
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    model = PROBE_MODEL.read_bytes()
    x = np.ones(PROBE_SHAPE, np.float32)
    fused = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {PROBE_INPUT: x})[0]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    emulated = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {PROBE_INPUT: x})[0]
    if not np.allclose(emulated, PROBE_EXPECTED):
        raise RuntimeError(f"the int8 probe model computes {emulated.ravel()[:4]} in float, not {PROBE_EXPECTED}; "
                           f"{PROBE_MODEL} is damaged: reinstall voxedge")
    return not np.allclose(fused, emulated, rtol=0.02)


@functools.lru_cache(maxsize=1)
def cpu_int8() -> CpuInt8:
    """This machine's int8 arithmetic (measured once per process)."""
    arch, model, features = detect_features()
    isa, exact = isa_label(arch, features)
    return CpuInt8(arch, model, isa, features, probe_saturation(), expected_saturation=not exact)


@dataclass(frozen=True)
class ModelChoice:
    """The model file a runner loads, and why."""

    precision: str  # what runs: the requested precision, or fp32 where int8 would not mean what its gate measured
    path: str  # relative to the bundle
    note: str  # one line for the operator


def cpu_int8_summary(manifest) -> dict:
    """What ``calibration.int8`` recorded about the CPU model (empty for bundles made before it)."""
    calibration = (manifest.provenance or {}).get("calibration") or {}
    return (calibration.get("models") or {}).get(ONNXRUNTIME_CPU) or {}


def choose_model(manifest, precision: str, runtime: str | None, cpu: CpuInt8 | None = None) -> ModelChoice:
    """The file of ``manifest`` to load at ``precision`` for ``runtime`` (``ONNXRUNTIME_CPU`` for ONNX Runtime
    on the CPU, None for TensorRT and GPU providers, which accumulate int8 in int32).

    On the CPU, INT8 runs the 7-bit CPU model when the bundle has one (no CPU saturates it, so its gate holds
    here). A bundle with only a full-range INT8 model (made before the CPU model existed) runs it only on a
    CPU that sums exactly; on one that saturates, FP32 runs instead, and the note says so.
    """
    if precision != "int8" or runtime != ONNXRUNTIME_CPU:
        f = manifest.file(precision, runtime)
        return ModelChoice(precision, f.path, f"{precision}: {f.path}")
    f = manifest.file("int8", ONNXRUNTIME_CPU)
    if f.runtime == ONNXRUNTIME_CPU:
        gate = cpu_int8_summary(manifest).get("gate_cpu") or {}
        where = f"; gated on {gate['model']} ({gate['isa']})" if gate.get("model") else ""
        return ModelChoice("int8", f.path, f"int8: {f.path} (7-bit weights for ONNX Runtime's CPU kernels: "
                                           f"no int16 saturation on any CPU{where})")
    cpu = cpu or cpu_int8()
    if cpu.saturates is False:
        return ModelChoice("int8", f.path, f"int8: {f.path} (full-range weights; this CPU sums int8 products "
                                           "exactly, as the gate's arithmetic intends)")
    fp32 = manifest.file("fp32")
    return ModelChoice("fp32", fp32.path,
                       f"fp32: {fp32.path} instead of int8: this CPU ({cpu.isa}, no VNNI) sums int8 products in a "
                       f"saturating int16, and the bundle's only INT8 model ({f.path}) has full-range weights, "
                       "so it would not decide as its accuracy gate measured. Convert (or calibrate) the bundle "
                       "again with this voxedge to add a CPU INT8 model with 7-bit weights")
