import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesdk.errors import UserInputError
from edgesdk.frontend.model import load_model, parse_input_shape, random_inputs
from edgesdk.testing.models import mlp, tiny_cnn, transformer_block


def test_dynamic_dims_need_a_shape_and_the_error_names_the_input():
    with pytest.raises(UserInputError) as info:
        load_model(tiny_cnn())
    assert "input 'image' has dynamic dimensions ['N', 3, 32, 32]" in info.value.message
    assert info.value.hint == "give its shape, e.g. --input-shape image=1,3,32,32 (or calibration samples, which define it)"


def test_binding_shapes_folds_the_shape_subgraph():
    source = transformer_block()
    assert sum(node.op_type == "Shape" for node in source.graph.node) == 1
    model = load_model(source, {"tokens": [2, 5, 64]})
    op_types = {node.op_type for node in model.proto.graph.node}
    assert not op_types & {"Shape", "Gather", "Concat"}
    assert "Reshape" in op_types
    assert [spec.shape for spec in model.inputs] == [(2, 5, 64)]
    assert [(spec.name, spec.shape, spec.dtype) for spec in model.outputs] == [("hidden", (2, 5, 64), "float32")]
    assert model.opset == 17 and model.notes == []


def test_the_callers_proto_is_not_modified():
    source = mlp()
    before = source.SerializeToString()
    load_model(source, {"features": [3, 64]})
    assert source.SerializeToString() == before


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"nope": [1, 64]}, "--input-shape names no input of the model: nope"),
        ({"features": [1, 32]}, "contradicts the model's fixed dims ['N', 64]"),
        ({"features": [1]}, "expected 2 dims of size >= 0"),
    ],
)
def test_bad_input_shapes_are_explained(shapes, message):
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_model(mlp(), shapes)


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x00not a protobuf at all\xff" * 10)
    with pytest.raises(UserInputError, match="not an ONNX model"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="no such model file"):
        load_model(tmp_path / "absent.onnx")


def test_custom_domain_ops_are_refused():
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.vendor")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor", 1)])
    with pytest.raises(UserInputError, match="outside the standard ONNX domain: com.vendor.FancyOp"):
        load_model(model)


def test_source_hash_is_of_the_file_and_prepared_hash_of_the_compiled_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mlp(), path)
    import hashlib

    model = load_model(path, {"features": [1, 64]})
    assert model.name == "m"
    assert model.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.sha256 == hashlib.sha256(model.serialized).hexdigest() != model.source_sha256


def test_random_inputs_are_deterministic_and_typed():
    model = load_model(tiny_cnn(), {"image": [2, 3, 32, 32]})
    first, second = random_inputs(model.inputs, 0), random_inputs(model.inputs, 0)
    assert first["image"].shape == (2, 3, 32, 32) and first["image"].dtype.name == "float32"
    assert (first["image"] == second["image"]).all()


@pytest.mark.parametrize("text", ["image", "image=", "=1,2", "image=1,x", "image=1,0"])
def test_input_shape_option_syntax(text):
    with pytest.raises(UserInputError, match="expected NAME=D1,D2"):
        parse_input_shape(text)


def test_input_shape_option_parses():
    assert parse_input_shape("input.1=1,3,224,224") == ("input.1", [1, 3, 224, 224])


def test_a_model_older_than_opset_7_is_converted_and_says_so():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 3)]))
    assert model.opset == 3 and "converted from opset 3 to 7 (onnx's version converter)" in model.notes
    assert {entry.domain: entry.version for entry in model.proto.opset_import}[""] == 7


def _unique() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["y"], sorted=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unique"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_output_whose_shape_depends_on_the_values_is_sized_by_the_given_inputs():
    x = np.array([3, 1, 3, 2, 1, 3], np.float32)
    model = load_model(_unique(), examples={"x": x})
    assert model.outputs[0].shape == (3,)
    assert any("output 'y' has a shape that depends on the input values: compiled for [3]" in note for note in model.notes)
    with pytest.raises(UserInputError, match="still has dynamic dimensions") as error:
        load_model(_unique())
    assert "--inputs" in (error.value.hint or "")
