"""Package layout and the command line: the robot side never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_importing_edge_does_not_import_torch():
    code = "import sys, edge, edge.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, "importing edge pulled in torch"
    assert "torch" not in result.stderr


@pytest.mark.parametrize("package", ["edge", "convert", "calibration", "firmware_bridge", "sim", "reference_model"])
def test_top_level_packages_import(package):
    __import__(package)


def test_required_top_level_files_exist():
    for name in ("setup.py", "pyproject.toml", "Makefile", "README.md", ".ci/run", "Dockerfile.jetson"):
        assert (ROOT / name).is_file(), name


def test_cli_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "edge.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for command in ("train", "evaluate"):
        assert command in result.stdout


def test_cli_evaluate_missing_checkpoint_says_how_to_get_one(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "evaluate", "--checkpoint", str(tmp_path / "nope.pt")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "voxedge train" in result.stderr


def test_cli_train_rejects_bad_config(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"steps": 10, "bogus": 1}}')
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "train", "--config", str(bad), "--out", str(tmp_path / "o.pt")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "bogus" in result.stderr
    assert not (tmp_path / "o.pt").exists()


def _voxedge(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[1, 2]", "JSON object of sections"),
        ('{"train": {"steps": 0}}', "train.steps must be >= 1"),
        ('{"model": {"image_width": 320, "image_height": 240}}', "differs from data image size"),
        ('{"data": {"present_fraction": 1.5}}', "present_fraction"),
        ("{not json", "not valid JSON"),
    ],
)
def test_cli_train_config_errors_are_clear(tmp_path, content, expected):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(content)
    result = _voxedge("train", "--config", str(cfg), "--out", str(tmp_path / "o.pt"))
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [cfg]


def test_cli_train_refuses_an_out_whose_metadata_would_overwrite_the_config(tmp_path):
    cfg = tmp_path / "run.json"
    text = '{"train": {"steps": 10}}'
    cfg.write_text(text)
    result = _voxedge("train", "--config", str(cfg), "--out", str(tmp_path / "run.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is the --config file itself" in result.stderr
    assert cfg.read_text() == text and list(tmp_path.iterdir()) == [cfg]


@pytest.mark.parametrize(("flags", "expected"), [(["--steps", "0"], "--steps must be >= 1"),
                                               (["--train-fraction", "1.5"], "--train-fraction must be in (0, 1]"),
                                               (["--train-fraction", "0"], "--train-fraction must be in (0, 1]"),
                                               (["--seed", "-1"], "--seed must be >= 0")])
def test_cli_train_budget_errors_are_clear(tmp_path, flags, expected):
    result = _voxedge("train", *flags, "--out", str(tmp_path / "o.pt"))
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_evaluate_rejects_a_threshold_outside_0_1(tmp_path):
    result = _voxedge("evaluate", "--threshold", "1.5", "--out", str(tmp_path / "eval"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--threshold must be in [0, 1)" in result.stderr and not (tmp_path / "eval").exists()


def test_cli_evaluate_rejects_a_damaged_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = _voxedge("evaluate", "--checkpoint", str(bad))
    assert result.returncode == 2
    assert "unreadable" in result.stderr and "Traceback" not in result.stderr


def test_default_config_and_committed_checkpoint_are_found_from_anywhere():
    from reference_model.cli import DEFAULT_CHECKPOINT, DEFAULT_TRAIN_CONFIG

    assert DEFAULT_TRAIN_CONFIG.is_absolute() and DEFAULT_TRAIN_CONFIG.is_file()
    assert DEFAULT_CHECKPOINT.is_absolute() and DEFAULT_CHECKPOINT.is_file()
    assert DEFAULT_CHECKPOINT.stat().st_size < 10 * 1024 * 1024


TRAINING_CONFIGS = sorted((ROOT / "reference_model" / "configs").glob("*.json"))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_every_committed_training_config_loads(path):
    from reference_model.train import RunConfig

    config = RunConfig.from_file(path)  # refuses unknown keys and values out of range
    assert config.model.audio_frontend in ("logmel", "speech_embedding")


def test_another_training_seed_changes_the_seed_alone():
    from reference_model.train import RunConfig

    config = RunConfig.from_file(ROOT / "reference_model" / "configs" / "speech_embedding_many_voices.json")
    reseeded = config.with_seed(3)
    assert reseeded.train.seed == 3 and config.train.seed == 0
    assert reseeded.to_dict() == {**config.to_dict(), "train": {**config.to_dict()["train"], "seed": 3}}
    assert reseeded.data.digest("train") == config.data.digest("train")  # the same generated data
    assert config.with_seed(None) is config
