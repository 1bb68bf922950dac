"""The trained model written back into the quantized ONNX model it was made from.

Only initializers change, never the graph: the integers and scales of every weight (LR-QAT's
adapters merged into the integers, so no adapter remains), every activation scale, every trained
float (biases, norms), and the int32 biases, re-quantized at ``input scale x weight scale`` where
the model used that rule (per-channel int8 layers, as onnxruntime's integer kernels assume) and
at their own scale otherwise. So what ``edgesdk deploy`` and onnxruntime consume is exactly the
structure PTQ wrote. The ONNX metadata ``edgesdk.qat`` records how it was trained (edgesdk.training.origin).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from edgesdk.training.graph_module import GraphModule
from edgesdk.training.origin import TrainingOrigin, with_origin
from edgesdk.training.quantizers import ActivationQuantizer, LowRankWeightQuantizer, WeightQuantizer

_PACKED = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)


def _as_stored(original: onnx.TensorProto, values: np.ndarray) -> onnx.TensorProto:
    """``values`` as an initializer of ``original``'s name, type and shape."""
    if original.data_type in _PACKED:
        return helper.make_tensor(original.name, original.data_type, list(original.dims), values.astype(np.int64).ravel().tolist())
    dtype = helper.tensor_dtype_to_np_dtype(original.data_type)
    return numpy_helper.from_array(np.array(values.reshape(tuple(original.dims)), dtype=dtype), original.name)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def exported(module: GraphModule, origin: TrainingOrigin) -> onnx.ModelProto:
    """A copy of the model ``module`` was built from, holding its trained values."""
    proto = onnx.ModelProto()
    proto.CopyFrom(module.proto)
    graph = proto.graph
    new: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for weight in module.weight_of.values():
            quantizer = cast(WeightQuantizer | LowRankWeightQuantizer, module.weights[weight.key])
            new[weight.integers] = _numpy(quantizer.integers())
            new[weight.scale] = _numpy(quantizer.scale())
        for scale_name, key in module.activation_of.items():
            new[scale_name] = _numpy(cast(ActivationQuantizer, module.activations[key]).scale)
        for name, key in module.float_of.items():
            new[name] = _numpy(module.floats[key])
        originals = {init.name: init for init in graph.initializer}
        producers = {output: node for node in graph.node for output in node.output}
        layers = {node.output[0]: node for node in graph.node if node.op_type in ("Conv", "Gemm")}
        for bias in module.bias_of.values():
            value = _numpy(module.floats[bias.key]).astype(np.float64)
            scale = numpy_helper.to_array(originals[bias.scale]).astype(np.float64)
            product = _scale_product(layers.get(bias.layer), scale, module, producers, originals, new)
            if product is not None:
                scale = new[bias.scale] = product
            zero = numpy_helper.to_array(originals[bias.zero_point]).astype(np.float64) if bias.zero_point else 0.0
            limits = np.iinfo(np.int32)
            new[bias.integers] = np.clip(np.round(value / scale) + zero, limits.min, limits.max)
    for index, init in enumerate(graph.initializer):
        if init.name in new:
            graph.initializer[index].CopyFrom(_as_stored(init, new[init.name]))
    with_origin(proto, origin)
    return proto


def _scale_product(layer, bias_scale: np.ndarray, module: GraphModule, producers, originals, new) -> np.ndarray | None:
    """``input scale x weight scale`` of ``layer`` (trained) when its bias was quantized at
    ``bias_scale`` by that rule (at PTQ's scales), else None."""
    if layer is None or len(layer.input) < 3:
        return None
    source = producers.get(layer.input[0])
    weight = module.weight_of.get(layer.input[1])
    if source is None or source.op_type != "DequantizeLinear" or weight is None or source.input[1] not in module.activation_of:
        return None
    before = numpy_helper.to_array(originals[source.input[1]]).astype(np.float64) * numpy_helper.to_array(originals[weight.scale]).astype(np.float64)
    if before.shape != bias_scale.shape or not np.allclose(before, bias_scale, rtol=1e-5, atol=0):
        return None
    return new[source.input[1]].astype(np.float64) * new[weight.scale].astype(np.float64)
