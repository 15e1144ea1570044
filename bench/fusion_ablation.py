"""Does fusion matter? The same images with commands naming different objects.

For test-split scenes with two or more clearly visible objects, the reference
model hears "go to the <A>" and then a command naming another visible object
<B>, over the very same image. If the model fuses both inputs, the target point
follows the words: it lands on A for the first and on B for the second. If it
ignored the audio it would point at the same object both times.

    .venv/bin/python bench/fusion_ablation.py [--checkpoint ...] [--out bench/results/fusion.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from reference_model.cli import DEFAULT_CHECKPOINT
from reference_model.dataset import VISIBLE, DataConfig, Sample, collate, load_split
from reference_model.evaluate import EVAL_SEED
from reference_model.model import load_checkpoint


def _inside(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    return (xy[:, 0] >= box[:, 0]) & (xy[:, 0] <= box[:, 2]) & (xy[:, 1] >= box[:, 1]) & (xy[:, 1] <= box[:, 3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="bench/results/fusion.json")
    args = parser.parse_args()

    model, meta = load_checkpoint(args.checkpoint)
    data = load_split(DataConfig.from_dict(meta["data_config"]), "test", args.data_dir, progress=True)
    rng = np.random.default_rng(EVAL_SEED)
    by_object = {o: np.flatnonzero(data.utt_object == o) for o in range(data.obj_state.shape[1])}
    scenes = np.flatnonzero((data.obj_state == VISIBLE).sum(1) >= 2)
    first, second = [], []
    for scene in rng.choice(scenes, size=args.pairs, replace=len(scenes) < args.pairs):
        a, b = rng.choice(np.flatnonzero(data.obj_state[scene] == VISIBLE), size=2, replace=False)
        for obj, out in ((a, first), (b, second)):
            utt = int(rng.choice(by_object[int(obj)]))
            out.append(Sample(utt=utt, scene=int(scene), noise_kind="white", noise_clip=0, noise_shift=0,
                              snr_db=None, offset=0, gain=0.8))

    rates = {}
    with torch.no_grad():
        preds = []
        for samples in (first, second):
            batch = collate(data, samples)
            _, xy, _, _ = model(torch.from_numpy(batch["image"]), torch.from_numpy(batch["audio"]))
            preds.append((xy.numpy(), batch["target_box"]))
    (xy_a, box_a), (xy_b, box_b) = preds
    rates["command_A_lands_on_A"] = float(_inside(xy_a, box_a).mean())
    rates["command_B_lands_on_B"] = float(_inside(xy_b, box_b).mean())
    rates["command_B_lands_on_A"] = float(_inside(xy_b, box_a).mean())
    rates["point_moves_between_commands_px"] = float(np.median(np.hypot(*((xy_a - xy_b) * [160, 120]).T)))
    print(f"{args.pairs} test scenes, two visible objects A and B named in turn over the same image (clean speech):")
    print(f"  command naming A lands on A:    {100 * rates['command_A_lands_on_A']:.1f} %")
    print(f"  command naming B lands on B:    {100 * rates['command_B_lands_on_B']:.1f} %")
    print(f"  command naming B lands on A:    {100 * rates['command_B_lands_on_A']:.1f} %   (audio ignored would be ~100 %)")
    print(f"  median move of the point:       {rates['point_moves_between_commands_px']:.1f} px")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rates, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
