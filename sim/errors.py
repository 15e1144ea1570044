"""Exceptions raised by the simulated world."""


class SimError(Exception):
    """Base class for errors raised by ``sim``."""


class EspeakNotFoundError(SimError):
    """The espeak-ng synthesizer is not installed or not on PATH."""


class SynthesisError(SimError):
    """espeak-ng ran but did not produce usable audio."""
