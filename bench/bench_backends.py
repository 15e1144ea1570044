"""Reference model latency per backend on this CPU, and the time of a full conversion.

Side by side in one run, batch 1 and 8: PyTorch eager FP32, ONNX Runtime FP32,
ONNX Runtime INT8 Q/DQ (the bundle's CPU model, ``model.int8.cpu.qdq.onnx``, as
``voxedge serve`` runs it on a CPU). Then a full ``voxedge convert`` with a 512-sample
calibration set and a 512-sample gate set (export, verify, calibrate and gate both
INT8 models). ``--rounds`` repeats the latency measurements to show their spread;
the output names the CPU and its int8 instruction set, on which INT8's speed depends.

    .venv/bin/python bench/bench_backends.py [--rounds 5] [--out bench/results/backends.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import median_s

from edge.contract.audio import WINDOW_SAMPLES


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * median_s(fn, repeats, warmup=3)


def main() -> None:
    import torch

    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from edge.runners.onnxruntime import make_session
    from reference_model.model import load_checkpoint
    from reference_model.sets import write_sim_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/backends.json")
    parser.add_argument("--repeats", type=int, default=30, help="calls per median")
    parser.add_argument("--rounds", type=int, default=3, help="medians per figure, to show their spread")
    args = parser.parse_args()
    from edge.int8_numerics import ONNXRUNTIME_CPU, cpu_int8

    cpu = cpu_int8().describe()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sim_set(tmp / "calib", split="val", n=512)
        write_sim_set(tmp / "eval", split="test", n=512)
        t0 = time.perf_counter()
        bundle = convert(DEFAULT_CHECKPOINT, tmp / "bundle", calibration=tmp / "calib", eval_set=tmp / "eval",
                         log=lambda *_: None)
        convert_s = time.perf_counter() - t0

        model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
        # The sessions our runners and the accuracy gate use (edge.runners.onnxruntime.make_session).
        sessions = {p: make_session(bundle.model_path(p, ONNXRUNTIME_CPU)) for p in ("fp32", "int8")}
        rows = []
        for batch, _ in ((b, k) for k in range(args.rounds) for b in (1, 8)):
            rng = np.random.default_rng(batch)
            image = rng.integers(0, 256, (batch, 120, 160, 3), dtype=np.uint8)
            audio = (rng.standard_normal((batch, WINDOW_SAMPLES)) * 0.1).astype(np.float32)
            ti, ta = torch.from_numpy(image), torch.from_numpy(audio)

            def eager():
                with torch.no_grad():
                    model(ti, ta)

            row = {"batch": batch, "torch_eager_fp32_ms": _median_ms(eager, args.repeats)}
            for p, s in sessions.items():
                row[f"onnxruntime_{p}_ms"] = _median_ms(lambda s=s: s.run(None, {"image": image, "audio": audio}),
                                                        args.repeats)
            rows.append(row)

    print(f"cpu: {cpu}")
    print(f"reference model latency, median of {args.repeats} runs, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds")
    print(f"{'batch':>5} {'torch eager fp32':>17} {'ORT fp32':>9} {'ORT int8':>9} {'eager/ORT int8':>15} {'ORT fp32/int8':>14}")
    for r in sorted(rows, key=lambda r: r["batch"]):
        print(f"{r['batch']:>5} {r['torch_eager_fp32_ms']:>14.2f} ms {r['onnxruntime_fp32_ms']:>6.2f} ms "
              f"{r['onnxruntime_int8_ms']:>6.2f} ms {r['torch_eager_fp32_ms'] / r['onnxruntime_int8_ms']:>14.2f}x "
              f"{r['onnxruntime_fp32_ms'] / r['onnxruntime_int8_ms']:>13.2f}x")
    for batch in (1, 8):
        ratios = sorted(r["torch_eager_fp32_ms"] / r["onnxruntime_int8_ms"] for r in rows if r["batch"] == batch)
        print(f"batch {batch}: ONNX Runtime INT8 vs PyTorch eager {ratios[len(ratios) // 2]:.2f}x "
              f"(rounds: {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
    print(f"full conversion (export, verify, calibrate on 512, gate on 512): {convert_s:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_int8().to_dict(), "latency": rows, "convert_s": convert_s}, indent=2) + "\n")
    _plot([r for r in rows if r is _median_row(rows, r["batch"])], convert_s, out.with_suffix(".png"), cpu)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _median_row(rows: list[dict], batch: int) -> dict:
    """The round whose INT8 latency is the median of that batch size's rounds."""
    same = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["onnxruntime_int8_ms"])
    return same[len(same) // 2]


def _plot(rows: list[dict], convert_s: float, path: Path, cpu: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [("torch_eager_fp32_ms", "PyTorch eager FP32"), ("onnxruntime_fp32_ms", "ONNX Runtime FP32"),
             ("onnxruntime_int8_ms", "ONNX Runtime INT8 Q/DQ")]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4))
    for ax, r in zip(axes, rows):
        values = [r[k] for k, _ in names]
        bars = ax.bar([label.replace(" ", "\n", 2) for _, label in names], values,
                      color=["#bbbbbb", "#4477aa", "#228833"])
        for b, v in zip(bars, values):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f} ms\n{values[0] / v:.2f}x", ha="center", va="bottom")
        ax.set_title(f"batch {r['batch']}")
        ax.set_ylabel("ms per call (median)")
        ax.set_ylim(0, max(values) * 1.3)
    fig.suptitle(f"reference model on {cpu.split(';')[0]}; full conversion {convert_s:.1f} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
