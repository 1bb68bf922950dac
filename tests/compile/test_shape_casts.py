"""A shape read by an operator TVM's importer takes only tensors for gets a Cast in between."""

from __future__ import annotations

from onnx import TensorProto, helper

from edgesdk.compile.shape_casts import shapes_as_tensors


def test_a_shape_read_by_arithmetic_is_cast_and_one_read_by_a_reshape_is_not():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"]),  # still a shape in TVM
        helper.make_node("Sub", ["n", "one"], ["m"]),  # TVM refuses a shape here
        helper.make_node("Add", ["n", "one"], ["k"]),  # the same cast serves it
        helper.make_node("Reshape", ["x", "s"], ["y"]),  # a shape is what Reshape reads
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    proto = shapes_as_tensors(helper.make_model(graph))

    ops = [(node.op_type, list(node.input)) for node in proto.graph.node]
    assert ops[:3] == [("Shape", ["x"]), ("Gather", ["s", "zero"]), ("Cast", ["n"])]
    assert ("Sub", ["n_as_tensor", "one"]) in ops and ("Add", ["n_as_tensor", "one"]) in ops
    assert ("Reshape", ["x", "s"]) in ops and sum(op == "Cast" for op, _ in ops) == 1
