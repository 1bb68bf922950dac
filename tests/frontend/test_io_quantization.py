"""edgesdk.frontend.io_quantization: the scale and zero point of a model's integer inputs and
outputs, read off the DequantizeLinear/QuantizeLinear next to them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesdk.frontend.io_quantization import IoQuantization, io_quantization
from edgesdk.frontend.model import load_model


def integer_io_model(second_scale: float | None = None) -> onnx.ModelProto:
    """uint8 in, int8 out: x -> DequantizeLinear(0.05, 128) -> Relu -> Mul 2 -> QuantizeLinear(0.1, -3) -> y
    (with ``second_scale``, x is also dequantized with that scale into a second output z)."""
    constants = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(-3, np.int8), "y_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["real"]),
        helper.make_node("Relu", ["real"], ["positive"]),
        helper.make_node("Mul", ["positive", "two"], ["doubled"]),
        helper.make_node("QuantizeLinear", ["doubled", "y_scale", "y_zero"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 16])]
    if second_scale is not None:
        constants.append(numpy_helper.from_array(np.array(second_scale, np.float32), "z_scale"))
        nodes.append(helper.make_node("DequantizeLinear", ["x", "z_scale", "x_zero"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16]))
    graph = helper.make_graph(nodes, "integer_io", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 16])], outputs, constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_integer_inputs_and_outputs_carry_their_scale_and_zero_point():
    assert io_quantization(integer_io_model()) == {"x": IoQuantization(0.05000000074505806, 128), "y": IoQuantization(0.10000000149011612, -3)}
    model = load_model(integer_io_model())
    assert [(spec.name, spec.dtype, spec.scale, spec.zero_point) for spec in [*model.inputs, *model.outputs]] == [
        ("x", "uint8", np.float32(0.05), 128),
        ("y", "int8", np.float32(0.1), -3),
    ]


def test_an_input_read_with_two_scales_has_none_and_float_io_has_none():
    assert io_quantization(integer_io_model(second_scale=0.5)) == {"y": IoQuantization(0.10000000149011612, -3)}
    spec = load_model(integer_io_model(second_scale=0.5)).outputs[1]
    assert spec.dtype == "float32" and spec.scale is None and spec.zero_point is None
