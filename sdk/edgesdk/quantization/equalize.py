"""Cross-layer equalization (Nagel et al., ICCV 2019), on the float ONNX model before quantizing.

For two convolutions joined by a ReLU, ``A -> Relu -> B``, ReLU(x / s) = ReLU(x) / s for s > 0, so
dividing output channel i of A (weights and bias) by s_i and multiplying B's input channel i by
s_i leaves the model's function unchanged. With ``s_i = sqrt(r_A,i / r_B,i)`` (the largest
|weight| of A's output channel i and of B's input channel i), both become ``sqrt(r_A,i r_B,i)``:
channels with tiny weights next to channels with huge ones no longer share one int8 grid badly.
Pairs qualify when A's output feeds only the ReLU and the ReLU's output only B, and B reads A's
channels one to one (a regular convolution, or a depthwise one).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

EPSILON = 1e-12


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def equalize(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[tuple[str, str]]]:
    """A copy of ``proto`` with every qualifying Conv -> Relu -> Conv pair equalized, and the pairs."""
    model = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    pairs = []
    for first in graph.node:
        if first.op_type != "Conv" or len(first.input) < 2 or first.input[1] not in weights:
            continue
        after = consumers.get(first.output[0], [])
        if len(after) != 1 or after[0].op_type != "Relu" or first.output[0] in outputs:
            continue
        relu = after[0]
        following = consumers.get(relu.output[0], [])
        if len(following) != 1 or following[0].op_type != "Conv" or relu.output[0] in outputs:
            continue
        second = following[0]
        if second.input[0] != relu.output[0] or second.input[1] not in weights:
            continue
        if any(len(consumers[name]) != 1 for name in (*first.input[1:], second.input[1])):
            continue  # a weight shared with another node: scaling it would change that node
        w_a = numpy_helper.to_array(weights[first.input[1]]).astype(np.float64)
        w_b = numpy_helper.to_array(weights[second.input[1]]).astype(np.float64)
        channels, groups = w_a.shape[0], int(_attribute(second, "group", 1))
        depthwise = groups == channels and w_b.shape[1] == 1
        if not depthwise and (groups != 1 or w_b.shape[1] != channels):
            continue
        r_a = np.abs(w_a.reshape(channels, -1)).max(axis=1)
        r_b = np.abs(w_b.reshape(channels, -1)).max(axis=1) if depthwise else np.abs(np.moveaxis(w_b, 1, 0).reshape(channels, -1)).max(axis=1)
        if np.any(r_a < EPSILON) or np.any(r_b < EPSILON):
            continue
        scale = np.sqrt(r_a / r_b)
        shape_b = (channels, 1, 1, 1) if depthwise else (1, channels, 1, 1)
        _replace(weights[first.input[1]], w_a / scale.reshape(-1, *([1] * (w_a.ndim - 1))))
        if len(first.input) > 2 and first.input[2] in weights:
            _replace(weights[first.input[2]], numpy_helper.to_array(weights[first.input[2]]).astype(np.float64) / scale)
        _replace(weights[second.input[1]], w_b * scale.reshape(shape_b[: w_b.ndim]))
        pairs.append((first.name or first.output[0], second.name or second.output[0]))
    return model, pairs


def _replace(initializer: onnx.TensorProto, values: np.ndarray) -> None:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(initializer.data_type)
    initializer.CopyFrom(numpy_helper.from_array(values.astype(dtype), initializer.name))
