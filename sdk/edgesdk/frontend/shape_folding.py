"""Shape computations made constants: ``Shape`` of a tensor whose shape is static, and every node
whose inputs are all constants (a Gather of a shape, a Concat of dims, a Range), evaluated by
onnx's reference evaluator and replaced by Constant nodes; an If whose condition is constant
replaced by the branch it takes (TVM's importer reads a Constant node as
a constant, where it may take an initializer for a weight passed at run time).

onnxruntime's folding does this at load (edgesdk.frontend.model), except for float16 models it
would rewrite, and it never sees the function bodies the compiler expands
(edgesdk.compile.onnx_functions): TVM's importer needs such values constant. Only small values are
folded (``MAX_ELEMENTS``): a shape, an axis list, a mask; large constants are left to TVM.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_ELEMENTS = 4096
# Scalar inputs that are values, not weights, and that TVM's importer needs as constants.
VALUE_SLOTS = {"Pad": (2,), "Clip": (1, 2)}
SMALL_CONSTANT = 16  # a float Constant node this small is a factor in a shape computation, not a weight
STANDARD = ("", "ai.onnx")
# Operators whose outputs change from run to run, or that have graphs inside: never folded.
UNFOLDABLE = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan"}


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """A node's branches and bodies (If, Loop, Scan)."""
    return [graph for attribute in node.attribute for graph in ([attribute.g] if attribute.HasField("g") else attribute.graphs)]


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names ``node`` reads, in its branches and bodies too (a subgraph reads outer names)."""
    names = set(node.input)
    for graph in subgraphs(node):
        for inner in graph.node:
            names |= _reads(inner)
    return names


def static_shapes(proto: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = [dim.dim_value for dim in dims]
    return shapes


def _shape_of(node: onnx.NodeProto, dims: list[int]) -> np.ndarray:
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    start, end = attributes.get("start", 0), attributes.get("end", len(dims))
    return np.array(dims[slice(start, end)], dtype=np.int64)


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray | None], opsets) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(name or f"absent{i}", helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
              for i, (name, value) in enumerate(zip(node.input, values, strict=True)) if value is not None]  # fmt: skip
    outputs = [helper.make_value_info(name, onnx.TypeProto()) for name in node.output if name]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=opsets)
    try:
        results = ReferenceEvaluator(model).run(None, {name: value for name, value in zip(node.input, values, strict=True) if name and value is not None})
    except Exception:  # noqa: BLE001 - an op the reference evaluator lacks or rejects: left to TVM
        return None
    return [np.asarray(result) for result in results]


def _inferred(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """``proto`` with the value types shape inference finds, and the static shapes among them. The
    inference sees Constant nodes as initializers: it reads an input's value (a Pad's pads, a
    Reshape's shape) only from an initializer."""
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    constants = [node for node in proto.graph.node if node.op_type == "Constant" and any(a.name == "value" for a in node.attribute)]
    if not constants:
        return proto, static_shapes(proto)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]
    names = {node.output[0] for node in constants}
    probe.graph.initializer.extend(
        numpy_helper.from_array(numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value")), node.output[0]) for node in constants
    )
    kept = [node for node in probe.graph.node if not (node.op_type == "Constant" and node.output[0] in names)]
    del probe.graph.node[:]
    probe.graph.node.extend(kept)
    try:
        shapes = static_shapes(onnx.shape_inference.infer_shapes(probe, data_prop=True))
    except Exception:  # noqa: BLE001 - inference of the probe only adds shapes; without it, the first pass's
        shapes = {}
    return proto, {**shapes, **static_shapes(proto)}


def fold_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` (a copy) with its small constant computations replaced by Constant nodes, in rounds:
    a value folded in one round can give a shape that folds the next."""
    for _ in range(FOLD_ROUNDS):
        proto, progress = _fold_once(proto)
        proto, inlined = _inline_constant_ifs(proto)
        if not (progress or inlined):
            break
    return proto


FOLD_ROUNDS = 4


def _chosen_branches(graph: onnx.GraphProto, known: dict[str, np.ndarray]) -> dict[int, list[onnx.NodeProto]]:
    """The If nodes of ``graph`` whose condition is a known constant (exporters write them for a
    rank or a flag), each as the nodes of the branch it takes, its outputs renamed to the If's by
    Identity nodes. A branch that defines a name the graph also defines stays an If."""
    defined = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
    defined |= {name for node in graph.node for name in node.output}
    chosen = {}
    for index, node in enumerate(graph.node):
        condition = known.get(node.input[0]) if node.op_type == "If" and node.domain in STANDARD and node.input else None
        if condition is None or condition.size != 1:
            continue
        name = "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch"
        branch = next(attribute.g for attribute in node.attribute if attribute.name == name)
        if any(output in defined for inner in branch.node for output in inner.output) or len(branch.output) != len(node.output):
            continue
        renamed = [helper.make_node("Identity", [inner.name], [outer]) for inner, outer in zip(branch.output, node.output, strict=True) if outer]
        chosen[index] = [*branch.node, *renamed]
    return chosen


def _inline_constant_ifs(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """``proto`` with its Ifs of constant condition replaced by the branch they take, and whether
    any was. Kept as it is when shape inference then fails (a branch value it typed only from the
    If's outputs)."""
    known = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    branches = _chosen_branches(proto.graph, known)
    if not branches:
        return proto, False
    candidate = onnx.ModelProto()
    candidate.CopyFrom(proto)
    del candidate.graph.node[:]
    candidate.graph.node.extend(inlined for index, node in enumerate(proto.graph.node) for inlined in branches.get(index, [node]))
    try:
        onnx.shape_inference.infer_shapes(candidate, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return proto, False
    return candidate, True


def _fold_once(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """One round of ``fold_shapes``, and whether it folded more than Constant nodes (which it
    writes again in the one form TVM's importer reads: ``value``)."""
    proto, shapes = _inferred(proto)
    known: dict[str, np.ndarray] = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    # What a folded node may read: shape-like values (int64 initializers, shapes, what is computed
    # from them, small constants), never a weight: a DequantizeLinear of int8 weights stays.
    # A scalar of any type too (a pad value, an epsilon), so that a Cast of one folds: a weight is no scalar.
    derived = {name for name, value in known.items() if (value.dtype == np.int64 and value.size <= MAX_ELEMENTS) or value.size == 1}
    opsets = list(proto.opset_import)
    folded_nodes = set()
    for index, node in enumerate(proto.graph.node):
        if node.domain not in STANDARD or node.op_type in UNFOLDABLE or any(a.HasField("g") or a.graphs for a in node.attribute):
            continue
        results: list[np.ndarray] | None
        if node.op_type == "Shape" and node.input[0] in shapes:
            results = [_shape_of(node, shapes[node.input[0]])]
        elif node.op_type == "Size" and node.input[0] in shapes:
            results = [np.array(int(np.prod(shapes[node.input[0]])), dtype=np.int64)]
        elif node.op_type == "Constant" or (node.input and all(not name or name in derived for name in node.input)):
            results = _evaluate(node, [known[name] if name else None for name in node.input], opsets)
        else:
            continue
        names = [name for name in node.output if name]
        limit = SMALL_CONSTANT if node.op_type == "Constant" and results and results[0].dtype != np.int64 else MAX_ELEMENTS
        if results is None or len(results) != len(names) or any(result.size > limit or result.dtype.kind in "OSU" for result in results):
            continue
        for name, value in zip(names, results, strict=True):
            known[name] = value
            derived.add(name)
        folded_nodes.add(index)
    # Small int64 initializers are shapes, axes and pads (weights and zero points are other types): constants too.
    value_inputs = {node.input[slot] for node in proto.graph.node for slot in VALUE_SLOTS.get(node.op_type, ()) if slot < len(node.input)}
    shape_like = [
        tensor.name
        for tensor in proto.graph.initializer
        if (tensor.data_type == onnx.TensorProto.INT64 and known[tensor.name].size <= MAX_ELEMENTS)
        or (tensor.name in value_inputs and known[tensor.name].size == 1)
    ]
    if not folded_nodes and not shape_like:
        return proto, False
    progress = bool(shape_like) or any(proto.graph.node[index].op_type != "Constant" for index in folded_nodes)
    if shape_like:
        kept_initializers = [tensor for tensor in proto.graph.initializer if tensor.name not in set(shape_like)]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept_initializers)
        graph_inputs = [value for value in proto.graph.input if value.name not in set(shape_like)]  # old exporters list initializers as inputs
        del proto.graph.input[:]
        proto.graph.input.extend(graph_inputs)
    kept = [node for index, node in enumerate(proto.graph.node) if index not in folded_nodes]
    needed = {name for node in kept for name in _reads(node)} | {value.name for value in proto.graph.output}
    produced = {name for index in folded_nodes for name in proto.graph.node[index].output} | set(shape_like)
    existing = {tensor.name for tensor in proto.graph.initializer}
    constants = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(known[name], name)) for name in sorted(produced & needed) if name not in existing
    ]
    del proto.graph.node[:]
    proto.graph.node.extend([*constants, *kept])
    return proto, progress
