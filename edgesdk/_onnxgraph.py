"""Small ONNX graph rewrites shared by the NPU tooling: static input shapes, intermediate outputs.

NPU compilers (QNN HTP) need every tensor shape fixed before compiling, and the cross-backend diff
needs intermediate tensors exposed as graph outputs; both are rewrites of a copy, never of the
user's file.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

from ._errors import InputShapeError

__all__ = ["dynamic_inputs", "fix_input_shapes", "constants_to_initializers", "is_qdq", "expose_outputs", "truncate", "load_onnx"]

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def load_onnx(path, external_data: bool = True):
    import onnx

    return onnx.load_model(os.fspath(path), load_external_data=external_data)


def dynamic_inputs(specs) -> list:
    """The TensorSpecs (of a model's inputs) whose shape is unknown or has a non-integer dim."""
    return [s for s in specs if s.shape is None or any(not isinstance(d, int) or d < 1 for d in s.shape)]


def fix_input_shapes(model, shapes: Mapping[str, Sequence[int]]):
    """Set the given inputs' shapes in ``model`` (a ModelProto, edited in place) and drop stale shape info.

    Intermediate value_info and output shapes are removed rather than patched: they may carry the old
    symbolic dims, and ONNX Runtime re-infers them from the now-static inputs.
    """
    inputs = {i.name: i for i in model.graph.input}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise InputShapeError(f"input_shapes names unknown input(s) {unknown}; inputs are {sorted(inputs)}")
    for name, shape in shapes.items():
        tt = inputs[name].type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        shape = [int(v) for v in shape]
        if dims and len(dims) != len(shape):
            raise InputShapeError(f"input {name!r} has rank {len(dims)}; input_shapes gives {shape}")
        for d, v in zip(dims, shape):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:
                raise InputShapeError(f"input {name!r} dim is fixed at {d.dim_value}; input_shapes gives {v}")
        tt.ClearField("shape")
        for v in shape:
            if v < 1:
                raise InputShapeError(f"input_shapes[{name!r}] must be positive ints, got {shape}")
            tt.shape.dim.add().dim_value = v
    del model.graph.value_info[:]
    for o in model.graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    return model


def constants_to_initializers(model):
    """Turn top-level Constant nodes with a tensor value into initializers (``model`` edited in place).

    Exporters such as paddle2onnx emit Conv/BatchNorm parameters as Constant nodes; quantizers and
    graph fusions look for initializers and skip what they cannot find.
    """
    from onnx import numpy_helper

    keep = []
    for n in model.graph.node:
        value = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None) if n.op_type == "Constant" else None
        if value is None or not n.output[0]:
            keep.append(n)
            continue
        t = numpy_helper.from_array(numpy_helper.to_array(value), n.output[0])
        model.graph.initializer.append(t)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return model


def is_qdq(op_types: Iterable[str]) -> bool:
    """Whether a model (given its op types, with or without a 'domain::' prefix) is QDQ-quantized."""
    return any(t.rsplit("::", 1)[-1] in _QDQ_OPS for t in op_types)


def expose_outputs(model, names: Sequence[str]):
    """Add ``names`` (intermediate tensors of ``model``, a ModelProto edited in place) as graph outputs.

    Types come from ONNX shape inference where it knows them; an untyped output is still accepted by
    ONNX Runtime when declared with only an element type, so float is assumed as a last resort.
    """
    import onnx
    from onnx import helper

    have = {o.name for o in model.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        types = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    except Exception:
        types = {}
    for name in names:
        if name in have:
            continue
        vi = helper.make_empty_tensor_value_info(name)
        if name in types and types[name].HasField("tensor_type") and types[name].tensor_type.elem_type:
            vi.type.tensor_type.elem_type = types[name].tensor_type.elem_type
        else:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        model.graph.output.append(vi)
        have.add(name)
    return model


def truncate(model, outputs: Sequence[str]):
    """A new ModelProto computing only ``outputs`` (tensors of ``model``) from the graph inputs.

    Nodes, inputs and initializers nothing upstream of ``outputs`` uses are dropped. Tensors that
    subgraphs (If/Loop bodies) read from the outer scope count as used.
    """
    from onnx import helper

    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    keep: set[int] = set()
    used: set[str] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if t in used:
            continue
        used.add(t)
        i = producer.get(t)
        if i is None or i in keep:
            continue
        keep.add(i)
        stack += [x for x in g.node[i].input if x] + _outer_refs(g.node[i])
    new = helper.make_graph(
        [n for i, n in enumerate(g.node) if i in keep],
        g.name,
        [v for v in g.input if v.name in used],
        [],
        initializer=[t for t in g.initializer if t.name in used],
    )
    out = helper.make_model(new, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    for f in model.functions:
        out.functions.append(f)
    expose_outputs(out, list(outputs))
    return out


def _outer_refs(node) -> list[str]:
    """Names a node's subgraphs read without defining them (outer-scope captures)."""
    refs = []
    for a in node.attribute:
        for sub in list(a.g.node and [a.g] or []) + list(a.graphs):
            defined = {i.name for i in sub.input} | {t.name for t in sub.initializer} | {o for n in sub.node for o in n.output}
            for n in sub.node:
                refs += [x for x in n.input if x and x not in defined] + _outer_refs(n)
    return refs
