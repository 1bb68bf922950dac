"""The probe that locates where TVM's numbers part from onnxruntime's exposes every intermediate
tensor TVM computes, and no shape computation (TVM keeps those as shapes, not tensors)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from edgesdk.compile.divergence import probe
from edgesdk.frontend.model import load_model


def test_the_probe_returns_every_intermediate_tensor_but_no_shape_computation():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Reshape", ["r", "s"], ["same"]),
        helper.make_node("Mul", ["same", "x"], ["m"]),
        helper.make_node("Tanh", ["m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))

    exposed, names = probe(model)

    intermediates = [name for node in model.proto.graph.node if node.op_type not in ("Shape", "Constant") for name in node.output]
    assert set(names) == set(intermediates) and "s" not in names
    assert [spec.name for spec in exposed.outputs][0] == "y"  # the model's own outputs first
    assert {spec.name: spec.shape for spec in exposed.outputs}["m"] == (2, 3)
    assert np.dtype(exposed.outputs[1].dtype) == np.float32
