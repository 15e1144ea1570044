"""Exceptions raised by calibration and quantization; each says what was wrong and what to do."""


class CalibrationError(Exception):
    """A calibration set or a quantization step is unusable."""
