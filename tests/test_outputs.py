"""Outputs never destroy what their command did not create (issue 18 point 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.outputs import OutputError, claim_output

ROOT = Path(__file__).resolve().parents[1]


def _voxedge(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd or ROOT)


def test_claim_output_accepts_new_empty_and_earlier_outputs_only(tmp_path):
    assert claim_output(tmp_path / "new", "manifest.json", "bundle") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    claim_output(tmp_path / "empty", "manifest.json", "bundle")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "manifest.json").write_text("{}")
    claim_output(tmp_path / "earlier", "manifest.json", "bundle")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="is not a bundle .it has no manifest.json.*--force"):
        claim_output(tmp_path / "mine", "manifest.json", "bundle")
    claim_output(tmp_path / "mine", "manifest.json", "bundle", force=True)  # the writer replaces it
    (tmp_path / "file").write_text("notes")
    with pytest.raises(OutputError, match="is a file, not a bundle directory"):
        claim_output(tmp_path / "file", "manifest.json", "bundle")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        claim_output(tmp_path / "file" / "sub", "manifest.json", "bundle")
    claim_output(tmp_path / "file", "manifest.json", "bundle", force=True)
    assert not (tmp_path / "file").exists()
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(OutputError, match="symbolic link"):
        claim_output(tmp_path / "link", "manifest.json", "bundle")


@pytest.mark.parametrize("command", [
    ("convert", "--out"),
    ("make-set", "-n", "4", "--out"),
    ("import-set", "SRC", "--out"),
])
def test_commands_refuse_an_out_they_did_not_write_and_change_nothing(tmp_path, command):
    (tmp_path / "src").mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    args = [str(tmp_path / "src") if a == "SRC" else a for a in command]
    r = _voxedge(*args, mine)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "exists and is not a" in r.stderr and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    file_out = tmp_path / "a-file"
    file_out.write_text("also mine")
    r = _voxedge(*args, file_out)
    assert r.returncode == 2 and "is a file" in r.stderr and file_out.read_text() == "also mine"


def _pairs(src: Path, n: int = 2) -> None:
    import cv2

    from edge.samples import encode_wav

    src.mkdir()
    for i in range(n):
        cv2.imwrite(str(src / f"s{i}.png"), np.full((120, 160, 3), 40 * i, np.uint8))
        (src / f"s{i}.wav").write_bytes(encode_wav(np.zeros(16000, np.float32), 16000))


def test_import_set_replaces_its_own_set_and_with_force_anything(tmp_path):
    _pairs(tmp_path / "src")
    out = tmp_path / "set"
    assert _voxedge("import-set", tmp_path / "src", "--out", out).returncode == 0
    assert (out / "index.jsonl").is_file()
    assert _voxedge("import-set", tmp_path / "src", "--out", out).returncode == 0  # an earlier set: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    r = _voxedge("import-set", tmp_path / "src", "--out", mine, "--force")
    assert r.returncode == 0, r.stderr
    assert (mine / "index.jsonl").is_file() and not (mine / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_import_set_size_must_be_width_x_height(tmp_path):
    _pairs(tmp_path / "src")
    r = _voxedge("import-set", tmp_path / "src", "--out", tmp_path / "set", "--size", "160by120")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "WIDTHxHEIGHT" in r.stderr


def test_train_and_evaluate_defaults_never_point_at_tracked_files(tmp_path):
    from reference_model.cli import DEFAULT_CHECKPOINT, default_evaluate_dir
    from edge.cli import build_parser

    args = build_parser().parse_args(["train"])
    assert args.out is None  # resolved to runs/train/<config>.pt when it runs
    assert default_evaluate_dir(DEFAULT_CHECKPOINT) == Path("runs") / "evaluate" / "reference"
    assert default_evaluate_dir(tmp_path / "mine.pt") == tmp_path
    tracked = subprocess.run(["git", "ls-files", "reference_model/checkpoints"], capture_output=True, text=True,
                             cwd=ROOT).stdout.split()
    assert "reference_model/checkpoints/reference.pt" in tracked


def test_voxedge_version():
    from edge import __version__

    r = _voxedge("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"voxedge {__version__}"


def test_output_dir_removes_the_folders_it_created_when_the_command_fails(tmp_path):
    from edge.outputs import output_dir

    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(RuntimeError):
        with output_dir(kept / "a" / "b") as out:
            assert out.is_dir()
            raise RuntimeError("the work failed")
    assert kept.is_dir() and list(kept.iterdir()) == [], "created folders must go, the existing one stay"
    with pytest.raises(RuntimeError):
        with output_dir(kept / "c" / "d") as out:
            (out.parent / "written.txt").write_text("x")  # something landed: that folder stays
            raise RuntimeError("the work failed")
    assert (kept / "c" / "written.txt").is_file() and not (kept / "c" / "d").exists()
    with output_dir(kept / "e") as out:
        (out / "result.json").write_text("{}")
    assert (kept / "e" / "result.json").is_file()
