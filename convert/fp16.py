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
    """Write the FP16 model of ``fp32_path``; returns a summary (nodes kept in FP32, FP16 round trips removed)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    keep = sorted(n.name for n in model.graph.node if keep_float_prefixes and n.name.startswith(tuple(keep_float_prefixes)))
    original = {n.name for n in _all_nodes(model.graph)}
    try:
        # ONNX Runtime's converter (shipped in the onnxruntime wheel) inserts the
        # Casts at the FP32/FP16 borders and keeps the model's inputs and outputs FP32.
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
        toposort(half.graph)  # the converter appends its Casts at the end
        removed = drop_fp16_round_trips(half.graph, original)
        onnx.checker.check_model(half, full_check=True)
    except Exception as exc:
        raise ConvertError(f"FP16 conversion failed: {exc}") from exc
    onnx.save(half, str(out_path))
    return {"kept_fp32": keep, "method": "onnxruntime.transformers.float16", "io": "float32",
            "fp16_round_trips_removed": removed}


def _subgraphs(node):
    from onnx import AttributeProto

    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.g
        elif a.type == AttributeProto.GRAPHS:
            yield from a.graphs


def _all_nodes(graph):
    """The nodes of ``graph`` and of its subgraphs (If/Loop/Scan bodies), recursively."""
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _cast_to(node) -> int | None:
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def drop_fp16_round_trips(graph, original: set[str], outer_types: dict[str, int] | None = None) -> int:
    """Remove the converter's Cast(to=FLOAT16) -> Cast(to=FLOAT) pairs on FP32 tensors, in place; returns how many.

    Why: ``convert_float_to_float16(node_block_list=...)`` treats every blocked
    node on its own. It renames a blocked node's output to ``<x>_cast_to_fp16``
    (still FP32) and adds ``Cast(to=FLOAT16) -> <x>`` behind it, and it feeds
    every blocked node's FP16-typed input through ``Cast(to=FLOAT) ->
    <x>_cast_to_fp32`` (with ``keep_io_types`` an FP32 graph input likewise
    becomes ``graph_input_cast_<i>`` in FP16 first). So between two consecutive
    kept nodes, and between an FP32 input and a kept node, the value goes
    FP32 -> FP16 -> FP32: the region "kept in FP32" is rounded to FP16 at every
    edge (a loud frame's DFT power overflows to inf, a 1e-8 epsilon flushes to 0
    and log(0) = -inf), which is exactly what keeping it was meant to avoid.

    Each such FP16 -> FP32 Cast's readers (in subgraphs too) read the FP32 tensor
    instead; one that is a graph output becomes an Identity of it. Casts nobody
    reads any more go, with their value_info. Only Casts the converter added
    (named in none of ``original``, the FP32 model's node names) are touched, and
    only exact FP32 -> FP16 -> FP32 round trips: a model's own Casts, and the
    lossless FP16 -> FP32 -> FP16 direction, are left alone. Readers only move to
    an earlier tensor, so a topologically sorted graph stays sorted.
    """
    from onnx import TensorProto

    types = dict(outer_types or {})
    types.update({v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)
                  if v.type.HasField("tensor_type")})
    types.update({t.name: t.data_type for t in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    pairs = []
    for node in graph.node:
        up = producer.get(node.input[0]) if _cast_to(node) == TensorProto.FLOAT else None
        if (up is None or _cast_to(up) != TensorProto.FLOAT16 or types.get(up.input[0]) != TensorProto.FLOAT
                or {up.name, node.name} & original):
            continue
        source = rename.get(up.input[0], up.input[0])
        pairs.append((up, node))
        if node.output[0] in outputs:  # the output keeps its name; ONNX Runtime elides the Identity
            node.op_type, node.input[0] = "Identity", source
            del node.attribute[:]
        else:
            rename[node.output[0]] = source
    for node in _all_nodes(graph):
        node.input[:] = [rename.get(i, i) for i in node.input]
    casts = {n.output[0]: n for pair in pairs for n in pair if n.op_type == "Cast"}
    dropped: set[str] = set()
    for _ in range(2):  # the FP16 -> FP32 Casts first, then the FP32 -> FP16 ones they were the last readers of
        read = {i for n in _all_nodes(graph) for i in n.input} | outputs
        for name in [o for o in casts if o not in read]:
            graph.node.remove(casts.pop(name))
            dropped.add(name)
    kept_info = [v for v in graph.value_info if v.name not in dropped]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return len(pairs) + sum(drop_fp16_round_trips(sub, original, types) for n in graph.node for sub in _subgraphs(n))


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
