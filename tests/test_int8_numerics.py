"""INT8 that means the same on every CPU (edge.int8_numerics, calibration.int8's two INT8 models).

The saturation these tests guard against is in ONNX Runtime's x86 int8 kernels
without VNNI (AVX2, AVX-512): pairs of uint8 x int8 products summed in a
saturating int16. Where ``qemu-x86_64`` is installed (Debian's qemu-user), one
test also runs the models under an emulated Haswell (AVX2: saturates) and an
emulated Nehalem (SSE4.2: ONNX Runtime's exact kernels), whatever this machine's
own CPU is, so both kinds of CPU are checked on one machine.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from calibration.probe_model import build_probe
from calibration.quantize import quantize_int8
from edge.bundle import Heads, Manifest, ModelFile, Preprocessing, TensorSpec
from edge.int8_numerics import (
    ONNXRUNTIME_CPU,
    PROBE_MODEL,
    CpuInt8,
    choose_model,
    cpu_int8,
    isa_label,
    probe_saturation,
)

QEMU = shutil.which("qemu-x86_64")
# (qemu CPU model, whether ONNX Runtime's int8 kernels saturate on it)
EMULATED_CPUS = (("Haswell", True), ("Nehalem", False))


def test_the_shipped_probe_is_what_the_probe_builder_writes():
    assert PROBE_MODEL.read_bytes() == build_probe(), "run: python -m calibration.probe_model"


def test_the_measured_int8_arithmetic_is_what_the_instruction_sets_predict():
    cpu = cpu_int8()
    assert cpu.saturates is not None and cpu.saturates == cpu.expected_saturation, cpu
    assert cpu.isa in cpu.describe() and ("saturating" in cpu.describe()) == cpu.saturates


@pytest.mark.parametrize(("features", "isa", "saturates"), [
    (("avx2", "avx512bw", "avx512_vnni", "sse41"), "AVX-512 VNNI", False),
    (("avx2", "avx512bw", "sse41"), "AVX-512", True),
    (("avx2", "avx_vnni", "sse41"), "AVX-VNNI", False),
    (("avx2", "sse41"), "AVX2", True),
    (("sse41",), "SSE4.1", False),
    (("asimd", "asimddp"), "NEON dotprod", False),
    (("asimd",), "NEON", False),
])
def test_each_instruction_set_names_its_int8_arithmetic(features, isa, saturates):
    assert isa_label("x86_64", features) == (isa, not saturates)


def _manifest(files: list[ModelFile], provenance: dict | None = None) -> Manifest:
    return Manifest(inputs=(TensorSpec("x", "float32", (-1, 4)),), outputs=(TensorSpec("y", "float32", (-1, 2)),),
                    preprocessing=Preprocessing(160, 120), heads=Heads("y", ("a", "b")), files=tuple(files),
                    provenance=provenance or {})


FP32 = ModelFile("model.fp32.onnx", "0", "fp32")
INT8 = ModelFile("model.int8.qdq.onnx", "1", "int8")
INT8_CPU = ModelFile("model.int8.cpu.qdq.onnx", "2", "int8", ONNXRUNTIME_CPU)
SATURATING = CpuInt8("x86_64", "test CPU", "AVX2", ("avx2",), saturates=True, expected_saturation=True)
EXACT = CpuInt8("x86_64", "test CPU", "AVX-512 VNNI", ("avx512_vnni",), saturates=False, expected_saturation=False)


def test_the_cpu_runs_the_7_bit_model_and_tensorrt_the_full_range_one():
    manifest = _manifest([FP32, INT8, INT8_CPU], {"calibration": {"models": {ONNXRUNTIME_CPU: {
        "gate_cpu": {"model": "AMD EPYC", "isa": "AVX2", "saturates": True}}}}})
    for cpu in (SATURATING, EXACT):
        choice = choose_model(manifest, "int8", ONNXRUNTIME_CPU, cpu)
        assert (choice.precision, choice.path) == ("int8", INT8_CPU.path)
        assert "7-bit" in choice.note and "AMD EPYC" in choice.note
    assert choose_model(manifest, "int8", None, SATURATING).path == INT8.path  # TensorRT, GPU providers
    assert manifest.file("int8").path == INT8.path  # engines are built from the full-range model
    assert choose_model(manifest, "fp32", ONNXRUNTIME_CPU, SATURATING).path == FP32.path


def test_a_bundle_with_only_a_full_range_int8_model_runs_fp32_where_the_cpu_saturates():
    manifest = _manifest([FP32, INT8])  # made before the CPU model existed
    exact = choose_model(manifest, "int8", ONNXRUNTIME_CPU, EXACT)
    assert (exact.precision, exact.path) == ("int8", INT8.path)
    fallback = choose_model(manifest, "int8", ONNXRUNTIME_CPU, SATURATING)
    assert (fallback.precision, fallback.path) == ("fp32", FP32.path)
    assert "saturating int16" in fallback.note and "Convert (or calibrate) the bundle again" in fallback.note


class _Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(16, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))).mean((2, 3))


def _outputs_script(models: dict[str, Path], x_path: Path, out: Path) -> str:
    return textwrap.dedent(f"""
        import numpy as np
        from edge.int8_numerics import probe_saturation
        from edge.runners.onnxruntime import make_session
        x = np.load({str(x_path)!r})
        out = {{"saturates": np.array(probe_saturation())}}
        for name, path in {({k: str(v) for k, v in models.items()})!r}.items():
            out[name] = make_session(path).run(None, {{"x": x}})[0]
        np.savez({str(out)!r}, **out)
    """)


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (Debian's qemu-user) on an x86-64 machine")
def test_the_cpu_model_decides_the_same_on_cpus_that_saturate_and_cpus_that_do_not(tmp_path):
    torch.manual_seed(0)
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(_Convs().eval(), (torch.randn(2, 16, 8, 8),), str(fp32), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    rng = np.random.default_rng(0)
    # Large, one-signed activations: the products that overflow int16 pair sums.
    batches = [{"x": np.abs(rng.standard_normal((8, 16, 8, 8))).astype(np.float32) * 4} for _ in range(4)]
    models = {"full": tmp_path / "full.onnx", "cpu": tmp_path / "cpu.onnx"}
    quantize_int8(fp32, models["full"], batches, keep_float_prefixes=(), keep_output_layers_float=False)
    quantize_int8(fp32, models["cpu"], batches, keep_float_prefixes=(), keep_output_layers_float=False,
                  reduced_range_weights=True)
    x = tmp_path / "x.npy"
    np.save(x, batches[0]["x"])
    runs = {}
    for cpu, _ in (("native", None), *EMULATED_CPUS):
        out = tmp_path / f"{cpu}.npz"
        command = [sys.executable, "-c", _outputs_script(models, x, out)]
        if cpu != "native":
            command = [QEMU, "-cpu", cpu, *command]
        r = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
        assert r.returncode == 0, (cpu, r.stderr[-3000:])
        with np.load(out) as saved:
            runs[cpu] = {k: saved[k] for k in saved.files}
    for cpu, saturates in EMULATED_CPUS:
        assert bool(runs[cpu]["saturates"]) == saturates, cpu
        # The 7-bit model: the same int32 sums, hence the same outputs, on every CPU.
        np.testing.assert_array_equal(runs[cpu]["cpu"], runs["native"]["cpu"])
    assert bool(runs["native"]["saturates"]) == cpu_int8().saturates == probe_saturation()
    # The full-range model is what goes wrong where sums saturate.
    exact, saturated = runs["Nehalem"]["full"], runs["Haswell"]["full"]
    assert np.abs(saturated - exact).max() > 0.05 * np.abs(exact).max()
    assert np.abs(runs["Nehalem"]["cpu"] - exact).max() < 0.05 * np.abs(exact).max()
    assert onnx.load(str(models["cpu"])).graph.node  # the files were real models
