"""The bundle's human report: one PNG with the figures a person checks before deploying.

Panels: per-output error of ONNX Runtime against PyTorch on the golden inputs
(FP32, FP16 and both INT8 models when present: the TensorRT one with its Q/DQ
arithmetic emulated in float, the CPU one on ONNX Runtime's int8 kernels), FP32
and INT8 confusion matrices on the gate's evaluation set, and ONNX Runtime CPU
latency per precision at batch 1 (INT8: the model the CPU runs).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

REPORT_PNG = "report.png"
LATENCY_RUNS = 20


def _session(path, emulate_qdq: bool = False):
    from edge.runners.onnxruntime import make_session

    return make_session(path, emulate_qdq=emulate_qdq)


def report_models(bundle_dir: Path, files) -> dict[str, tuple[Path, bool]]:
    """The bundle's model files by report label, each with whether its Q/DQ arithmetic is emulated:
    ``fp32``, ``fp16``, ``int8`` (the full-range model, as TensorRT computes it) and ``int8-cpu``."""
    from edge.int8_numerics import ONNXRUNTIME_CPU

    models = {}
    for f in files:
        if f.precision:
            cpu = f.runtime == ONNXRUNTIME_CPU
            label = "int8-cpu" if cpu else f.precision
            models[label] = (Path(bundle_dir) / f.path, f.precision == "int8" and not cpu)
    order = ("fp32", "fp16", "int8", "int8-cpu")
    return {k: models[k] for k in order if k in models}


def latency_ms(path, feed: dict[str, np.ndarray], runs: int = LATENCY_RUNS) -> float:
    """Median ONNX Runtime (CPU) latency of one call, after two warm-up calls."""
    s = _session(path)
    for _ in range(2):
        s.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def write_report(bundle_dir: Path, files, golden: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                 labels: tuple[str, ...], gates: dict[str, dict] | None) -> dict:
    """Draw ``report.png`` into ``bundle_dir`` for the model ``files`` (``edge.bundle.ModelFile``) in it;
    ``gates`` are the INT8 gates by target (``tensorrt``, ``onnxruntime-cpu``). Returns the latency figures
    it measured, by precision; INT8's is the model ONNX Runtime runs on the CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report_models(bundle_dir, files)
    batch1 = {k: v[:1] for k, v in golden.items()}
    on_cpu = {k: path for k, (path, _) in models.items() if k != "int8" or "int8-cpu" not in models}
    latency = {k.removesuffix("-cpu"): latency_ms(path, batch1) for k, path in on_cpu.items()}
    errors = {}
    for label, (path, emulate) in models.items():
        s = _session(path, emulate)
        out = dict(zip([o.name for o in s.get_outputs()], s.run(None, golden)))
        errors[label] = {n: np.abs(out[n].astype(np.float64) - ref).ravel() for n, ref in reference.items()}

    gates = {k: g for k, g in (gates or {}).items() if g}
    matrices = []
    for key, title in (("tensorrt", "INT8 (TensorRT arithmetic)"), ("onnxruntime-cpu", "INT8 CPU model")):
        if key in gates:
            if not matrices:
                matrices.append(("FP32", gates[key]["reference"]["confusion"]))
            matrices.append((title, gates[key]["candidate"]["confusion"]))
    fig, axes = plt.subplots(1, 2 + len(matrices), figsize=(6 * (2 + len(matrices)), 5))
    ax = axes[0]
    for precision, per_output in errors.items():
        for name, diff in per_output.items():
            ax.hist(np.log10(diff + 1e-12), bins=40, histtype="step", density=True, label=f"{precision} {name}")
    ax.set_xlabel("log10 |ONNX Runtime - PyTorch| on golden inputs")
    ax.set_ylabel("density (each output scaled to 1)")
    ax.set_title("output error per precision")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.bar(list(latency), list(latency.values()), color=["#4477aa", "#ee6677", "#228833"][: len(latency)])
    for i, v in enumerate(latency.values()):
        ax.text(i, v, f"{v:.2f} ms", ha="center", va="bottom")
    ax.set_ylabel("ms per call (median)")
    ax.set_title("ONNX Runtime CPU latency, batch 1")
    for ax, (title, m) in zip(axes[2:], matrices):
        m = np.asarray(m, np.float64)
        ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6)
        acc = np.trace(m) / max(m.sum(), 1)
        ax.set_title(f"{title} on the gate set: {100 * acc:.2f} %")
        ax.set_xlabel("decided")
        ax.set_ylabel("spoken")
    fig.tight_layout()
    fig.savefig(bundle_dir / REPORT_PNG, dpi=100)
    plt.close(fig)
    return {"latency_ms_batch1": latency}
