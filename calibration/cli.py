"""``voxedge calibrate``: registered by the ``voxedge`` entry point."""

from __future__ import annotations

import argparse
from pathlib import Path


def _refuse_small_sets(calibration: str, eval_set: str | None) -> None:
    """One line, before any work, when a set is too small to calibrate with or to gate on (--force overrides)."""
    from calibration.errors import CalibrationError
    from calibration.sampleset import CALIBRATE_MIN_SAMPLES, read_set

    # without --eval the gate runs on the calibration samples, so one check covers both
    for role, path in (("calibration", calibration), ("evaluation", eval_set)):
        if path is None:
            continue
        n = len(read_set(path))
        if n < CALIBRATE_MIN_SAMPLES:
            raise CalibrationError(
                f"the {role} set {path} has {n} samples, fewer than {CALIBRATE_MIN_SAMPLES}: its int8 scales and "
                f"its accuracy gate (one sample = {100 / n:.1f} points) would not be trustworthy; record more "
                "(voxedge serve --audit-log DIR) or add --force to calibrate anyway")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.int8 import calibrate_bundle

    if not args.force:
        _refuse_small_sets(args.calibration, args.eval)
    calibrate_bundle(args.bundle, args.calibration, args.eval, quantizer=args.quantizer,
                     search=not args.no_precision_search, allow_trt_findings=args.allow_trt_findings)
    return 0


def _cmd_import_set(args: argparse.Namespace) -> int:
    from calibration.errors import CalibrationError
    from edge.outputs import claim_output

    w, _, h = args.size.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise CalibrationError(f"--size {args.size!r} must be WIDTHxHEIGHT in pixels, e.g. 160x120")
    claim_output(args.out, "index.jsonl", "sample set", force=args.force)
    from calibration.importer import import_files

    meta = import_files(args.src, args.out, (int(w), int(h)), args.window)
    print(f"wrote {args.out}: {meta['n_samples']} samples, per intent {meta['per_intent']}")
    for warning in meta["warnings"]:
        print(f"warning: {warning}")
    return 0


def _cmd_val(args: argparse.Namespace) -> int:
    from calibration.errors import CalibrationError
    from calibration.sampleset import read_set
    from edge.bundle import load_bundle
    from edge.outputs import output_dir
    from edge.precision import bundle_precisions

    bundle = load_bundle(args.bundle)
    have = bundle_precisions(bundle.manifest)
    wanted = have if args.precision == "all" else [args.precision]
    missing = [p for p in wanted if p not in have]
    if missing:
        raise CalibrationError(f"the bundle has no {', '.join(missing)} model; it has {', '.join(have)}")
    with output_dir(args.out or Path("runs") / "val" / bundle.path.name) as out:
        return _val(bundle, read_set(args.set), wanted, out, args.set, not args.quiet)


def _val(bundle, samples, wanted: list[str], out: Path, set_name: str, progress: bool) -> int:
    from calibration.val import confusion_table, plot_confusion, summary_line, validate, write_results

    print(f"val: {bundle.path.name} on {set_name} ({len(samples)} samples), {', '.join(wanted)}; decisions use the "
          f"command threshold {bundle.manifest.heads.command_threshold:g}", flush=True)
    results = [validate(bundle, samples, p, progress=progress) for p in wanted]
    for r in results:
        print(f"\n{summary_line(r)}\n{confusion_table(r)}")
        png = plot_confusion(r, out / f"confusion-{r.precision}.png")
        if png:
            print(f"  confusion matrix: {png}")
        for w in r.warnings:
            print(f"  warning: {w}")
    print(f"\nwrote {write_results(results, out)}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``calibrate``, ``import-set`` and ``val`` on the ``voxedge`` parser."""
    from calibration.sampleset import CALIBRATE_MIN_SAMPLES
    from edge.contract.audio import WINDOW_SAMPLES

    v = sub.add_parser("val", help="measure a bundle on your own labelled sample set, per precision",
                       description="Accuracy (argmax and as the robot decides, with the command threshold), false "
                                   "accepts on 'none' speech, command detection ROC-AUC, grounding of the target "
                                   "point, and the confusion matrix (table and PNG), for each of the bundle's "
                                   "models, run as voxedge serve runs them here.")
    v.add_argument("bundle", help="bundle directory")
    v.add_argument("set", help="labelled sample set (voxedge import-set with labels.jsonl, or voxedge make-set)")
    v.add_argument("--precision", default="all", choices=("all", "fp32", "fp16", "int8"),
                   help="which of the bundle's models to measure (default: %(default)s)")
    v.add_argument("--out", help="folder for val.json and the confusion PNGs (default: runs/val/<bundle name>)")
    v.add_argument("--quiet", action="store_true", help="no progress line")
    v.set_defaults(func=_cmd_val)
    p = sub.add_parser("calibrate", help="re-quantize a bundle's INT8 model with a new calibration set")
    p.add_argument("bundle", help="bundle directory (rewritten atomically)")
    p.add_argument("--calibration", "--data", dest="calibration", required=True,
                   help="sample set to calibrate with, e.g. the robot's audit log (voxedge serve --audit-log DIR)")
    p.add_argument("--eval", help="labelled sample set for the accuracy gate (default: gate on agreement with the "
                                  "FP32 model over the calibration samples)")
    p.add_argument("--quantizer", choices=("onnxruntime", "modelopt"),
                   help="INT8 quantizer (default: the one the bundle was made with)")
    p.add_argument("--no-precision-search", action="store_true",
                   help="fail when INT8 misses the accuracy gate instead of keeping sensitive layers in float")
    p.add_argument("--allow-trt-findings", action="store_true",
                   help="rewrite the bundle even if TensorRT's ONNX parser would refuse the new INT8 model "
                        "(voxedge check-trt)")
    p.add_argument("--force", action="store_true",
                   help=f"calibrate even with a set of fewer than {CALIBRATE_MIN_SAMPLES} samples (refused by default: "
                        "too few to trust)")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("import-set", help="make a sample set from your own picture + WAV pairs")
    p.add_argument("src", help="directory of NAME.png/.jpg + NAME.wav pairs (and optional labels.jsonl)")
    p.add_argument("--out", required=True,
                   help="set directory to write; an earlier set there is replaced, anything else refused unless --force")
    p.add_argument("--force", action="store_true", help="replace --out even if it is not a sample set")
    p.add_argument("--size", default="160x120", help="model input WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--window", type=int, default=WINDOW_SAMPLES,
                   help="audio window in samples at 16 kHz (default: %(default)s)")
    p.set_defaults(func=_cmd_import_set)
