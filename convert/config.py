"""The conversion config: which factory builds the model, and its declared I/O and heads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from convert.errors import ConvertError
from edge.bundle import BundleError, Heads, Preprocessing, TensorSpec

REFERENCE_CONFIG = Path(__file__).resolve().parent / "configs" / "reference.json"


@dataclass(frozen=True)
class ConvertConfig:
    """A model's factory, I/O contract, preprocessing and heads (see convert/configs/reference.json)."""

    factory: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    heads: Heads
    tolerance: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)  # calibration.quantize.QuantSettings fields

    @classmethod
    def from_file(cls, path: str | Path) -> ConvertConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConvertError(f"conversion config {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConvertError(f"conversion config {path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConvertError(f"conversion config {path} must be a JSON object")
        unknown = set(raw) - {"factory", "inputs", "outputs", "preprocessing", "heads", "tolerance", "quantization"}
        if unknown:
            raise ConvertError(f"conversion config {path} has unknown keys {sorted(unknown)}")
        try:
            return cls(
                factory=raw["factory"],
                inputs=tuple(TensorSpec(**t) for t in raw["inputs"]),
                outputs=tuple(TensorSpec(**t) for t in raw["outputs"]),
                preprocessing=Preprocessing(**raw["preprocessing"]),
                heads=Heads(**raw["heads"]),
                tolerance=dict(raw.get("tolerance", {})),
                quantization=dict(raw.get("quantization", {})),
            )
        except KeyError as exc:
            raise ConvertError(f"conversion config {path} lacks {exc}") from exc
        except (TypeError, BundleError) as exc:
            raise ConvertError(f"conversion config {path}: {exc}") from exc

    def quant_settings(self):
        """The INT8 settings (what stays in floating point) this config asks for."""
        from calibration.errors import CalibrationError
        from calibration.quantize import QuantSettings

        try:
            return QuantSettings.from_dict(self.quantization)
        except (CalibrationError, TypeError) as exc:
            raise ConvertError(f"conversion config, quantization: {exc}") from exc
