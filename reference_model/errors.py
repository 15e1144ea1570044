"""Exceptions raised by the reference-model tooling (training, evaluation, datasets).

Each says what was wrong and what to do; the ``voxedge`` CLI prints them
without a traceback.
"""


class ReferenceModelError(Exception):
    """Base class for errors raised by ``reference_model``."""


class ConfigError(ReferenceModelError, ValueError):
    """A training or data config is malformed or inconsistent."""


class CheckpointError(ReferenceModelError, ValueError):
    """A checkpoint is missing, unreadable or written for another model version."""
