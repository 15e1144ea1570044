"""Reference model: front end, shapes, fusion wiring, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_model.frontend import N_FRAMES, N_MELS, WINDOW_SAMPLES, LogMelFrontEnd, log_mel_numpy
from reference_model.model import OUTPUT_NAMES, ModelConfig, ReferenceModel, build_model, load_checkpoint
from sim.commands import INTENTS


def test_conv1d_dft_front_end_matches_numpy_fft():
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW_SAMPLES) / 16000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(WINDOW_SAMPLES)])
    ours = LogMelFrontEnd()(torch.from_numpy(audio.astype(np.float32))).numpy()
    ref = log_mel_numpy(audio)
    assert ours.shape == (2, N_MELS, N_FRAMES)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_front_end_puts_a_tone_in_the_right_mel_band():
    t = np.arange(WINDOW_SAMPLES) / 16000
    low = LogMelFrontEnd()(torch.tensor(np.sin(2 * np.pi * 300 * t)[None], dtype=torch.float32))
    high = LogMelFrontEnd()(torch.tensor(np.sin(2 * np.pi * 4000 * t)[None], dtype=torch.float32))
    assert int(low[0, :, 100].argmax()) < 10 < 25 < int(high[0, :, 100].argmax())


def test_forward_shapes_and_output_ranges():
    model = ReferenceModel().eval()
    image = torch.randint(0, 256, (3, 120, 160, 3), dtype=torch.uint8)
    audio = torch.randn(3, WINDOW_SAMPLES) * 0.1
    out = model.predict(image, audio)
    assert list(out) == list(OUTPUT_NAMES)
    assert out["intent_logits"].shape == (3, len(INTENTS))
    assert out["target_xy"].shape == (3, 2)
    assert out["target_logit"].shape == (3,)
    assert out["attention"].shape == (3, 15, 20)
    assert torch.allclose(out["attention"].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert ((out["target_xy"] >= 0) & (out["target_xy"] <= 1)).all()


def test_fine_grid_and_training_heads():
    model = build_model({"grid_stride": 4}).eval()
    image = torch.randint(0, 256, (2, 120, 160, 3), dtype=torch.uint8)
    audio = torch.randn(2, WINDOW_SAMPLES) * 0.1
    (logits, xy, presence, attention), object_logits, cell_logits = model.forward_train(image, audio)
    assert attention.shape == (2, 30, 40)
    assert object_logits.shape == (2, 12)
    assert cell_logits.shape == (2, 13, 30, 40)
    # the object and cell-type logits are intermediate, not outputs of the model
    assert [t.shape for t in model(image, audio)] == [logits.shape, xy.shape, presence.shape, attention.shape]


def test_target_depends_on_both_image_and_audio():
    torch.manual_seed(0)
    model = ReferenceModel().eval()
    image = torch.randint(0, 256, (2, 120, 160, 3), dtype=torch.uint8)
    audio = torch.randn(2, WINDOW_SAMPLES) * 0.1
    base = model.predict(image, audio)["attention"]
    other_audio = model.predict(image, audio.flip(0))["attention"]
    other_image = model.predict(image.flip(0), audio)["attention"]
    assert not torch.allclose(base, other_audio)
    assert not torch.allclose(base, other_image)


def test_model_config_rejects_non_4_3_images():
    with pytest.raises(ValueError, match="4:3"):
        ModelConfig(image_height=120, image_width=200)
    with pytest.raises(ValueError, match="grid_stride"):
        ModelConfig(grid_stride=16)


def test_checkpoint_round_trip(tmp_path):
    model = build_model({"image_channels": [8, 16, 32], "embed_dim": 64})
    path = tmp_path / "m.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": model.config.to_dict()}, path)
    loaded, meta = load_checkpoint(path)
    assert meta["model_config"]["embed_dim"] == 64
    image = torch.randint(0, 256, (1, 120, 160, 3), dtype=torch.uint8)
    audio = torch.randn(1, WINDOW_SAMPLES) * 0.1
    model.eval()
    for a, b in zip(model(image, audio), loaded(image, audio)):
        assert torch.equal(a, b)


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(ValueError, match="voxedge train"):
        load_checkpoint(path)


@pytest.mark.requires_cuda
def test_cuda_forward_matches_cpu():
    torch.manual_seed(0)
    model = ReferenceModel().eval()
    image = torch.randint(0, 256, (4, 120, 160, 3), dtype=torch.uint8)
    audio = torch.randn(4, WINDOW_SAMPLES) * 0.1
    cpu = model.predict(image, audio)
    gpu = model.to("cuda").predict(image.cuda(), audio.cuda())
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], atol=1e-3, rtol=1e-3)
