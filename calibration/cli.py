"""``voxedge val`` and ``voxedge import-set``: registered by the ``voxedge`` entry point
(``voxedge calibrate`` is the converter's: ``convert.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    """Register ``val`` and ``import-set`` on the ``voxedge`` parser."""
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
    p = sub.add_parser("import-set", help="make a sample set from your own picture + WAV pairs")
    p.add_argument("src", help="directory of NAME.png/.jpg + NAME.wav pairs (and optional labels.jsonl)")
    p.add_argument("--out", required=True,
                   help="set directory to write; an earlier set there is replaced, anything else refused unless --force")
    p.add_argument("--force", action="store_true", help="replace --out even if it is not a sample set")
    p.add_argument("--size", default="160x120", help="model input WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--window", type=int, default=WINDOW_SAMPLES,
                   help="audio window in samples at 16 kHz (default: %(default)s)")
    p.set_defaults(func=_cmd_import_set)
