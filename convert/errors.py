"""Exceptions raised by the converter; each says what was wrong and what to do."""


class ConvertError(Exception):
    """A conversion step failed (bad checkpoint, factory, config or export)."""


class VerificationError(ConvertError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""
