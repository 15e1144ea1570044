"""The conversion config: which factory builds the model, and its declared I/O and heads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from convert.errors import ConvertError
from edge.bundle import BundleError, Heads, Manifest, Preprocessing, TensorSpec
from edge.contract.audio import SAMPLE_RATE_HZ

RUNTIME_SAMPLE_RATE_HZ = SAMPLE_RATE_HZ  # the robot's microphone ring (edge.sensors.audio_ring) runs at this rate
TOLERANCE_KEYS = ("max_abs", "min_cosine")  # convert.export.DEFAULT_TOLERANCE

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
            config = cls(
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
        problems = config.problems()
        if problems:
            raise ConvertError(f"conversion config {path}: " + "; ".join(problems))
        return config

    def problems(self) -> list[str]:
        """What the robot's runtime could not feed or read (checked before any export, so a wrong config
        fails in seconds, not after conversion or on the robot)."""
        out: list[str] = []
        pre = self.preprocessing
        if len(self.inputs) != 2:
            return [f"the model must take exactly two inputs, the camera image then the audio; the config lists "
                    f"{[t.name for t in self.inputs]}"]
        image, audio = self.inputs
        want = ([-1, pre.image_height, pre.image_width, 3] if pre.image_layout == "NHWC"
                else [-1, 3, pre.image_height, pre.image_width])
        if image.dtype != "uint8" or list(image.shape) != want:
            out.append(f"the first input ({image.name!r}) is the camera image: uint8 of shape {want} "
                       f"({pre.image_layout}, from preprocessing), not {image.dtype} {list(image.shape)}")
        if audio.dtype != "float32" or list(audio.shape) != [-1, pre.audio_window_samples]:
            out.append(f"the second input ({audio.name!r}) is the audio: float32 of shape "
                       f"[-1, {pre.audio_window_samples}] (preprocessing.audio_window_samples), not "
                       f"{audio.dtype} {list(audio.shape)}")
        if pre.audio_sample_rate_hz != RUNTIME_SAMPLE_RATE_HZ:
            out.append(f"preprocessing.audio_sample_rate_hz is {pre.audio_sample_rate_hz}, but the robot's "
                       f"microphone pipeline delivers {RUNTIME_SAMPLE_RATE_HZ} Hz; train the model on "
                       f"{RUNTIME_SAMPLE_RATE_HZ} Hz audio")
        unknown = sorted(set(self.tolerance) - set(TOLERANCE_KEYS))
        if unknown:
            out.append(f"tolerance has unknown keys {unknown}; it takes {list(TOLERANCE_KEYS)}")
        try:  # the manifest's own checks: heads name declared outputs, one label per intent class
            self.manifest()
        except BundleError as exc:
            out.append(str(exc))
        return out

    def manifest(self, **fields) -> Manifest:
        """The bundle manifest of a model with this config's I/O, preprocessing and heads; ``fields`` are the
        rest (files, provenance, reports). Without them, what the gates and the quantizers read."""
        return Manifest(inputs=self.inputs, outputs=self.outputs, preprocessing=self.preprocessing, heads=self.heads,
                        **fields)

    def quant_settings(self):
        """The INT8 settings (what stays in floating point) this config asks for."""
        from calibration.errors import CalibrationError
        from calibration.quantize import QuantSettings

        try:
            return QuantSettings.from_dict(self.quantization)
        except (CalibrationError, TypeError) as exc:
            raise ConvertError(f"conversion config, quantization: {exc}") from exc
