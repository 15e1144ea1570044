"""Calibration and evaluation sets for the converter, written from the reference model's simulated data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.sampleset import write_set
from reference_model.dataset import DataConfig, collate, evaluation_samples, load_split
from reference_model.evaluate import EVAL_SEED
from edge.contract.vocabulary import INTENTS, OBJECT_TYPES


def write_sim_set(out: str | Path, split: str = "val", n: int = 512, snr_db: float | None = 10.0,
                  config: DataConfig | None = None, cache_root: str | Path = "data", seed: int = EVAL_SEED) -> dict:
    """Write ``n`` labelled samples of a split (unseen voices and scenes for val/test) as a sample set."""
    config = config or DataConfig()
    data = load_split(config, split, cache_root)
    samples = evaluation_samples(data, seed, snr_db, config.present_fraction)
    pick = np.random.default_rng([seed, 5]).permutation(len(samples))[:n]
    batch = collate(data, [samples[i] for i in sorted(pick)])
    labels = []
    for i in range(len(batch["intent"])):
        obj = int(batch["object"][i])
        present = batch["presence"][i] > 0.5
        labels.append({
            "intent": INTENTS[int(batch["intent"][i])],
            "object": " ".join(OBJECT_TYPES[obj]) if obj >= 0 else None,
            "target_xy": batch["target_xy"][i] if present else None,
            "target_box": batch["target_box"][i] if present else None,
        })
    # val's voices and scenes are for calibration, test's for the accuracy gate (the README's sets/calib, sets/eval)
    purpose = {"val": "calibration", "test": "evaluation"}.get(split)
    return write_set(out, batch["image"], batch["audio"], labels, set_id=f"sim-{split}-{n}-seed{seed}",
                     intents=INTENTS, purpose=purpose, simulated=True)
