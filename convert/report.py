"""The bundle's human report: one PNG with the figures a person checks before deploying.

Panels: per-output error of ONNX Runtime against PyTorch on the golden inputs
(FP32, and INT8 when present), FP32 and INT8 confusion matrices on the gate's
evaluation set, and latency per backend on this machine at batch 1.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

REPORT_PNG = "report.png"
LATENCY_RUNS = 20


def _session(path):
    from edge.runners.onnxruntime import make_session

    return make_session(path)


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


def write_report(bundle_dir: Path, models: dict[str, Path], golden: dict[str, np.ndarray],
                 reference: dict[str, np.ndarray], labels: tuple[str, ...], gate: dict | None) -> dict:
    """Draw ``report.png`` into ``bundle_dir``; returns the latency figures it measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch1 = {k: v[:1] for k, v in golden.items()}
    latency = {p: latency_ms(path, batch1) for p, path in models.items()}
    errors = {}
    for precision, path in models.items():
        s = _session(path)
        out = dict(zip([o.name for o in s.get_outputs()], s.run(None, golden)))
        errors[precision] = {n: np.abs(out[n].astype(np.float64) - ref).ravel() for n, ref in reference.items()}

    matrices = [("FP32", gate["reference"]["confusion"]), ("INT8", gate["candidate"]["confusion"])] if gate else []
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
