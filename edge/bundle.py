"""The bundle: the self-describing directory a converter writes and the robot runs.

A bundle holds ``manifest.json``, the ONNX files (FP32, and FP16 / INT8 Q/DQ
variants), golden inputs and outputs, and reports; on the robot, ``engines/``.
The manifest says what the model takes and gives (names, dtypes, shapes with
-1 for dynamic axes, meaning), how to preprocess camera and microphone data,
which output is which head, and where every file came from (sha256 of each
file and of the source checkpoint, versions). This module is torch-free: the
runtime reads bundles with it, and ``convert`` writes them with it.

Bundles are written atomically: files go to a temporary directory beside the
destination, which is renamed into place only when the manifest is complete,
so a failed conversion leaves no bundle (and an existing one untouched).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES

BUNDLE_FORMAT = "voxedge-bundle/1"
MANIFEST_NAME = "manifest.json"
DTYPES = ("uint8", "int8", "int32", "int64", "float16", "float32", "bool")
PRECISIONS = ("fp32", "fp16", "int8")
RUNTIMES = ("onnxruntime-cpu",)  # model files made for one runtime; the others serve any
_HASH_CHUNK_BYTES = 1 << 20


def numpy_dtype(name: str):
    """The numpy dtype of a manifest dtype name."""
    import numpy as np

    return np.dtype(name)


class BundleError(Exception):
    """A bundle is missing, malformed, or its files do not match the manifest."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output."""

    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 marks a dynamic axis (the batch)
    meaning: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise BundleError(f"tensor name must be a non-empty string, got {self.name!r}")
        if self.dtype not in DTYPES:
            raise BundleError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        shape = tuple(self.shape)
        if not shape or any(not isinstance(d, int) or isinstance(d, bool) or (d < 1 and d != -1) for d in shape):
            raise BundleError(f"tensor {self.name!r}: shape {list(self.shape)} must list sizes >= 1, or -1 for dynamic")
        object.__setattr__(self, "shape", shape)


@dataclass(frozen=True)
class Preprocessing:
    """How the runtime turns camera frames and microphone audio into model inputs."""

    image_width: int
    image_height: int
    image_layout: str = "NHWC"
    color_order: str = "RGB"
    audio_sample_rate_hz: int = SAMPLE_RATE_HZ
    audio_window_samples: int = WINDOW_SAMPLES

    def __post_init__(self) -> None:
        if self.image_layout not in ("NHWC", "NCHW"):
            raise BundleError(f"image_layout {self.image_layout!r} must be NHWC or NCHW")
        if self.color_order not in ("RGB", "BGR"):
            raise BundleError(f"color_order {self.color_order!r} must be RGB or BGR")
        for name in ("image_width", "image_height", "audio_sample_rate_hz", "audio_window_samples"):
            if getattr(self, name) < 1:
                raise BundleError(f"preprocessing.{name} must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Heads:
    """Which output carries which decision, and the intent labels."""

    intent_output: str
    intent_labels: tuple[str, ...]
    target_point_output: str | None = None
    presence_output: str | None = None
    attention_output: str | None = None
    command_threshold: float = 0.0  # act on a command only at or above this probability

    def __post_init__(self) -> None:
        object.__setattr__(self, "intent_labels", tuple(self.intent_labels))
        if len(set(self.intent_labels)) != len(self.intent_labels) or not self.intent_labels:
            raise BundleError(f"intent_labels must be unique and non-empty, got {list(self.intent_labels)}")
        if not 0.0 <= self.command_threshold < 1.0:
            raise BundleError(f"command_threshold must be in [0, 1), got {self.command_threshold!r}")

    def output_names(self) -> list[str]:
        names = [self.intent_output, self.target_point_output, self.presence_output, self.attention_output]
        return [n for n in names if n]


@dataclass(frozen=True)
class ModelFile:
    """One file of the bundle with its hash."""

    path: str  # relative to the bundle directory
    sha256: str
    precision: str | None = None  # for model files: fp32, fp16 or int8
    # None: for any runtime; "onnxruntime-cpu": made for ONNX Runtime's int8 CPU kernels (edge.int8_numerics)
    runtime: str | None = None

    def __post_init__(self) -> None:
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise BundleError(f"bundle file path {self.path!r} must be relative and inside the bundle")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise BundleError(f"file {self.path!r}: precision {self.precision!r} is not one of {PRECISIONS}")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise BundleError(f"file {self.path!r}: runtime {self.runtime!r} is not one of {RUNTIMES} (or absent)")


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    heads: Heads
    files: tuple[ModelFile, ...] = ()
    provenance: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)
    engines: tuple[dict, ...] = ()  # {"path", "key": EngineKey fields, "build_s"}; see edge.engine
    format: str = BUNDLE_FORMAT

    def __post_init__(self) -> None:
        if self.format != BUNDLE_FORMAT:
            raise BundleError(f"bundle format {self.format!r} is not {BUNDLE_FORMAT!r}; convert the model again "
                              "with this version of voxedge")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "engines", tuple(self.engines))
        out_names = {o.name for o in self.outputs}
        missing = [n for n in self.heads.output_names() if n not in out_names]
        if missing:
            raise BundleError(f"heads name outputs {missing} that the model does not declare ({sorted(out_names)})")
        intent = next(o for o in self.outputs if o.name == self.heads.intent_output)
        if intent.shape[-1] != len(self.heads.intent_labels):
            raise BundleError(f"output {intent.name!r} has {intent.shape[-1]} classes but "
                              f"{len(self.heads.intent_labels)} intent labels are given")

    def file(self, precision: str, runtime: str | None = None) -> ModelFile:
        """The model file of a precision, or a BundleError listing the ones present.

        With ``runtime``, a file made for that runtime is preferred to one for any runtime.
        """
        found = [f for f in self.files if f.precision == precision]
        for f in sorted(found, key=lambda f: (f.runtime != runtime, f.runtime is not None)):
            return f
        have = [f.precision for f in self.files if f.precision]
        raise BundleError(f"the bundle has no {precision} model (it has: {have}); convert with that precision")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        try:
            return cls(
                inputs=tuple(TensorSpec(**t) for t in data["inputs"]),
                outputs=tuple(TensorSpec(**t) for t in data["outputs"]),
                preprocessing=Preprocessing(**data["preprocessing"]),
                heads=Heads(**data["heads"]),
                files=tuple(ModelFile(**f) for f in data.get("files", ())),
                provenance=dict(data.get("provenance", {})),
                reports=dict(data.get("reports", {})),
                engines=tuple(data.get("engines", ())),
                format=data.get("format", ""),
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest is missing or has unexpected fields ({exc})") from exc


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle directory."""

    path: Path
    manifest: Manifest

    def model_path(self, precision: str = "fp32", runtime: str | None = None) -> Path:
        return self.path / self.manifest.file(precision, runtime).path


def write_manifest(directory: Path, manifest: Manifest) -> None:
    data = json.dumps(manifest.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
    (directory / MANIFEST_NAME).write_bytes(data)


def hash_files(directory: Path, known: dict[str, ModelFile]) -> tuple[ModelFile, ...]:
    """A ModelFile for every file under ``directory`` except the manifest; ``known`` gives the precision and
    runtime of the model files by path."""
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and rel != MANIFEST_NAME:
            f = known.get(rel)
            out.append(ModelFile(rel, sha256_file(p), f.precision if f else None, f.runtime if f else None))
    return tuple(out)


def write_bundle(dest: str | Path, populate: Callable[[Path], Manifest]) -> Bundle:
    """Create or replace a bundle atomically (``edge.atomic_dir``).

    ``populate(tmpdir)`` writes the bundle's files into ``tmpdir`` and returns
    its manifest (``files`` may be left empty: every file is hashed here).
    Only when it returns is the directory swapped in for ``dest``; if it raises,
    nothing is left behind and an existing ``dest`` is untouched. A crash at any
    point leaves the old or the new bundle whole, and the next write or load
    cleans up after it.
    """
    from edge.atomic_dir import replace_dir

    def finish(tmp: Path) -> Manifest:
        manifest = populate(tmp)
        known = {f.path: f for f in manifest.files}
        manifest = Manifest(**{**vars(manifest), "files": hash_files(tmp, known)})
        write_manifest(tmp, manifest)
        return manifest

    return Bundle(Path(dest), replace_dir(dest, finish))


def _inside(root: Path, rel: str) -> Path:
    """``root / rel`` where it is a file of the bundle itself; BundleError for a symlink at any level below
    ``root``: a manifest must not make the robot load other files (``ModelFile`` already refuses absolute
    paths and ``..``)."""
    rel_path = Path(rel)
    p = root / rel_path
    for part in (p, *(root / q for q in rel_path.parents if q != Path("."))):
        if part.is_symlink():
            raise BundleError(f"bundle file {p} is (or lies under) a symbolic link; a bundle holds its own files: "
                              "copy them in (cp -L) or convert anew")
    return p


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read a bundle's manifest and (by default) check every file against its sha256."""
    from edge.atomic_dir import recover

    path = Path(path)
    recover(path)  # a replace of this bundle cut short by a crash: finish or roll it back first
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a voxedge bundle (no {MANIFEST_NAME}); create one with `voxedge convert`")
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is unreadable ({exc}); convert the model again") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    manifest = Manifest.from_dict(data)
    if verify:
        for f in manifest.files:
            p = _inside(path, f.path)
            if not p.is_file():
                raise BundleError(f"bundle file {p} is missing; copy the whole bundle again or convert anew")
            if sha256_file(p) != f.sha256:
                raise BundleError(f"bundle file {p} does not match its sha256 in the manifest (damaged or edited); "
                                  "copy the bundle again or convert anew")
    return Bundle(path, manifest)
