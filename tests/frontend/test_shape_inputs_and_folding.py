"""Inputs that set a shape are bound from example values; small shape computations become constants."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.errors import UserInputError
from edgesdk.frontend.model import load_model, shape_inputs
from edgesdk.frontend.shape_folding import fold_shapes


def reshape_by_input() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_input_that_sets_a_shape_is_bound_to_its_example_value():
    proto = reshape_by_input()
    assert list(shape_inputs(proto)) == ["shape"]
    examples = {"x": np.zeros((2, 6), np.float32), "shape": np.array([3, 4])}
    model = load_model(proto, examples=examples)
    assert [spec.name for spec in model.inputs] == ["x"] and model.inputs[0].shape == (2, 6)  # the dynamic dim from the example
    assert model.outputs[0].shape == (3, 4)
    np.testing.assert_array_equal(model.bound_inputs["shape"], [3, 4])
    assert model.bound_inputs["shape"].dtype == np.int64


def test_without_its_value_the_error_names_the_input_and_the_node():
    with pytest.raises(UserInputError, match=r"input 'shape' sets a shape \(Reshape 'flatten'\)"):
        load_model(reshape_by_input(), {"x": [2, 6]})


def test_shape_computations_fold_to_constants_and_weights_stay():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    weight = onnx.numpy_helper.from_array(np.ones((4,), np.int8), "w")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("DequantizeLinear", ["w", "scale"], ["wf"]),
        helper.make_node("Add", ["flat", "bias"], ["y"]),
    ]
    initializers = [
        onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        weight,
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
        onnx.numpy_helper.from_array(np.zeros((12,), np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12]), helper.make_tensor_value_info("wf", TensorProto.FLOAT, [4])],
        initializers,
    )
    folded = fold_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ops = [node.op_type for node in folded.graph.node]
    assert "Shape" not in ops and "Gather" not in ops and "Concat" not in ops
    target = next(node for node in folded.graph.node if node.op_type == "Constant" and node.output[0] == "target")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(target.attribute[0].t), [2, -1])
    assert "DequantizeLinear" in ops and "w" in {tensor.name for tensor in folded.graph.initializer}  # an int8 weight is never folded
    assert "bias" in {tensor.name for tensor in folded.graph.initializer}  # nor a float one


def _if_on_rank(rank_value: int) -> onnx.ModelProto:
    """An If on a constant (an exporter's rank test): the branch taken reshapes x, the other negates it."""
    then_branch = helper.make_graph(
        [helper.make_node("Reshape", ["x", "flat"], ["then_out"])], "then", [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [6])]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["else_out"])], "else", [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [2, 3])]
    )
    nodes = [
        helper.make_node("Constant", [], ["rank"], value=helper.make_tensor("rank", TensorProto.INT64, [], [rank_value])),
        helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.INT64, [], [2])),
        helper.make_node("Equal", ["rank", "two"], ["is_2d"]),
        helper.make_node("If", ["is_2d"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("flat", TensorProto.INT64, [1], [6])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("rank", "taken"), [(2, "Reshape"), (3, "Neg")])
def test_an_if_on_a_constant_becomes_the_branch_it_takes(rank, taken):
    folded = fold_shapes(_if_on_rank(rank))
    ops = [node.op_type for node in folded.graph.node]
    assert "If" not in ops and taken in ops and ({"Reshape", "Neg"} - {taken}).isdisjoint(ops)
    assert folded.graph.node[-1].op_type == "Identity" and folded.graph.node[-1].output == ["y"]


def test_an_input_read_only_for_its_type_does_not_set_a_shape():
    nodes = [
        helper.make_node("CastLike", ["fill", "x"], ["fill_like_x"]),  # reads x's type, not its values
        helper.make_node("Pad", ["x", "pads", "fill_like_x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3]), helper.make_tensor_value_info("pads", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
        [helper.make_tensor("fill", TensorProto.FLOAT, [], [0.5])],
    )
    assert set(shape_inputs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))) == {"pads"}
