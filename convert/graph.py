"""ONNX graph rewrites applied after export, before verification and quantization.

Each rewrite is exact (the same arithmetic, so verification against PyTorch
still holds to float rounding) and exists because a runtime handles the
rewritten form better:

- ``conv1d_as_conv2d``: a 1-D Conv becomes Unsqueeze -> 2-D Conv with a 1 x k
  kernel -> Squeeze. ONNX Runtime fuses Q/DQ around 2-D convolutions into
  QLinearConv but leaves 1-D ones as float Conv with a DequantizeLinear on every
  weight at every run, and its blocked (NCHWc) float kernels are 2-D only.
  TensorRT turns 1-D convolutions into 2-D ones internally anyway.
- ``cast_inputs_first``: where a uint8 (or int8) network input goes through
  layout ops (Transpose, Reshape, Slice, ...) before its Cast to float, the Cast
  moves to the input. TensorRT's ONNX parser takes 8-bit integer tensors only as
  network inputs and outputs ("TensorRT does not support UINT8 types for
  intermediate tensors"), and PyTorch's ``image.permute(...).float()`` exports
  exactly that pattern. Layout ops do not change values, so the move is exact.
"""

from __future__ import annotations

import numpy as np

_AXIS = 2  # the inserted height axis of size 1: [N, C, T] -> [N, C, 1, T]


def _namer(model):
    """A function returning tensor names not yet used in ``model`` (nor handed out before)."""
    g = model.graph
    taken = {*(i.name for i in g.initializer), *(i.name for i in g.input), *(o for n in g.node for o in n.output)}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    return fresh


def _subgraphs(node):
    """The graphs held in a node's attributes (If branches, Loop and Scan bodies)."""
    for attr in node.attribute:
        if attr.g.ByteSize():
            yield attr.g
        yield from attr.graphs


def outer_reads(graph) -> set[str]:
    """Names a (sub)graph reads but does not define itself: values it takes from the enclosing graphs."""
    defined = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    reads: set[str] = set()
    for node in graph.node:
        reads.update(node.input)
        for sub in _subgraphs(node):
            reads |= outer_reads(sub)
        defined.update(node.output)
    reads.update(o.name for o in graph.output)
    return reads - defined


def toposort(graph, outer: frozenset[str] = frozenset()) -> None:
    """Order ``graph.node`` so every node comes after the producers of its inputs (in place, stable).

    A node with subgraphs (If, Loop) also waits for the tensors its subgraphs read
    from this graph; ``outer`` names what enclosing graphs provide.
    """
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""} | set(outer)
    nodes = list(graph.node)
    needs = [set(n.input).union(*(outer_reads(g) for g in _subgraphs(n))) for n in nodes]
    pending = list(range(len(nodes)))
    ordered = []
    while pending:
        rest = []
        for k in pending:
            if needs[k] <= available:
                ordered.append(nodes[k])
                available.update(nodes[k].output)
            else:
                rest.append(k)
        if len(rest) == len(pending):
            missing = sorted(set().union(*(needs[k] for k in rest)) - available)
            raise ValueError(f"graph has a cycle or reads undefined tensors {missing[:5]}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def conv1d_as_conv2d(model):
    """Rewrite every 1-D Conv with a constant weight into its 2-D 1 x k equivalent; returns (model, count)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes, count = [], 0
    widened: dict[str, str] = {}
    fresh = _namer(model)
    axes_name = fresh("voxedge_conv1d_axes")
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 3:
            new_nodes.append(node)
            continue
        count += 1
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            new_nodes.append(node)  # SAME_* padding: leave it, it is rare in exported graphs
            count -= 1
            continue
        k = list(attrs.get("kernel_shape", [weight.dims[2]]))
        pads = list(attrs.get("pads", [0, 0]))
        w4 = numpy_helper.to_array(weight).reshape(weight.dims[0], weight.dims[1], 1, weight.dims[2])
        w_name = f"{weight.name}__1xk"
        if w_name not in inits:
            init = numpy_helper.from_array(np.ascontiguousarray(w4), w_name)
            graph.initializer.append(init)
            inits[w_name] = init
        y4 = fresh(f"{node.output[0]}__conv2d")
        x4 = widened.get(node.input[0])
        if x4 is None:  # one Unsqueeze per tensor, however many convolutions read it
            x4 = widened[node.input[0]] = fresh(f"{node.input[0]}__unsqueezed")
            new_nodes.append(helper.make_node("Unsqueeze", [node.input[0], axes_name], [x4],
                                              name=f"{node.name}/unsqueeze"))
        new_attrs = {
            "kernel_shape": [1, *k],
            "strides": [1, *attrs.get("strides", [1])],
            "dilations": [1, *attrs.get("dilations", [1])],
            "pads": [0, pads[0], 0, pads[1]],
            "group": attrs.get("group", 1),
        }
        new_nodes.append(helper.make_node("Conv", [x4, w_name, *node.input[2:]], [y4], name=node.name, **new_attrs))
        new_nodes.append(helper.make_node("Squeeze", [y4, axes_name], [node.output[0]], name=f"{node.name}/squeeze"))
    if count:
        graph.initializer.append(numpy_helper.from_array(np.array([_AXIS], np.int64), axes_name))
        del graph.node[:]
        graph.node.extend(new_nodes)
        # Drop the 1-D weights nobody reads any more.
        used = {i for n in graph.node for i in n.input}
        keep = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        del graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
    return model, count


# Ops that act element by element, so they commute with Squeeze/Unsqueeze of a size-1 axis.
_UNARY_ELEMENTWISE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu"}
_BINARY_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min"}


def _axes(node, inits) -> tuple[int, ...] | None:
    from onnx import numpy_helper

    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    return tuple(int(a) for a in numpy_helper.to_array(inits[node.input[1]]).ravel())


def sink_squeezes(model):
    """Move Squeeze nodes past element-wise ops and cancel Unsqueeze(Squeeze(x)) pairs; returns (model, count).

    After ``conv1d_as_conv2d`` a chain Conv -> Relu -> Conv has a Squeeze and an
    Unsqueeze between the two convolutions; with them gone, each convolution
    feeds the next directly, so Q/DQ fusion sees Conv -> Q as it would in a
    2-D network.
    """
    import onnx
    from onnx import helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    changed, total = True, 0
    fresh = _namer(model)
    while changed:
        changed = False
        producer = {o: n for n in graph.node for o in n.output}
        nodes = list(graph.node)
        for i, node in enumerate(nodes):
            srcs = [producer.get(x) for x in node.input]
            squeezes = [s for s in srcs if s is not None and s.op_type == "Squeeze"]
            if node.op_type == "Unsqueeze" and squeezes and srcs[0] is squeezes[0]:
                s = squeezes[0]
                if _axes(s, inits) is not None and _axes(s, inits) == _axes(node, inits) \
                        and node.output[0] not in outputs:
                    for other in graph.node:  # readers of the Unsqueeze now read the 4-D tensor itself
                        for j, name in enumerate(other.input):
                            if name == node.output[0]:
                                other.input[j] = s.input[0]
                    graph.node.remove(node)
                    changed = True
                    break
            elementwise = (node.op_type in _UNARY_ELEMENTWISE and srcs[0] is not None and srcs[0].op_type == "Squeeze"
                           and all(x in inits for x in node.input[1:] if x))
            if node.op_type in _BINARY_ELEMENTWISE and len(squeezes) == 2 and len(srcs) == 2:
                a0, a1 = _axes(squeezes[0], inits), _axes(squeezes[1], inits)
                elementwise = a0 is not None and a0 == a1
            if elementwise:
                s0 = srcs[0]
                new_in = [producer[x].input[0] if producer.get(x) is not None and producer[x].op_type == "Squeeze"
                          else x for x in node.input]
                wide = fresh(f"{node.output[0]}__sunk")
                moved = helper.make_node(node.op_type, new_in, [wide], name=node.name)
                moved.attribute.extend(node.attribute)
                squeeze = helper.make_node("Squeeze", [wide, s0.input[1]], list(node.output), name=f"{node.name}/squeeze")
                at = list(graph.node).index(node)
                graph.node.remove(node)
                graph.node.insert(at, squeeze)
                graph.node.insert(at, moved)
                changed = True
                total += 1
                break
        if changed:  # drop Squeezes nobody reads any more
            read = {x for n in graph.node for x in n.input} | outputs
            for n in [n for n in graph.node if n.op_type == "Squeeze" and n.output[0] not in read]:
                graph.node.remove(n)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model), total


# Ops that move or select elements without computing on them: a Cast commutes with each
# (on their first input; the others are shapes, indices or axes).
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                        "Expand", "Gather", "Tile", "DepthToSpace", "SpaceToDepth"})
_EIGHT_BIT = (2, 3)  # onnx.TensorProto.UINT8, INT8


def cast_inputs_first(model):
    """Move the Cast of each 8-bit integer network input ahead of the layout ops before it.

    A rewrite happens only where everything the input reaches through layout ops ends in Casts
    to one type (so no 8-bit tensor is left between the input and the Cast); anything else is left
    for ``voxedge check-trt`` to report. Returns (model, number of inputs rewritten).
    """
    import onnx
    from onnx import helper

    graph = model.graph
    fresh = _namer(model)
    outputs = {o.name for o in graph.output}
    total = 0
    for inp in graph.input:
        if inp.type.tensor_type.elem_type not in _EIGHT_BIT:
            continue
        region, casts, frontier, ok = [], [], [inp.name], True
        while frontier and ok:
            name = frontier.pop()
            for node in graph.node:
                if name not in node.input:
                    continue
                if node.op_type == "Cast" and node.input[0] == name:
                    casts.append(node)
                elif node.op_type in LAYOUT_OPS and node.input[0] == name and name not in node.input[1:]:
                    region.append(node)
                    frontier.extend(node.output)
                else:
                    ok = False
            ok = ok and (name == inp.name or name not in outputs)
        targets = {helper.get_attribute_value(a) for c in casts for a in c.attribute if a.name == "to"}
        if not ok or not region or len(targets) != 1:
            continue
        cast_out = fresh(f"{inp.name}_cast")
        for node in region:
            if node.input[0] == inp.name:
                node.input[0] = cast_out
        for cast in casts:  # the Cast's readers now read its (already float) input
            if cast.input[0] == inp.name:
                cast.input[0] = cast_out
            if cast.output[0] in outputs:
                cast.op_type = "Identity"
                del cast.attribute[:]
                continue
            for node in graph.node:
                for i, x in enumerate(node.input):
                    if x == cast.output[0]:
                        node.input[i] = cast.input[0]
            graph.node.remove(cast)
        graph.node.insert(0, helper.make_node("Cast", [inp.name], [cast_out], to=targets.pop(),
                                              name=f"{inp.name}/cast_first"))
        total += 1
    if total:
        toposort(graph)
        del graph.value_info[:]  # the moved tensors' element types changed; infer them afresh
        model = onnx.shape_inference.infer_shapes(model)
    return model, total


def prepare_for_runtimes(model):
    """The exact rewrites of this module in order; returns (model, {rewrite: count})."""
    model, n_cast = cast_inputs_first(model)
    model, n_conv = conv1d_as_conv2d(model)
    model, n_sunk = sink_squeezes(model) if n_conv else (model, 0)
    return model, {"casts_moved_to_inputs": n_cast, "conv1d_as_conv2d": n_conv, "squeezes_sunk": n_sunk}
