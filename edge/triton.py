"""A bundle as a Triton Inference Server model: ``config.pbtxt`` (and its JSON form) from the manifest.

``voxedge export-triton BUNDLE OUT`` (``edge.triton_cli``) writes a model repository for a fleet's
GPU servers::

    OUT/voxedge/config.pbtxt     platform, batching, inputs and outputs as the manifest declares them
    OUT/voxedge/labels.txt       the intent labels (the intent output's label file)
    OUT/voxedge/1/model.onnx     the bundle's model file of the chosen precision, byte for byte
    OUT/voxedge/1/model.plan     or, with ``--platform tensorrt_plan``, a TensorRT engine the bundle holds

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

``tensorrt_plan`` exports an engine ``voxedge build-engine`` built into the bundle (checked there against the
golden outputs and registered in the manifest with its key). A plan runs only on the GPU model and TensorRT
version it was built with, so it is built on the server itself (or one like it); the export refuses DLA
engines, engines built from another model file, and a ``max_batch`` beyond the engine's batch profile, and
records the key's TensorRT version and GPU in the configuration's parameters.
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
PLAN_FILE = "model.plan"  # Triton's default model file name for tensorrt_plan
MODEL_FILES = {"onnxruntime_onnx": MODEL_FILE, "tensorrt_plan": PLAN_FILE}


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
                 label_filename: str | None = None, extra_parameters: dict[str, str] | None = None) -> dict:
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
    params.update(extra_parameters or {})
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

def pick_engine(bundle, precision: str, engine: str | Path | None = None):
    """The bundle's registered TensorRT engine of ``precision`` for a server's GPU: (manifest entry, EngineKey).

    ``engine``: the plan file (a path, or its path inside the bundle) when the bundle holds several.
    Raises ``BundleError`` saying what to build or choose.
    """
    from edge.engine import EngineKey, engine_model

    entries = [(e, EngineKey.from_dict(e["key"])) for e in bundle.manifest.engines]
    if engine is not None:
        wanted = Path(engine)
        wanted = wanted if wanted.is_absolute() else (Path.cwd() / wanted)
        chosen = [(e, k) for e, k in entries
                  if (bundle.path / e["path"]).resolve() == wanted.resolve() or e["path"] == str(engine)]
        if not chosen:
            listed = ", ".join(e["path"] for e, _ in entries) or "none"
            raise BundleError(f"--engine {engine}: not an engine this bundle registered (voxedge build-engine checks "
                              f"an engine against the golden outputs before it registers it); registered: {listed}")
        entries = chosen
    gpu = [(e, k) for e, k in entries if k.precision == precision and k.dla_core is None]
    build = (f"build one on the server's GPU with: voxedge build-engine {bundle.path} --precision {precision} "
             f"--max-batch N (a plan runs only on the GPU model and TensorRT version it was built with), or export "
             "--platform onnxruntime_onnx")
    if not gpu:
        dla = [e["path"] for e, k in entries if k.precision == precision and k.dla_core is not None]
        had = f" (only DLA engines: {', '.join(dla)}; Triton runs plans on the GPU)" if dla else ""
        raise BundleError(f"the bundle has no {precision} TensorRT engine for a GPU{had}: {build}")
    if len(gpu) > 1:
        listed = "; ".join(f"{e['path']} ({k.device_name or '?'}, compute capability {k.compute_capability}, "
                           f"TensorRT {k.tensorrt_version})" for e, k in gpu)
        raise BundleError(f"the bundle holds {len(gpu)} {precision} engines for GPUs: {listed}; choose the one "
                          "built on the server's GPU with --engine PLAN")
    entry, key = gpu[0]
    source = engine_model(bundle, precision, key.typing or "weak")
    if key.onnx_sha256 != source.sha256:
        raise BundleError(f"the engine {entry['path']} was built from another model file than the bundle's "
                          f"{source.path} (sha256 {key.onnx_sha256[:12]}..., the file's {source.sha256[:12]}...): "
                          f"{build}")
    return entry, key


def export_triton(bundle_dir: str | Path, out: str | Path, *, precision: str = "fp32",
                  max_batch: int | None = None, name: str = MODEL_NAME, force: bool = False,
                  queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, platform: str = "onnxruntime_onnx",
                  engine: str | Path | None = None) -> tuple[Path, dict]:
    """Write the model folder ``out/name`` of the Triton model repository ``out`` atomically; returns it and the
    configuration written (``model_config``'s dict).

    ``platform``: ``onnxruntime_onnx`` (the bundle's ONNX model of ``precision``) or ``tensorrt_plan`` (its
    TensorRT engine of ``precision``, see ``pick_engine``). ``max_batch``: None for ``DEFAULT_MAX_BATCH``, or
    for a plan, its batch profile's largest.

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
    if platform not in PLATFORMS:
        raise BundleError(f"platform {platform!r} is not one of {PLATFORMS}")
    if engine is not None and platform != "tensorrt_plan":
        raise BundleError("--engine names a TensorRT plan: use it with --platform tensorrt_plan")
    bundle = load_bundle(bundle_dir)  # every model file checked against its sha256
    manifest = bundle.manifest
    extra: dict[str, str] = {}
    if platform == "tensorrt_plan":
        entry, key = pick_engine(bundle, precision, engine)
        source_path, profile_max = entry["path"], key.batch_profile[2]
        if batched(manifest) and key.batch_profile[0] != 1:
            raise BundleError(f"the engine {source_path} takes batches of {key.batch_profile[0]} and more; Triton "
                              "sends batches from 1: rebuild it with voxedge build-engine")
        if max_batch is None:
            max_batch = profile_max
        elif batched(manifest) and max_batch > profile_max:
            raise BundleError(f"--max-batch {max_batch} is beyond the engine's batch profile (up to {profile_max}): "
                              f"export with --max-batch {profile_max} or less, or rebuild with voxedge build-engine "
                              f"{bundle.path} --precision {precision} --max-batch {max_batch}")
        source_sha256 = sha256_file(bundle.path / source_path)
        extra = {"voxedge_tensorrt_version": key.tensorrt_version, "voxedge_gpu": key.device_name or "",
                 "voxedge_compute_capability": key.compute_capability, "voxedge_onnx_sha256": key.onnx_sha256}
        built_for = (f"\nA TensorRT plan runs only where it was built: {key.device_name or 'a GPU'} (compute "
                     f"capability {key.compute_capability}) with TensorRT {key.tensorrt_version}; serve it with "
                     "a tritonserver of that TensorRT version on such a GPU.")
    else:
        model = manifest.file(precision)  # int8: the full-range Q/DQ model made for TensorRT
        source_path, source_sha256, built_for = model.path, model.sha256, ""
        max_batch = DEFAULT_MAX_BATCH if max_batch is None else max_batch
    target_name = MODEL_FILES[platform]
    config = model_config(manifest, name=name, precision=precision, max_batch=max_batch, platform=platform,
                          queue_delay_us=queue_delay_us, model_file=source_path, model_sha256=source_sha256,
                          label_filename=LABELS_NAME, extra_parameters=extra)
    header = (f"Triton model configuration of the voxedge bundle {bundle.path.name} ({precision}: {source_path}),\n"
              f"written by `voxedge export-triton`. Inputs, outputs and datatypes come from its manifest.json."
              f"{built_for}")

    def populate(model_dir: Path) -> None:
        (model_dir / MODEL_VERSION).mkdir(parents=True)
        target = model_dir / MODEL_VERSION / target_name
        shutil.copyfile(bundle.path / source_path, target)
        if sha256_file(target) != source_sha256:
            raise BundleError(f"{bundle.path / source_path} changed while it was copied; export again")
        (model_dir / LABELS_NAME).write_text("".join(f"{label}\n" for label in manifest.heads.intent_labels))
        (model_dir / CONFIG_NAME).write_text(to_pbtxt(config, header))

    with output_dir(out, "the model repository") as repository:  # created folders go again if this fails
        claim_output(repository / name, CONFIG_NAME, "model folder written by voxedge export-triton", force=force,
                     flag="the model folder")
        replace_dir(repository / name, populate)
    return Path(out) / name, config
