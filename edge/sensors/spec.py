"""Which sensor to build: a backend name (``CAMERA_TYPES`` / ``MICROPHONE_TYPES``) and its settings, typed.

``edge.settings`` makes these from source names (``edge.sources``); the
runtime hands them to ``make_camera`` / ``make_microphone``. A plain dict with a
``"type"`` key, the older form, is still accepted by ``SensorSpec.of``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class SensorSpec:
    type: str  # "opencv", "sim" (cameras); "pyaudio", "wav", "sim" (microphones)
    options: Mapping[str, Any] = field(default_factory=dict)  # the backend config class's fields

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @classmethod
    def of(cls, value: SensorSpec | Mapping[str, Any]) -> SensorSpec:
        if isinstance(value, SensorSpec):
            return value
        if isinstance(value, Mapping) and isinstance(value.get("type"), str):
            return cls(value["type"], {k: v for k, v in value.items() if k != "type"})
        raise TypeError(f"a sensor is a SensorSpec or a dict with a 'type' key, not {value!r}")
