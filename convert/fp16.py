"""The FP16 variant: weights and activations in half precision, the audio front end and I/O in FP32.

For ONNX Runtime's CUDA and TensorRT execution providers (and any runtime that
takes a half-precision graph as given). TensorRT engines are built from the
FP32 model with the FP16 builder flag instead, which lets TensorRT pick the
precision layer by layer. The front end stays in FP32 because the DFT power
of a loud 25 ms frame (up to ~1.6e5) overflows FP16's 65504.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.errors import ConvertError, VerificationError
from convert.export import OutputError, compare_outputs
from convert.graph import toposort

FP16_ONNX = "model.fp16.onnx"
# FP16 has 11 significant bits: outputs may differ from PyTorch's FP32 by about
# 0.1 % of their range per layer, so the check is relative to each output's size.
FP16_MAX_ABS_OF_RANGE = 0.02
FP16_MIN_COSINE = 0.999


def make_fp16(fp32_path: str | Path, out_path: str | Path, keep_float_prefixes: tuple[str, ...] = ()) -> dict:
    """Write the FP16 model of ``fp32_path``; returns a summary (nodes kept in FP32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    keep = sorted(n.name for n in model.graph.node if keep_float_prefixes and n.name.startswith(tuple(keep_float_prefixes)))
    try:
        # ONNX Runtime's converter (shipped in the onnxruntime wheel) inserts the
        # Casts at the FP32/FP16 borders and keeps the model's inputs and outputs FP32.
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
        toposort(half.graph)  # the converter appends its Casts at the end
        onnx.checker.check_model(half)
    except Exception as exc:
        raise ConvertError(f"FP16 conversion failed: {exc}") from exc
    onnx.save(half, str(out_path))
    return {"kept_fp32": keep, "method": "onnxruntime.transformers.float16", "io": "float32"}


def verify_fp16(path: str | Path, golden: dict[str, np.ndarray], reference: dict[str, np.ndarray]
                ) -> list[OutputError]:
    """Compare the FP16 model (ONNX Runtime, CPU) with PyTorch's golden outputs.

    Raises:
        VerificationError: an output strays more than 2 % of its range or has cosine < 0.999.
    """
    from edge.runners.onnxruntime import make_session

    session = make_session(path)
    names = list(reference)
    got = session.run(names, {i.name: golden[i.name] for i in session.get_inputs()})
    rows = compare_outputs(names, [reference[n] for n in names], got)
    bad = [r for r, n in zip(rows, names)
           if r.max_abs > FP16_MAX_ABS_OF_RANGE * max(float(np.ptp(reference[n])), 1e-6) or r.cosine < FP16_MIN_COSINE]
    if bad:
        detail = "; ".join(f"{r.name}: max abs {r.max_abs:.3g}, cosine {r.cosine:.6f}" for r in bad)
        raise VerificationError(f"the FP16 model disagrees with PyTorch beyond the tolerance ({FP16_MAX_ABS_OF_RANGE:.0%} "
                                f"of each output's range, cosine {FP16_MIN_COSINE}): {detail}. Keep more of the "
                                "model in FP32 (quantization.keep_float_prefixes) or convert without --fp16")
    return rows
