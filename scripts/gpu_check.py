"""The first run on a machine with an NVIDIA GPU and TensorRT: settles what no CPU-only test can.

    scripts/gpu_check.sh [BUNDLE] [--out gpu_check.json]

1. Builds the int8 and fp16 engines of a reference bundle with ``voxedge build-engine``'s code
   (which also checks each on ``golden.npz`` before installing it).
2. Runs each engine on the golden inputs at batch 1 and 8 (and once from a worker thread) and
   compares with ONNX Runtime on the ONNX file the engine was built from.
3. Feeds extreme audio (DC at 1.0, a full-scale square wave) and checks for NaN and inf.
4. Prints the precision TensorRT chose for each layer of the audio front end (kept in FP32).
5. Times TensorRT against ONNX Runtime's CUDA provider at batch 1.
It writes everything to one JSON file and exits 1 if any check failed. Without a bundle it
converts the reference model first (needs the workstation extras: torch). Meant to finish in
under 5 minutes on a desktop GPU; unverified until it has run on one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FRONT_END = "/audio_encoder/frontend"
TIMED_RUNS = 50
AUDIO_SAMPLES = 32000


def _reference_bundle(work: Path, log) -> Path:
    """The reference model converted with FP16 and INT8 (the accuracy gate included)."""
    from convert.cli import DEFAULT_CHECKPOINT
    from convert.pipeline import convert
    from reference_model.sets import write_sim_set

    log("converting the reference model (fp32, fp16, int8)")
    write_sim_set(work / "calib", split="val", n=256)
    write_sim_set(work / "eval", split="test", n=256)
    convert(DEFAULT_CHECKPOINT, work / "bundle", calibration=work / "calib", eval_set=work / "eval", fp16=True,
            log=log)
    return work / "bundle"


def _compare(got: dict, want: dict) -> dict:
    out = {}
    for name, ref in want.items():
        a, b = np.asarray(got[name], np.float64).ravel(), np.asarray(ref, np.float64).ravel()
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
        out[name] = {"max_abs": float(np.abs(a - b).max()), "cosine": cos}
    return out


def _finite(outputs: dict) -> bool:
    return all(np.isfinite(v).all() for v in outputs.values())


def _median_ms(fn, runs: int = TIMED_RUNS) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from timing import median_s  # the benchmarks' one timing helper (bench/ runs as scripts, not a package)

    return median_s(fn, runs, warmup=5) * 1e3


def _front_end_precisions(plan_path: Path) -> list[dict]:
    """Name, type and precision/format of every engine layer of the audio front end (engine inspector)."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    rows = []
    for layer in info.get("Layers", []):
        if isinstance(layer, dict) and FRONT_END in layer.get("Name", ""):
            outputs = layer.get("Outputs") or [{}]
            rows.append({"name": layer["Name"], "type": layer.get("LayerType"),
                         "output_format": outputs[0].get("Format/Datatype")})
    return rows


def check_precision(bundle, precision: str, golden_in: dict, log) -> dict:
    from edge.bundle import load_bundle
    from edge.engine import build_engine, engine_model, typing_mode
    from edge.runners import make_runner
    from edge.runners.onnxruntime import make_session

    import tensorrt as trt

    result: dict = {"precision": precision, "failures": []}
    t0 = time.monotonic()
    plan = build_engine(bundle.path, precision, max_batch=8, log=log)
    result["build_s"] = time.monotonic() - t0
    bundle = load_bundle(bundle.path)
    onnx_file = engine_model(bundle, precision, typing_mode(trt)).path
    result["onnx"] = onnx_file
    # int8: ONNX Runtime computes the Q/DQ arithmetic in float, as TensorRT does (not with its CPU int8 kernels)
    session = make_session(bundle.path / onnx_file, emulate_qdq=precision == "int8")
    feeds = {"batch1": {k: v[:1] for k, v in golden_in.items()},
             "batch8": {k: np.concatenate([v, v])[:8] for k, v in golden_in.items()}}
    extreme_audio = {"dc_1.0": np.ones((1, AUDIO_SAMPLES), np.float32),
                     "square_full_scale": np.where(np.arange(AUDIO_SAMPLES) % 40 < 20, 1.0, -1.0)
                     .astype(np.float32)[None]}
    with make_runner("tensorrt", bundle, precision, max_batch=8) as runner:
        for name, feed in feeds.items():
            got, want = runner.infer(feed), dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
            result[name] = _compare(got, want)
            if not _finite(got):
                result["failures"].append(f"{name}: NaN or inf in the outputs")
        box: dict = {}
        worker = threading.Thread(target=lambda: box.update(out=runner.infer(feeds["batch1"])))
        worker.start()
        worker.join(60)
        same = "out" in box and all(np.allclose(box["out"][k], v, atol=1e-5)
                                    for k, v in runner.infer(feeds["batch1"]).items())
        result["worker_thread_same_result"] = bool(same)
        if not same:
            result["failures"].append("a run from a worker thread differs from one on the main thread (or hung)")
        result["extreme_audio_finite"] = {}
        for name, audio in extreme_audio.items():
            out = runner.infer({"image": golden_in["image"][:1], "audio": audio})
            result["extreme_audio_finite"][name] = _finite(out)
            if not _finite(out):
                result["failures"].append(f"extreme audio {name}: NaN or inf in the outputs")
        result["tensorrt_ms_batch1"] = _median_ms(lambda: runner.infer(feeds["batch1"]))
    result["front_end_layers"] = _front_end_precisions(plan)
    for row in result["front_end_layers"]:
        log(f"  {precision} front end: {row['name']} [{row['type']}] -> {row['output_format']}")
    return result


def ort_cuda_ms(bundle, precision: str, feed: dict) -> float | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    path = bundle.path / bundle.manifest.file(precision).path
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    return _median_ms(lambda: session.run(None, feed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", help="a bundle with fp16 and int8 models (default: convert one)")
    parser.add_argument("--out", default="gpu_check.json", help="the JSON report (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt
    except ImportError as exc:
        print(f"gpu_check: error: {exc}; run this on a machine with an NVIDIA GPU, TensorRT and pycuda "
              "(pip install 'voxedge[trt]')", file=sys.stderr)
        return 2
    from edge.bundle import load_bundle
    from edge.engine import device_info, load_golden

    t_start = time.monotonic()
    log = print
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.bundle) if args.bundle else _reference_bundle(Path(tmp), log)
        work = Path(tmp) / "checked"  # engines go into a copy: the given bundle is left as it was
        shutil.copytree(source, work)
        bundle = load_bundle(work)
        golden_in, _ = load_golden(bundle)
        report = {"machine": platform.node(), "device": dataclasses.asdict(device_info(0)), "tensorrt": tensorrt.__version__,
                  "bundle": str(source), "precisions": {}}
        for precision in ("int8", "fp16"):
            try:
                report["precisions"][precision] = check_precision(bundle, precision, golden_in, log)
            except Exception as exc:  # report and go on to the other precision
                report["precisions"][precision] = {"precision": precision, "failures": [f"{type(exc).__name__}: {exc}"]}
            bundle = load_bundle(work)
            res = report["precisions"][precision]
            res["ort_cuda_ms_batch1"] = ort_cuda_ms(bundle, "fp32" if precision == "fp16" else precision,
                                                    {k: v[:1] for k, v in golden_in.items()})
            log(f"{precision}: TensorRT {res.get('tensorrt_ms_batch1')} ms vs ONNX Runtime CUDA "
                f"{res['ort_cuda_ms_batch1']} ms at batch 1; failures: {res['failures'] or 'none'}")
    report["total_s"] = time.monotonic() - t_start
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    failures = [f for r in report["precisions"].values() for f in r["failures"]]
    print(f"wrote {args.out} in {report['total_s']:.0f} s: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
