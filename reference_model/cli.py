"""``voxedge train`` and ``voxedge evaluate``: the reference model's subcommands.

Registered by the ``voxedge`` entry point (``edge.cli``); torch is imported only
when one of them runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = PACKAGE_DIR / "checkpoints" / "reference.pt"
DEFAULT_TRAIN_CONFIG = PACKAGE_DIR / "configs" / "reference.json"


def _cmd_train(args: argparse.Namespace) -> int:
    from reference_model.train import RunConfig, train

    config = RunConfig.from_file(args.config).with_budget(steps=args.steps, train_fraction=args.train_fraction)
    config = config.with_seed(args.seed)
    # By default under ./runs/, never over the committed checkpoint (make reference-model names it on purpose).
    out = args.out or Path("runs") / "train" / f"{Path(args.config).stem}.pt"
    meta = Path(out).with_suffix(".json")
    if meta.resolve() == Path(args.config).resolve():
        from reference_model.errors import ConfigError

        raise ConfigError(f"--out {out} would write the checkpoint's metadata to {meta}, which is the "
                          "--config file itself; give --out another name or folder")
    from edge.outputs import output_dir

    with output_dir(Path(out).parent, what=f"the folder of --out {out}"):  # checked before training, not after
        train(config, out, cache_root=args.data_dir, resume=args.resume, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def default_evaluate_dir(checkpoint: str | Path) -> Path:
    """Next to the checkpoint, except for checkpoints shipped in the package (tracked files): ./runs/evaluate/."""
    checkpoint = Path(checkpoint)
    if checkpoint.resolve().parent == DEFAULT_CHECKPOINT.parent:
        return Path("runs") / "evaluate" / checkpoint.stem
    return checkpoint.parent


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.outputs import output_dir
    from reference_model.evaluate import check_threshold, evaluate_checkpoint, evaluation_name, format_metrics

    if args.threshold is not None:
        check_threshold(args.threshold)  # before the output folder is made

    with output_dir(Path(args.out) if args.out else default_evaluate_dir(args.checkpoint)) as out_dir:
        if not args.quiet:  # torch, the checkpoint and the split take seconds before the first progress bar
            noise = "clean" if args.clean else f"{args.snr_db:g} dB SNR"
            print(f"evaluating {args.checkpoint} on the {args.split} split ({noise}, {args.synthesizer}): loading "
                  "the model and the data ...", flush=True)
        metrics = evaluate_checkpoint(args.checkpoint, split=args.split, snr_db=None if args.clean else args.snr_db,
                                      out_dir=out_dir, cache_root=args.data_dir, progress=not args.quiet,
                                      synthesizer=args.synthesizer, threshold=args.threshold)
    print(format_metrics(metrics))
    name = evaluation_name(args.split, args.synthesizer, args.threshold)
    print(f"wrote {out_dir / f'metrics-{name}.json'} and {out_dir / f'confusion-{name}.png'}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands on the ``voxedge`` parser."""
    from reference_model.evaluate import SYNTHESIZERS  # numpy only, no torch

    p = sub.add_parser("train", help="train the reference multimodal model on simulated data")
    p.add_argument("--config", default=str(DEFAULT_TRAIN_CONFIG), help="training config JSON (default: %(default)s)")
    p.add_argument("--out", help="checkpoint to write (default: runs/train/<config name>.pt)")
    p.add_argument("--data-dir", default="data", help="dataset cache folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from runs/<name>/state.pt if present")
    p.add_argument("--steps", type=int, help="training steps, instead of the config's (a quick run: e.g. 500)")
    p.add_argument("--train-fraction", type=float,
                   help="generate and train on this fraction (0, 1] of the config's training split; validation "
                        "and test splits stay whole, so evaluate's figures compare with the full run's")
    p.add_argument("--seed", type=int,
                   help="training seed instead of the config's: the same data, new initial weights, batches "
                        "and augmented windows (train with several to see the spread of a result)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a reference checkpoint on the held-out test split")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="checkpoint (default: %(default)s)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which held-out split to score: its scenes and voices are never trained on "
                        "(default: %(default)s)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--snr-db", type=float, default=10.0,
                       help="speech-to-noise ratio of the mixed-in noise, in dB (default: %(default)s)")
    noise.add_argument("--clean", action="store_true", help="evaluate on clean speech, no noise mixed in")
    p.add_argument("--synthesizer", default="espeak-ng", choices=SYNTHESIZERS,
                   help="who speaks the split's commands: espeak-ng (the split's own unseen voices); sam (SAM, a "
                        "synthesizer no split uses, installed from npm on first use; needs node.js); or pico, "
                        "piper, gnuspeech (sim/other_voices.py: a corpus with other_voices trains on pico and "
                        "piper and validates on gnuspeech, which needs node.js) (default: %(default)s)")
    p.add_argument("--threshold", type=float,
                   help="score at this command threshold in [0, 1) instead of the one stored in the "
                        "checkpoint (0: plain argmax), to compare operating points")
    p.add_argument("--out", help="folder for metrics JSON and confusion plot (default: next to the checkpoint; "
                                 "runs/evaluate/<name>/ for the checkpoints shipped in the package)")
    p.add_argument("--data-dir", default="data", help="dataset cache folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)
    add_set_parser(sub)


def _cmd_make_set(args: argparse.Namespace) -> int:
    from edge.outputs import claim_output

    claim_output(args.out, "index.jsonl", "sample set", force=args.force)
    from reference_model.sets import write_sim_set

    meta = write_sim_set(args.out, split=args.split, n=args.n, snr_db=None if args.clean else args.snr_db,
                         cache_root=args.data_dir)
    print(f"wrote {meta['n_samples']} samples to {args.out} ({meta['per_intent']})")
    for w in meta["warnings"]:
        print(f"warning: {w}")
    return 0


def add_set_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-set", help="write a calibration/evaluation sample set from the simulated data")
    p.add_argument("--out", required=True,
                   help="set directory to write; an earlier set there is replaced, anything else refused unless --force")
    p.add_argument("--force", action="store_true", help="replace --out even if it is not a sample set")
    p.add_argument("--split", default="val", choices=("train", "val", "test"),
                   help="which split's scenes and voices to draw from: val for calibration, test for the accuracy "
                        "gate (default: %(default)s)")
    p.add_argument("-n", type=int, default=512, help="number of samples (default: %(default)s)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--snr-db", type=float, default=10.0, help="noise level (default: %(default)s dB SNR)")
    noise.add_argument("--clean", action="store_true", help="no noise mixed in")
    p.add_argument("--data-dir", default="data", help="dataset cache folder (default: %(default)s)")
    p.set_defaults(func=_cmd_make_set)
