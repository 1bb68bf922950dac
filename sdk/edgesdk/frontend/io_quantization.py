"""The quantization of a model's integer inputs and outputs, as the graph itself states it.

A fully quantized model takes and returns integers: an input goes straight into a
DequantizeLinear, an output comes straight out of a QuantizeLinear. Their scale and zero point
(constant scalars) are what a caller needs to turn real values into the integers the model
expects and back: ``real = scale * (q - zero_point)``. Float inputs and outputs, and integer ones
the graph does not (de)quantize with one constant scale, have none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class IoQuantization:
    scale: float
    zero_point: int


def _scalar(name: str, constants: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    if name not in constants:
        return None
    value = numpy_helper.to_array(constants[name])
    return value if value.size == 1 else None


def io_quantization(proto: onnx.ModelProto) -> dict[str, IoQuantization]:
    """{input or output name: its scale and zero point} for the model's quantized integer I/O."""
    graph = proto.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    integer = {
        value.name
        for value in [*graph.input, *graph.output]
        if np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type), np.integer)
    }
    found: dict[str, IoQuantization] = {}
    ambiguous: set[str] = set()  # read with two different scales: none is the tensor's own
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in integer:
            tensor = node.input[0]
        elif node.op_type == "QuantizeLinear" and node.output[0] in integer:
            tensor = node.output[0]
        else:
            continue
        scale = _scalar(node.input[1], constants)
        zero_point = _scalar(node.input[2], constants) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        if scale is not None and zero_point is not None:
            quantization = IoQuantization(float(scale.reshape(())), int(zero_point.reshape(())))
            if found.setdefault(tensor, quantization) != quantization:
                ambiguous.add(tensor)
    return {name: quantization for name, quantization in found.items() if name not in ambiguous}
