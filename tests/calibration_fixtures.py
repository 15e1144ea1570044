"""Small simulated sample sets shared by the calibration tests (quick to make, enough for a gate)."""

from __future__ import annotations

from pathlib import Path

from reference_model.dataset import DataConfig, SplitSize, _counts
from reference_model.sets import write_sim_set

SMALL = DataConfig(seed=21, val=SplitSize(80, _counts(4, 12, 12), babble_sources=6, noise_clips=6))


def write_small_sets(tmp: Path) -> Path:
    """``tmp/calib`` (48 samples) and ``tmp/eval`` (64), from the validation split of ``SMALL``."""
    write_sim_set(tmp / "calib", split="val", n=48, config=SMALL, cache_root=tmp / "data", seed=1)
    write_sim_set(tmp / "eval", split="val", n=64, config=SMALL, cache_root=tmp / "data", seed=2)
    return tmp
