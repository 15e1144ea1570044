"""A bundle as a Triton Inference Server model: ``config.pbtxt`` (and its JSON form) from the manifest.

``voxedge export-triton BUNDLE OUT`` (``edge.triton_cli``) writes a model repository for a fleet's
GPU servers::

    OUT/voxedge/config.pbtxt     platform, batching, inputs and outputs as the manifest declares them
    OUT/voxedge/labels.txt       the intent labels (the intent output's label file)
    OUT/voxedge/1/model.onnx     the bundle's model file of the chosen precision, byte for byte

and the robot's own service answers ``GET /v2/models/<m>/config`` with the same configuration as
JSON (``model_config``): the ModelConfig message with its protobuf field names, as Triton's HTTP
endpoint returns it. This module is torch-free and needs neither tritonclient nor protobuf: the text
format is written here, and the tests parse it with the ``ModelConfig`` protobuf that tritonclient ships.

Triton's ``dims`` leave out the batch axis when ``max_batch_size`` > 0: a manifest whose every tensor
starts with the dynamic axis (-1) is exported batched; any other is exported with ``max_batch_size: 0``
and its full shapes. The ONNX Runtime backend runs the model through its TensorRT execution
provider (``optimization.execution_accelerators``) at the exported precision: the INT8 file is the
bundle's full-range Q/DQ model made for TensorRT (not the 7-bit one for ONNX Runtime's CPU kernels),
and TensorRT takes its scales from the Q/DQ nodes, so no calibration table is involved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edge.bundle import PRECISIONS, BundleError, Manifest, load_bundle, sha256_file

MODEL_NAME = "voxedge"
MODEL_VERSION = "1"
PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}
DEFAULT_MAX_BATCH = 8  # as ``voxedge build-engine``
DEFAULT_QUEUE_DELAY_US = 100  # how long Triton's dynamic batcher waits to fill a batch
DEFAULT_WORKSPACE_BYTES = 1 << 30
TRITON_DTYPES = {"uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                 "float16": "TYPE_FP16", "float32": "TYPE_FP32", "bool": "TYPE_BOOL"}
TRT_PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
CONFIG_NAME = "config.pbtxt"
LABELS_NAME = "labels.txt"
MODEL_FILE = "model.onnx"


class Enum(str):
    """A protobuf enum value: written bare in the text format, as a string in JSON."""


class Map(dict):
    """A protobuf map field: ``{key: value}`` in JSON, repeated ``field { key: ... value: ... }`` in text."""


def batched(manifest: Manifest) -> bool:
    """Whether every input and output has the dynamic batch axis first (Triton may then batch requests)."""
    return all(t.shape[0] == -1 for t in (*manifest.inputs, *manifest.outputs))


def _tensors(specs, batch: bool, labels: dict[str, str] | None = None) -> list[dict]:
    out = []
    for t in specs:
        dims = list(t.shape[1:] if batch else t.shape)
        entry = {"name": t.name, "data_type": Enum(TRITON_DTYPES[t.dtype]), "dims": dims or [1]}
        if not dims:  # only the batch axis: Triton wants dims [1] and a reshape to no dims at all
            entry["reshape"] = {"shape": []}
        if labels and t.name in labels:
            entry["label_filename"] = labels[t.name]
        out.append(entry)
    return out


def model_config(manifest: Manifest, *, name: str = MODEL_NAME, precision: str = "fp32",
                 max_batch: int = DEFAULT_MAX_BATCH, platform: str = "onnxruntime_onnx", gpu: bool = True,
                 dynamic_batching: bool = True, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                 model_file: str | None = None, model_sha256: str | None = None,
                 label_filename: str | None = None) -> dict:
    """The Triton ModelConfig of a bundle's model as a dict of protobuf field names (its JSON form).

    ``gpu``: instances on the GPU, and (for ``onnxruntime_onnx``) the TensorRT execution accelerator at
    ``precision``; else CPU instances and no accelerator. ``max_batch`` is ignored (0) for a manifest
    whose tensors have no batch axis.
    """
    if platform not in PLATFORMS:
        raise BundleError(f"platform {platform!r} is not one of {PLATFORMS}")
    if precision not in PRECISIONS:
        raise BundleError(f"precision {precision!r} is not one of {PRECISIONS}")
    if max_batch < 1:
        raise BundleError(f"the largest batch must be at least 1, got {max_batch}")
    batch = batched(manifest)
    labels = {manifest.heads.intent_output: label_filename} if label_filename else None
    config: dict = {
        "name": name,
        "platform": platform,
        "backend": BACKENDS[platform],
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": max_batch if batch else 0,
        "input": _tensors(manifest.inputs, batch),
        "output": _tensors(manifest.outputs, batch, labels),
        "instance_group": [{"count": 1, "kind": Enum("KIND_GPU" if gpu else "KIND_CPU")}],
    }
    if batch and dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": queue_delay_us}
    if gpu and platform == "onnxruntime_onnx":
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{
            "name": "tensorrt",
            "parameters": Map({"precision_mode": TRT_PRECISION_MODES[precision],
                               "max_workspace_size_bytes": str(DEFAULT_WORKSPACE_BYTES)}),
        }]}}
    params = {"voxedge_precision": precision}
    if model_file:
        params["voxedge_model_file"] = model_file
    if model_sha256:
        params["voxedge_model_sha256"] = model_sha256
    config["parameters"] = Map({k: {"string_value": v} for k, v in params.items()})
    return config


# -- protobuf text format -----------------------------------------------------------------------

def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted string with C-style escapes, as the text format reads them
    raise TypeError(f"no text format for {value!r}")


def _fields(message: dict, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, Map):
            for k, v in value.items():
                lines.append(f"{pad}{key} {{")
                lines.append(f"{pad}  key: {_scalar(k)}")
                if isinstance(v, dict):
                    lines += [f"{pad}  value {{", *_fields(v, indent + 2), f"{pad}  }}"]
                else:
                    lines.append(f"{pad}  value: {_scalar(v)}")
                lines.append(f"{pad}}}")
        elif isinstance(value, dict):
            lines += [f"{pad}{key} {{", *_fields(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, v in enumerate(value):
                lines += [f"{pad}  {{", *_fields(v, indent + 2), f"{pad}  }}" + ("," if i < len(value) - 1 else "")]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def to_pbtxt(config: dict, header: str = "") -> str:
    """A ``model_config`` dict in protobuf text format (Triton's ``config.pbtxt``)."""
    comments = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*comments, *_fields(config, 0)]) + "\n"


# -- the model repository -----------------------------------------------------------------------

def export_triton(bundle_dir: str | Path, out: str | Path, *, precision: str = "fp32",
                  max_batch: int = DEFAULT_MAX_BATCH, name: str = MODEL_NAME, force: bool = False,
                  queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> Path:
    """Write the model folder ``out/name`` of the Triton model repository ``out`` atomically; returns it.

    A repository holds many models: only ``out/name`` is written, and it must not exist, be empty, or be
    an earlier export (it is then replaced whole); anything else is refused (``OutputError``) unless
    ``force``. The repository's other models are never touched.
    """
    from edge.atomic_dir import replace_dir
    from edge.outputs import OutputError, claim_output, output_dir

    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise OutputError(f"--name {name!r} is not a usable model folder name")
    if precision not in PRECISIONS:
        raise BundleError(f"precision {precision!r} is not one of {PRECISIONS}")
    bundle = load_bundle(bundle_dir)  # every file checked against its sha256
    source = bundle.manifest.file(precision)  # int8: the full-range Q/DQ model made for TensorRT
    manifest = bundle.manifest
    config = model_config(manifest, name=name, precision=precision, max_batch=max_batch,
                          queue_delay_us=queue_delay_us, model_file=source.path, model_sha256=source.sha256,
                          label_filename=LABELS_NAME)
    header = (f"Triton model configuration of the voxedge bundle {bundle.path.name} ({precision}: {source.path}),\n"
              f"written by `voxedge export-triton`. Inputs, outputs and datatypes come from its manifest.json.")

    def populate(model_dir: Path) -> None:
        (model_dir / MODEL_VERSION).mkdir(parents=True)
        target = model_dir / MODEL_VERSION / MODEL_FILE
        shutil.copyfile(bundle.path / source.path, target)
        if sha256_file(target) != source.sha256:
            raise BundleError(f"{bundle.path / source.path} changed while it was copied; export again")
        (model_dir / LABELS_NAME).write_text("".join(f"{label}\n" for label in manifest.heads.intent_labels))
        (model_dir / CONFIG_NAME).write_text(to_pbtxt(config, header))

    with output_dir(out, "the model repository") as repository:  # created folders go again if this fails
        claim_output(repository / name, CONFIG_NAME, "model folder written by voxedge export-triton", force=force,
                     flag="the model folder")
        replace_dir(repository / name, populate)
    return Path(out) / name
