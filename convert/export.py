"""PyTorch -> ONNX export and verification against PyTorch on golden inputs.

The export uses the TorchScript-based exporter (``dynamo=False``; torch marks it
deprecated, and the dynamo exporter needs onnxscript, not yet a dependency) at opset 17,
which TensorRT 10.3's ONNX parser (JetPack 6) reads, with a dynamic batch axis
on every input and output; onnxslim then folds constants and removes the shape
arithmetic the tracer leaves behind, and the ONNX checker validates the result.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError, VerificationError
from convert.graph import prepare_for_runtimes
from edge.bundle import TensorSpec, numpy_dtype

ONNX_OPSET = 17  # TensorRT 10.3 (JetPack 6) parses opsets up to 20; 17 keeps older stacks working too
BATCH_AXIS_NAME = "batch"
DEFAULT_TOLERANCE = {"max_abs": 1e-3, "min_cosine": 0.9999}



def import_factory(spec: str):
    """Resolve ``package.module:function`` to the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConvertError(f"model factory {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConvertError(f"cannot import {module_name!r} for model factory {spec!r} ({exc}); "
                           "check the spelling and that the package is installed") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConvertError(f"{module_name!r} has no callable {attr!r} (model factory {spec!r})")
    return factory


def load_model(checkpoint: str | Path, factory_spec: str):
    """Build the model with its factory and load the checkpoint's weights; returns (model in eval mode, metadata).

    The checkpoint is either ``{"state_dict": ..., "model_config": {...}, ...}``
    (as ``voxedge train`` writes; ``model_config`` is passed to the factory) or
    a bare state dict (the factory is called without arguments).
    """
    import torch

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConvertError(f"checkpoint {checkpoint} does not exist")
    try:
        blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"checkpoint {checkpoint} is unreadable ({reason}); is it a complete torch.save file?") from exc
    if not isinstance(blob, dict):
        raise ConvertError(f"checkpoint {checkpoint} holds a {type(blob).__name__}, not a state dict")
    state = blob.get("state_dict", blob)
    meta = {k: v for k, v in blob.items() if k != "state_dict"} if "state_dict" in blob else {}
    factory = import_factory(factory_spec)
    model = factory(meta["model_config"]) if "model_config" in meta else factory()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConvertError(f"checkpoint {checkpoint} does not fit the model from {factory_spec!r}: "
                           f"{str(exc).splitlines()[0]}") from exc
    model.eval()
    return model, meta


def golden_inputs(inputs: tuple[TensorSpec, ...], batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for verification: full-range uint8 images, quiet random audio-like floats."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        shape = tuple(batch if d == -1 else d for d in spec.shape)
        dtype = numpy_dtype(spec.dtype).type
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out[spec.name] = rng.integers(max(info.min, 0), min(info.max, 255) + 1, size=shape).astype(dtype)
        else:
            out[spec.name] = np.clip(rng.normal(0.0, 0.1, size=shape), -1, 1).astype(dtype)
    return out


def export_onnx(model, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], path: str | Path,
                example: dict[str, np.ndarray]) -> Path:
    """Export ``model`` to ONNX with named inputs/outputs and a dynamic batch, simplify, rewrite and check it.

    The rewrites (``convert.graph``) are exact: 1-D convolutions become 1 x k 2-D ones.
    """
    import onnx
    import onnxslim
    import torch

    path = Path(path)
    args = tuple(torch.from_numpy(example[s.name]) for s in inputs)
    with torch.no_grad():
        produced = model(*args)
    produced = produced if isinstance(produced, (tuple, list)) else (produced,)
    if len(produced) != len(outputs):
        raise ConvertError(f"the model returns {len(produced)} outputs but the config declares {len(outputs)} "
                           f"({[o.name for o in outputs]}); make them match")
    for spec, tensor in zip(outputs, produced):
        want = tuple(tensor.shape[0] if d == -1 else d for d in spec.shape)
        if tuple(tensor.shape) != want:
            raise ConvertError(f"output {spec.name!r} has shape {list(tensor.shape)} but the config declares "
                               f"{list(spec.shape)}")
    dynamic = {s.name: {i: BATCH_AXIS_NAME for i, d in enumerate(s.shape) if d == -1} for s in (*inputs, *outputs)}
    try:
        torch.onnx.export(model, args, str(path), input_names=[s.name for s in inputs],
                          output_names=[s.name for s in outputs], dynamic_axes=dynamic,
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)
    except Exception as exc:
        raise ConvertError(f"ONNX export failed: {exc}") from exc
    slim = onnxslim.slim(onnx.load(str(path)))
    model, _ = prepare_for_runtimes(slim)
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConvertError(f"the exported ONNX model fails the ONNX checker: {exc}") from exc
    return path


@dataclass(frozen=True)
class OutputError:
    """Difference of one output between the reference (PyTorch) and ONNX Runtime."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float


def compare_outputs(names, reference, candidate) -> list[OutputError]:
    rows = []
    for name, ref, got in zip(names, reference, candidate):
        ref = np.asarray(ref, np.float64).ravel()
        got = np.asarray(got, np.float64).ravel()
        diff = np.abs(ref - got)
        cosine = float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got) + 1e-30)) if ref.size else 1.0
        rows.append(OutputError(name, float(diff.max(initial=0.0)),
                                float((diff / (np.abs(ref) + 1e-6)).max(initial=0.0)), cosine))
    return rows


def verify_onnx(model, onnx_path: str | Path, outputs: tuple[TensorSpec, ...], golden: dict[str, np.ndarray],
                tolerance: dict | None = None) -> tuple[list[OutputError], dict[str, np.ndarray]]:
    """Run PyTorch and ONNX Runtime (CPU) on ``golden``; raise VerificationError over the tolerance.

    Returns the per-output errors and PyTorch's outputs (the golden outputs).
    """
    import torch

    from edge.runners.onnxruntime import make_session

    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    session = make_session(onnx_path)
    feed = {i.name: golden[i.name] for i in session.get_inputs()}
    got = session.run([o.name for o in outputs], feed)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(golden[i.name]) for i in session.get_inputs()))
    ref = [t.numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    rows = compare_outputs([o.name for o in outputs], ref, got)
    bad = [r for r in rows if r.max_abs > tol["max_abs"] or r.cosine < tol["min_cosine"]]
    if bad:
        detail = "; ".join(f"{r.name}: max abs {r.max_abs:.3g}, cosine {r.cosine:.6f}" for r in bad)
        raise VerificationError(f"ONNX Runtime disagrees with PyTorch beyond the tolerance "
                                f"(max abs {tol['max_abs']}, cosine {tol['min_cosine']}): {detail}")
    return rows, {o.name: r for o, r in zip(outputs, ref)}
