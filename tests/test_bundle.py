"""The bundle contract: manifest validation, atomic writes, hash verification (torch-free)."""

from __future__ import annotations

import json

import pytest

from edge.bundle import (
    MANIFEST_NAME,
    BundleError,
    Heads,
    Manifest,
    ModelFile,
    Preprocessing,
    TensorSpec,
    load_bundle,
    write_bundle,
)

LABELS = ("stop", "go", "none")


def _manifest(**over) -> Manifest:
    fields = dict(
        inputs=(TensorSpec("image", "uint8", (-1, 120, 160, 3)),),
        outputs=(TensorSpec("intent_logits", "float32", (-1, 3)), TensorSpec("xy", "float32", (-1, 2))),
        preprocessing=Preprocessing(160, 120),
        heads=Heads("intent_logits", LABELS, target_point_output="xy"),
        files=(ModelFile("model.fp32.onnx", "", "fp32"),),
    )
    fields.update(over)
    return Manifest(**fields)


def _populate(tmp):
    (tmp / "model.fp32.onnx").write_bytes(b"onnx bytes")
    (tmp / "reports").mkdir()
    (tmp / "reports" / "r.json").write_text("{}")
    return _manifest()


def test_write_and_load_round_trip_with_hashes(tmp_path):
    bundle = write_bundle(tmp_path / "b", _populate)
    loaded = load_bundle(tmp_path / "b")
    assert loaded.manifest == bundle.manifest
    assert {f.path for f in loaded.manifest.files} == {"model.fp32.onnx", "reports/r.json"}
    assert loaded.model_path("fp32") == tmp_path / "b" / "model.fp32.onnx"
    with pytest.raises(BundleError, match="no int8 model"):
        loaded.model_path("int8")


def test_a_failed_step_leaves_no_bundle_and_keeps_the_old_one(tmp_path):
    def broken(tmp):
        (tmp / "model.fp32.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "b", broken)
    assert list(tmp_path.iterdir()) == []
    write_bundle(tmp_path / "b", _populate)
    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "b", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert (tmp_path / "b" / "model.fp32.onnx").read_bytes() == b"onnx bytes"
    load_bundle(tmp_path / "b")


def test_a_tampered_or_missing_file_is_refused(tmp_path):
    write_bundle(tmp_path / "b", _populate)
    (tmp_path / "b" / "model.fp32.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(tmp_path / "b")
    load_bundle(tmp_path / "b", verify=False)  # explicitly unchecked
    (tmp_path / "b" / "model.fp32.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path / "b")


def test_not_a_bundle_and_broken_manifests(tmp_path):
    with pytest.raises(BundleError, match="voxedge convert"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{broken")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "voxedge-bundle/1"}))
    with pytest.raises(BundleError, match="missing or has unexpected fields"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TensorSpec("x", "float64", (1,)), "dtype"),
        (lambda: TensorSpec("x", "float32", (0, 3)), "shape"),
        (lambda: _manifest(heads=Heads("missing", LABELS)), "do not declare|does not declare"),
        (lambda: _manifest(heads=Heads("intent_logits", ("a", "b"))), "2 intent labels"),
        (lambda: Heads("intent_logits", ("a", "a")), "unique"),
        (lambda: ModelFile("../escape.onnx", "x"), "inside the bundle"),
        (lambda: _manifest(format="other/9"), "convert the model again"),
    ],
)
def test_manifest_validation_messages(make, message):
    with pytest.raises(BundleError, match=message):
        make()
