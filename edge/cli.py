"""The ``voxedge`` command line. Each subcommand imports what it needs when it runs,
so that robot-side commands never import torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CHECKPOINT = "reference_model/checkpoints/reference.pt"
DEFAULT_TRAIN_CONFIG = "reference_model/configs/reference.json"


def _cmd_train(args: argparse.Namespace) -> int:
    from reference_model.train import RunConfig, train

    config = RunConfig.from_file(args.config)
    train(config, args.out, cache_root=args.data_dir, resume=args.resume, progress=not args.quiet)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from reference_model.evaluate import evaluate_checkpoint, format_metrics

    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent
    snr = None if args.snr_db is not None and args.snr_db < 0 else args.snr_db
    metrics = evaluate_checkpoint(args.checkpoint, split=args.split, snr_db=snr, out_dir=out_dir,
                                  cache_root=args.data_dir, progress=not args.quiet)
    print(format_metrics(metrics))
    print(f"wrote {out_dir / f'metrics-{args.split}.json'} and {out_dir / f'confusion-{args.split}.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxedge", description="Offline voice-controlled robot toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train the reference multimodal model on simulated data")
    p.add_argument("--config", default=DEFAULT_TRAIN_CONFIG, help="training config JSON (default: %(default)s)")
    p.add_argument("--out", default=DEFAULT_CHECKPOINT, help="checkpoint to write (default: %(default)s)")
    p.add_argument("--data-dir", default="data", help="dataset cache folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from runs/<name>/state.pt if present")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a reference checkpoint on the held-out test split")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint (default: %(default)s)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--snr-db", type=float, default=10.0,
                   help="noise level as SNR in dB; a negative value means clean audio (default: %(default)s)")
    p.add_argument("--out", help="folder for metrics JSON and confusion plot (default: next to the checkpoint)")
    p.add_argument("--data-dir", default="data", help="dataset cache folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sim.errors import SimError  # tiny module: the simulator's user-facing errors

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, SimError) as exc:
        print(f"voxedge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxedge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
