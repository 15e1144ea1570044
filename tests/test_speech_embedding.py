"""The pretrained speech front end: the torch port against the original graph, weights, licence, export."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest
import torch

from reference_model import speech_embedding as se
from reference_model.model import ModelConfig, ReferenceModel

WINDOW = 32000


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics in noise: enough structure to make every layer work."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / 16000
    f0 = rng.uniform(90, 220, size=(n, 1))
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5, size=(n, 1)) * t)
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal((n, WINDOW))).astype(np.float32)


def test_mel_front_end_matches_a_numpy_fft_reference():
    audio = _speechlike(3)
    ours = se.SpeechMelFrontEnd()(torch.from_numpy(audio)).numpy()
    assert ours.shape == (3, 1, se.n_frames(WINDOW), se.N_MELS) == (3, 1, 197, 32)
    np.testing.assert_allclose(ours[:, 0], se.mel_numpy(audio), atol=2e-3)


def test_mel_filters_cover_60_to_3800_hz_in_order():
    t = np.arange(WINDOW) / 16000
    low = se.mel_numpy(np.sin(2 * np.pi * 150 * t)[None])[0, 100]
    high = se.mel_numpy(np.sin(2 * np.pi * 3000 * t)[None])[0, 100]
    assert int(low.argmax()) < 5 and int(high.argmax()) > 25
    fb = se.mel_filterbank()
    assert fb.shape == (257, 32)
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all() and peaks[0] * 31.25 >= 60 and peaks[-1] * 31.25 <= 3800


def test_the_range_is_per_utterance_not_per_batch():
    audio = _speechlike(2)
    audio[1] *= 1e-3  # a much quieter utterance beside a loud one
    together = se.SpeechMelFrontEnd()(torch.from_numpy(audio))
    alone = se.SpeechMelFrontEnd()(torch.from_numpy(audio[1:]))
    torch.testing.assert_close(together[1:], alone, atol=1e-4, rtol=0)


def test_the_torch_port_matches_the_original_onnx_graph_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    audio = _speechlike(2, seed=1)
    fe, net = se.SpeechMelFrontEnd(), se.SpeechEmbedding()
    net.load_pretrained()
    with torch.no_grad():
        mel = fe(torch.from_numpy(audio))
        ours = net(mel).numpy()  # [2, 96, 16]: one pass over the whole window
    assert ours.shape == (2, se.EMBED_DIM, se.n_embeddings(WINDOW)) == (2, 96, 16)
    session = ort.InferenceSession(str(se.EMBEDDING_ONNX), providers=["CPUExecutionProvider"])
    for b in range(2):
        frames = mel[b, 0].numpy()
        # openWakeWord's way: 76-frame windows at an 8-frame step, each through the graph
        windows = np.stack([frames[i: i + se.WINDOW_FRAMES]
                            for i in range(0, len(frames) - se.WINDOW_FRAMES + 1, se.FRAME_STEP)])
        ref = session.run(None, {"input_1": windows[..., None].astype(np.float32)})[0].reshape(len(windows), -1)
        scale = np.abs(ref).max()
        assert scale > 1.0  # the network produced something, not zeros
        np.testing.assert_allclose(ours[b].T, ref, atol=1e-5 * scale * 10)


def test_the_committed_weights_are_pinned(tmp_path):
    assert hashlib.sha256(se.EMBEDDING_ONNX.read_bytes()).hexdigest() == se.EMBEDDING_SHA256
    assert (se.PRETRAINED_DIR / se.LICENSE_FILE).read_text().startswith(" " * 33 + "Apache License")
    changed = tmp_path / "speech_embedding.onnx"
    blob = bytearray(se.EMBEDDING_ONNX.read_bytes())
    blob[-100] ^= 0xFF
    changed.write_bytes(bytes(blob))
    with pytest.raises(se.PretrainedWeightsError, match="not the pinned"):
        se.SpeechEmbedding().load_pretrained(changed)
    with pytest.raises(se.PretrainedWeightsError, match="missing"):
        se.SpeechEmbedding().load_pretrained(tmp_path / "absent.onnx")


def test_extract_reproduces_the_committed_file_from_a_wheel(tmp_path, capsys):
    wheel = tmp_path / "openwakeword-0.5.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(se.WHEEL_MEMBER, se.EMBEDDING_ONNX.read_bytes())
    out = tmp_path / "out.onnx"
    assert se.main(["extract", str(wheel), "--out", str(out)]) == 0
    assert out.read_bytes() == se.EMBEDDING_ONNX.read_bytes()
    other = tmp_path / "openwakeword-0.6.0-py3-none-any.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr(se.WHEEL_MEMBER, b"not the model")
    assert se.main(["extract", str(other), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "use openwakeword 0.5.1" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_the_speech_embedding_is_frozen_and_stays_in_eval_mode():
    model = ReferenceModel().train()
    enc = model.audio_encoder
    assert not any(p.requires_grad for p in enc.embedding.parameters())
    assert all(p.requires_grad for p in enc.blocks.parameters())
    assert not enc.embedding.training and enc.blocks.training
    # the checkpoint carries the pretrained weights: a model built without them loads them back
    fresh = ReferenceModel(pretrained=False)
    fresh.load_state_dict(model.state_dict())
    a = torch.from_numpy(_speechlike(1))
    with torch.no_grad():
        torch.testing.assert_close(fresh.audio_encoder.features(a), enc.features(a))


def test_features_then_head_is_the_same_as_the_whole_encoder():
    model = ReferenceModel().eval()
    audio = torch.from_numpy(_speechlike(2))
    image = torch.randint(0, 256, (2, 120, 160, 3), dtype=torch.uint8)
    with torch.no_grad():
        whole = model.forward_train(image, audio)[0]
        split = model.forward_train(image, audio_features=model.audio_encoder.features(audio))[0]
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b)


def test_fine_tuning_splits_the_same_network_below_the_trainable_blocks():
    from reference_model.errors import ConfigError

    net = se.SpeechEmbedding()
    net.load_pretrained()
    mel = se.SpeechMelFrontEnd()(torch.from_numpy(_speechlike(2)))
    with torch.no_grad():
        whole = net(mel)
        for blocks in range(se.N_BLOCKS + 1):
            hidden = net.lower(mel, blocks)
            torch.testing.assert_close(net.upper(hidden, blocks), whole)
            net.unfreeze(blocks)
            trainable = {name.split(".")[1] for name, p in net.named_parameters() if p.requires_grad}
            assert trainable == {str(i) for i in range(net.split_index(blocks), len(net.net))
                                 if any(True for _ in net.net[i].parameters())}, blocks
    # one block: the activations after the fourth pool (time 40, mel 2) are what training caches
    assert tuple(net.lower(mel, 1).shape) == (2, 96, 40, 2)
    assert net.split_index(se.N_BLOCKS) == 0 and net.split_index(0) == len(net.net)
    with pytest.raises(ValueError, match="trainable blocks"):
        net.split_index(se.N_BLOCKS + 1)
    with pytest.raises(ConfigError, match="finetune_blocks"):
        ModelConfig(finetune_blocks=se.N_BLOCKS + 1)
    with pytest.raises(ConfigError, match="speech_embedding front end only"):
        ModelConfig(audio_frontend="logmel", finetune_blocks=1)


def test_a_fine_tuned_model_has_the_frozen_models_graph_and_trains_only_its_last_block():
    frozen, tuned = ReferenceModel(), ReferenceModel(ModelConfig(finetune_blocks=1))
    # the same parameters under the same names: the exported graph and the checkpoint layout do not change
    assert [n for n, _ in frozen.named_parameters()] == [n for n, _ in tuned.named_parameters()]
    tuned.load_state_dict(frozen.state_dict())
    audio = torch.from_numpy(_speechlike(2))
    image = torch.randint(0, 256, (2, 120, 160, 3), dtype=torch.uint8)
    with torch.no_grad():
        for a, b in zip(frozen.eval()(image, audio), tuned.eval()(image, audio)):
            torch.testing.assert_close(a, b)
        split = tuned.forward_train(image, audio_features=tuned.audio_encoder.features(audio))[0]
    for a, b in zip(tuned(image, audio), split):
        torch.testing.assert_close(a, b)
    cut = tuned.audio_encoder.embedding.split_index(1)
    for i, layer in enumerate(tuned.audio_encoder.embedding.net):
        assert all(p.requires_grad == (i >= cut) for p in layer.parameters()), i


def test_notice_names_the_licence_and_the_source():
    text = se.notice_text()
    assert "Apache License, Version 2.0" in text and "openwakeword 0.5.1" in text and se.EMBEDDING_SHA256 in text
    assert "CC BY-NC-SA 4.0) are not used" in text


def test_dc_offset_silence_and_clipping_are_harmless():
    model = ReferenceModel().eval()
    enc = model.audio_encoder
    audio = _speechlike(1)
    with torch.no_grad():
        clean = enc.features(torch.from_numpy(audio))
        offset = enc.features(torch.from_numpy(audio + 0.1))  # a microphone's DC offset
        torch.testing.assert_close(offset, clean, atol=1e-3 * float(clean.abs().max()), rtol=0)
        for odd in (np.zeros_like(audio), np.clip(audio * 50, -1, 1), np.full_like(audio, 0.5)):
            out = model(torch.zeros(1, 120, 160, 3, dtype=torch.uint8), torch.from_numpy(odd))
            assert all(torch.isfinite(t).all() for t in out)
