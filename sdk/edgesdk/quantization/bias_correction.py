"""Empirical bias correction (Nagel et al. 2019; AIMET's "empirical" mode).

Rounding weights shifts each output channel's mean: ``E[W_q x] != E[W x]``, and the shift adds up
through the network. Layer by layer, in graph order, the quantized model and the float model run
on the calibration samples; the mean difference of each conv/Gemm output channel (over samples
and positions) is subtracted from that layer's bias, and the next layer is measured with the
corrections so far in place. Works on any quantized model whose layers keep their float model's
output names (onnxruntime's QDQ and edgesdk's weight-only models do), with a bias that is a float
initializer or an int32 one behind a DequantizeLinear (QDQ). Layers without a bias are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgesdk.progress import stage
from edgesdk.quantization.ptq import intermediate_values

SAMPLES = 64  # enough for a per-channel mean; each layer costs one pass over them


def _channel_mean(values: np.ndarray) -> np.ndarray:
    """Mean per channel (axis 1 of a layer's output after the sample axis; the last for Gemm)."""
    values = values.astype(np.float64)
    return values.mean(axis=tuple(i for i in range(values.ndim) if i != 2)) if values.ndim > 3 else values.reshape(-1, values.shape[-1]).mean(axis=0)


def correct_biases(quantized: onnx.ModelProto, float_model: onnx.ModelProto, samples) -> tuple[onnx.ModelProto, list[str]]:
    """``quantized`` with its conv/Gemm biases corrected on ``samples``; the corrected nodes' names."""
    stage("bias correction")
    samples = samples[:SAMPLES]
    proto = onnx.ModelProto()
    proto.CopyFrom(quantized)
    initializers = {init.name: init for init in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}
    casts = {node.input[0]: node.output[0] for node in proto.graph.node if node.op_type == "Cast"}
    matches: dict[str, tuple[str, str]] = {}  # layer -> (its output in the quantized model, the float model's value of that layer)
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2:
            # A float16 model's graph output is a cast of the layer's output (inputs and outputs keep their types).
            for name in (node.output[0], casts.get(node.output[0])):
                if not name:
                    continue
                twin = _float_twin(node.op_type, name, float_model)
                if twin is not None:
                    matches[node.output[0]] = (name, twin)
                    break
    if not matches:
        return proto, []
    reference = intermediate_values(float_model, list(dict.fromkeys(twin for _, twin in matches.values())), samples)
    corrected = []
    for node in proto.graph.node:
        bias = _bias_of(node.input[2], initializers, producers) if node.output[0] in matches else None
        if bias is None:
            continue
        name, twin = matches[node.output[0]]
        shift = _channel_mean(intermediate_values(proto, [name], samples)[name]) - _channel_mean(reference[twin])
        bias(shift)
        corrected.append(node.name or node.output[0])
    return proto, corrected


def _float_twin(op_type: str, name: str, float_model: onnx.ModelProto) -> str | None:
    """The float model's output of the layer (an ``op_type``) whose quantized output is ``name``:
    the value of that name made by the same op, or the input of the ReLU/Clip whose name the layer
    took (onnxruntime's QDQ quantizer drops an activation its quantization clips)."""
    producers = {out: n for n in float_model.graph.node for out in n.output}
    twin = producers.get(name)
    if twin is not None and twin.op_type in ("Relu", "Clip") and twin.input[0] in producers:
        twin = producers[twin.input[0]]
    return twin.output[0] if twin is not None and twin.op_type == op_type else None


def _bias_of(name: str, initializers, producers):
    """A function subtracting a per-channel shift from the bias ``name``, or None."""
    if name in initializers:
        tensor = initializers[name]

        def subtract(shift):
            array = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array((array.astype(np.float64) - shift).astype(array.dtype), tensor.name))

        return subtract
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in initializers or node.input[1] not in initializers:
        return None
    stored, scale = initializers[node.input[0]], numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    if stored.data_type != onnx.TensorProto.INT32:
        return None

    def subtract_quantized(shift):
        array = numpy_helper.to_array(stored)
        stored.CopyFrom(numpy_helper.from_array((array - np.round(shift / scale)).astype(np.int32), stored.name))

    return subtract_quantized
