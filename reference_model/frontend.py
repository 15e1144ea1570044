"""Log-mel audio front end built from a fixed Conv1d DFT basis.

TensorRT has no DFT operator, so the STFT is a strided Conv1d whose weights are
windowed cosine and sine rows; power, mel projection and log follow. The whole
front end exports to ONNX as Conv/Mul/Add/MatMul/Log and stays in FP32 when the
rest of the model is quantized. ``log_mel_numpy`` is the reference used by tests.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES  # 16 kHz; 2.0 s in

N_FFT = 400  # 25 ms analysis window
HOP = 160  # 10 ms hop
N_BINS = N_FFT // 2 + 1
N_MELS = 40
F_MIN_HZ = 20.0
F_MAX_HZ = 7600.0
LOG_FLOOR = 1e-6
N_FRAMES = 1 + (WINDOW_SAMPLES - N_FFT) // HOP  # 198, no centre padding


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Triangular HTK-style mel filters, shape [n_mels, n_fft // 2 + 1]."""
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN_HZ), _hz_to_mel(F_MAX_HZ), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def dft_basis(n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed real and imaginary DFT rows, each [n_fft // 2 + 1, n_fft]."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # periodic Hann
    phase = 2.0 * np.pi * k * n[None, :] / n_fft
    return (window * np.cos(phase)).astype(np.float32), (-window * np.sin(phase)).astype(np.float32)


def log_mel_numpy(audio: np.ndarray) -> np.ndarray:
    """Reference log-mel of a [N, samples] batch with numpy's FFT, [N, N_MELS, frames]."""
    audio = np.asarray(audio, dtype=np.float64)
    n_frames = 1 + (audio.shape[-1] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    spec = np.fft.rfft(audio[:, idx] * window, axis=-1)  # [N, frames, bins]
    mel = np.abs(spec) ** 2 @ mel_filterbank().T.astype(np.float64)
    return np.log(mel + LOG_FLOOR).transpose(0, 2, 1).astype(np.float32)


class LogMelFrontEnd(nn.Module):
    """[N, samples] float32 waveform -> [N, N_MELS, frames] log-mel, no trainable weights."""

    def __init__(self) -> None:
        super().__init__()
        real, imag = dft_basis()
        basis = np.concatenate([real, imag], axis=0)[:, None, :]  # [2*bins, 1, n_fft]
        self.register_buffer("dft", torch.from_numpy(basis), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank()), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(audio.unsqueeze(1), self.dft, stride=HOP)  # [N, 2*bins, frames]
        real, imag = spec[:, :N_BINS], spec[:, N_BINS:]
        power = real * real + imag * imag
        mel = torch.matmul(self.mel, power)  # [N, mels, frames]
        return torch.log(mel + LOG_FLOOR)
