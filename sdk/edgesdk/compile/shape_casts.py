"""Shapes handed to operators that take only tensors, as tensors.

TVM's ONNX importer keeps the result of a ``Shape`` (and of a Gather, Slice, Concat... of one) as a
Relax shape, not a tensor, and refuses a node outside its short list of shape-aware operators that
reads one ("Node Sub_19 cannot handle ShapeExpr inputs"). Shape folding makes most such values
constants first (edgesdk.frontend.shape_folding); where a shape stays symbolic in TVM, a ``Cast`` to
int64 (which TVM's importer turns into a tensor) goes between it and such a node.
"""

from __future__ import annotations

import onnx
from onnx import helper

# The operators TVM 0.27's importer lets read a shape (onnx_frontend._construct_nodes), and that
# give a shape again when they read one (all of them but Cast and CastLike, which give tensors).
SHAPE_AWARE = {"Reshape", "Resize", "ConstantOfShape", "Gather", "Slice", "Shape", "Expand", "Concat", "Equal", "Where", "Cast", "CastLike", "Squeeze"}
TO_TENSOR = {"Cast", "CastLike"}


def shapes_as_tensors(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` (changed in place) with a Cast before each input of a node outside
    ``SHAPE_AWARE`` that TVM would hold as a shape."""
    shapes: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    casts: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in SHAPE_AWARE:
            if node.op_type == "Shape" or (node.op_type not in TO_TENSOR and any(name in shapes for name in node.input)):
                shapes.update(name for name in node.output if name)
        else:
            for slot, name in enumerate(node.input):
                if name in shapes:
                    if name not in casts:
                        casts[name] = f"{name}_as_tensor"
                        nodes.append(helper.make_node("Cast", [name], [casts[name]], to=onnx.TensorProto.INT64))
                    node.input[slot] = casts[name]
        nodes.append(node)
    if casts:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return proto
