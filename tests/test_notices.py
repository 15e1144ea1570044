"""Licences of pretrained parts travel with the bundle (NOTICE, licence text, manifest provenance)."""

from __future__ import annotations

import json

import pytest
import torch

from convert.errors import ConvertError
from convert.notices import third_party_parts, write_notices
from reference_model.model import ModelConfig, ReferenceModel
from reference_model.speech_embedding import EMBEDDING_SHA256


def test_a_bundle_of_the_speech_embedding_model_carries_its_notice_and_licence(tmp_path):
    from convert.pipeline import convert

    model = ReferenceModel(ModelConfig(audio_frontend="speech_embedding"))
    checkpoint = tmp_path / "se.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": model.config.to_dict()}, checkpoint)
    bundle = convert(checkpoint, tmp_path / "bundle", log=lambda *_: None).path
    notice = (bundle / "NOTICE").read_text()
    assert "speech_embedding" in notice and "Apache License, Version 2.0" in notice
    assert (bundle / "LICENSE-Apache-2.0.txt").read_text().lstrip().startswith("Apache License")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (part,) = manifest["provenance"]["third_party"]
    assert part["license"] == "Apache-2.0" and part["sha256"] == EMBEDDING_SHA256
    assert part["license_file"] == "LICENSE-Apache-2.0.txt" and part["notice_file"] == "NOTICE"


def test_a_model_without_pretrained_parts_adds_nothing(tmp_path):
    assert third_party_parts(ReferenceModel(ModelConfig(audio_frontend="logmel"))) == []
    assert third_party_parts(torch.nn.Linear(2, 2)) == []
    assert write_notices([], tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_an_incomplete_entry_is_refused(tmp_path):
    class Model(torch.nn.Module):
        def third_party(self):
            return [{"name": "weights", "author": "someone", "license": "MIT", "source": "somewhere",
                     "sha256": "0" * 64, "notice": "", "license_file": str(tmp_path / "LICENSE")}]

    with pytest.raises(ConvertError, match="lacks \\['notice'\\]"):
        third_party_parts(Model())
