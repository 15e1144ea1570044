"""Streaming resampling of mono audio blocks to the ring's rate.

A capture device delivers blocks at its own rate (44.1 or 48 kHz); the ring
holds 16 kHz. Resampling block by block with a stateless function (e.g.
``scipy.signal.resample_poly`` per block) would restart the filter at every
block edge and leave clicks every 20 ms, so the filter state must carry over
between blocks. We use libsoxr's streaming resampler (python ``soxr``): it
keeps that state, handles any rate ratio (44.1 kHz -> 16 kHz is 160/441), and
compensates its own filter delay, so output sample ``k`` corresponds exactly
to input position ``k * in_rate / out_rate``; what it holds back shows as
fewer output samples, which ``StreamResampler`` accounts for when stamping.
"""

from __future__ import annotations

import numpy as np

from edge.contract.wav import RESAMPLE_QUALITY, resample  # noqa: F401 (re-exported: the one-shot resampler)
from edge.sensors.errors import MicrophoneConfigError, MicrophoneError

__all__ = ["RESAMPLE_QUALITY", "StreamResampler", "resample"]

SOXR_INSTALL_HINT = "install it with `pip install soxr` (part of voxedge[edge])"


def _soxr():
    try:
        import soxr
    except ImportError as exc:
        raise MicrophoneError(f"resampling audio needs the soxr package; {SOXR_INSTALL_HINT}") from exc
    return soxr


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise MicrophoneConfigError(f"{name}={rate!r}; use a positive int sample rate in Hz")
    return int(rate)


class StreamResampler:
    """Resamples consecutive mono blocks, keeping filter state across them.

    Attributes:
        in_total: input samples consumed so far.
        out_total: output samples produced so far.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = _check_rate("in_rate", in_rate)
        self.out_rate = _check_rate("out_rate", out_rate)
        self.in_total = 0
        self.out_total = 0
        self._stream = None
        if self.in_rate != self.out_rate:
            self._stream = _soxr().ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed one block, return the output that is ready (may be empty while the filter fills)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 1:
            raise MicrophoneError(f"StreamResampler takes 1-D mono blocks, got shape {x.shape}")
        self.in_total += x.size
        y = x.copy() if self._stream is None else np.asarray(self._stream.resample_chunk(x), dtype=np.float32)
        self.out_total += y.size
        return y

    def last_output_time(self, t_last_input: float) -> float:
        """Capture time of the newest output sample, given that of the newest input sample.

        Output sample ``k`` sits at input position ``k * in_rate / out_rate``;
        the newest input sample is at position ``in_total - 1``.
        """
        pos = (self.out_total - 1) * self.in_rate / self.out_rate
        return t_last_input - (self.in_total - 1 - pos) / self.in_rate
