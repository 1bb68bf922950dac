"""A quantized ONNX model (edgesdk's PTQ output: QDQ, or blocked-dequantize weights) as a trainable
torch module, in its own graph.

The graph is not rewritten into torch layers: it runs node by node (edgesdk.training.operators),
and the quantization nodes become quantizer simulations whose starting values are PTQ's
(edgesdk.training.quantizers), so training starts exactly where PTQ ended:

- ``DequantizeLinear`` of a constant int8/int4 weight -> a ``WeightQuantizer`` (full QAT) or a
  ``LowRankWeightQuantizer`` (``rank``: LR-QAT);
- ``DequantizeLinear`` of a constant int32 bias -> its float value, trained with the weights;
- ``QuantizeLinear -> DequantizeLinear`` on an activation -> an ``ActivationQuantizer`` (one
  learnable scale per scale initializer, as the model shares them);
- every other float initializer with more than one element, all finite (biases, norms,
  embeddings), is trained by full QAT and frozen by LR-QAT, as the paper does; scalars (epsilons,
  exponents) and masks with infinities are constants.

``Trained`` records what each trained value was in the ONNX model, for the export
(edgesdk.training.export).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgesdk.errors import UserInputError
from edgesdk.training.operators import FLOAT, OPERATORS
from edgesdk.training.quantizers import ActivationQuantizer, Grid, LowRankWeightQuantizer, WeightQuantizer

Tensor = torch.Tensor

_QUANTIZATION = ("QuantizeLinear", "DequantizeLinear")
_INTEGER_RANGES = {
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT4: (-8, 7),
    onnx.TensorProto.UINT4: (0, 15),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.UINT16: (0, 65535),
}


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """A weight DequantizeLinear: the initializers of its integers and scales."""

    key: str  # the module's key in GraphModule.weights
    integers: str
    scale: str


@dataclasses.dataclass(frozen=True)
class QuantizedBias:
    """An int32 bias DequantizeLinear feeding ``layer``."""

    key: str  # in GraphModule.floats
    integers: str
    scale: str
    zero_point: str | None
    layer: str  # the Conv/Gemm node's first output


def _attributes(node: onnx.NodeProto) -> dict:
    found = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = _tensor(numpy_helper.to_array(value))
        found[attribute.name] = value
    return found


def _tensor(array: np.ndarray) -> Tensor:
    if array.dtype.kind == "f":
        return torch.from_numpy(np.array(array, dtype=np.float32))
    if array.dtype in (np.uint16, np.uint32, np.uint64):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(np.array(array))  # a copy: torch writes to what it holds


def _trainable_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 1 and bool(np.all(np.isfinite(array)))


class GraphModule(nn.Module):
    """``proto``'s graph with its quantizers trainable: full QAT, or LR-QAT with adapters of ``rank``."""

    def __init__(self, proto: onnx.ModelProto, *, rank: int | None = None, seed: int = 0):
        super().__init__()
        graph = proto.graph
        self.proto = proto
        self.output_names = [value.name for value in graph.output]
        arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        types = {init.name: init.data_type for init in graph.initializer}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        unsupported = sorted({node.op_type for node in graph.node if node.op_type not in (*OPERATORS, *_QUANTIZATION, "Constant")})
        if unsupported or any(node.domain not in ("", "ai.onnx") for node in graph.node):
            names = unsupported or sorted({f"{node.domain}.{node.op_type}" for node in graph.node if node.domain not in ("", "ai.onnx")})
            raise UserInputError(f"qat: cannot train operator(s) {', '.join(names)}", hint="quantize with `edgesdk quantize` (post-training) instead")

        self.weights = nn.ModuleDict()
        self.activations = nn.ModuleDict()
        self.floats = nn.ParameterDict()
        self.weight_of: dict[str, QuantizedWeight] = {}  # DequantizeLinear output -> its weight
        self.bias_of: dict[str, QuantizedBias] = {}
        self.float_of: dict[str, str] = {}  # initializer -> key in self.floats
        self.activation_of: dict[str, str] = {}  # scale initializer -> key in self.activations
        generator = torch.Generator().manual_seed(seed)
        used: set[str] = set()
        for node in graph.node:
            if node.op_type != "DequantizeLinear" or node.input[0] not in arrays:
                continue
            integers = arrays[node.input[0]]
            zero = arrays.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            attributes = _attributes(node)
            if types[node.input[0]] == onnx.TensorProto.INT32:  # a bias, trained in float
                scale = arrays[node.input[1]].astype(np.float32)
                value = (integers.astype(np.float64) - (0 if zero is None else zero)) * scale
                key = f"b{len(self.bias_of)}"
                self.floats[key] = nn.Parameter(_tensor(value.astype(np.float32)), requires_grad=rank is None)
                layer = next((user.output[0] for user in consumers.get(node.output[0], []) if user.op_type in ("Conv", "Gemm")), "")
                self.bias_of[node.output[0]] = QuantizedBias(key, node.input[0], node.input[1], node.input[2] if zero is not None else None, layer)
                used.update(node.input)
                continue
            if types[node.input[0]] not in _INTEGER_RANGES or integers.ndim < 2 or (zero is not None and np.any(zero != 0)):
                continue  # dequantized once, as a constant
            low, high = _INTEGER_RANGES[types[node.input[0]]]
            scale = arrays[node.input[1]].astype(np.float32)
            grid = Grid(integers.shape, scale.shape, attributes.get("axis", 1), attributes.get("block_size", 0), low, high)
            # Group-wise scales are stored as float16 by edgesdk's blocked kernels (w4a16, w4a8).
            half_scales = bool(grid.block) or types[node.input[1]] == onnx.TensorProto.FLOAT16
            key = f"w{len(self.weight_of)}"
            if rank is None:
                weight = torch.from_numpy(integers.astype(np.float32)) * grid.expand(_tensor(scale))
                self.weights[key] = WeightQuantizer(weight, _tensor(scale), grid, half_scales)
            else:
                self.weights[key] = LowRankWeightQuantizer(torch.from_numpy(integers.astype(np.int8)), _tensor(scale), grid, half_scales, rank, generator)
            self.weight_of[node.output[0]] = QuantizedWeight(key, node.input[0], node.input[1])
            used.update(node.input)
        for node in graph.node:
            if node.op_type == "QuantizeLinear":
                scale_name = node.input[1]
                if scale_name not in arrays or (len(node.input) > 2 and node.input[2] not in arrays):
                    raise UserInputError(f"qat: QuantizeLinear '{node.name or node.output[0]}' has a computed scale or zero point")
                if scale_name not in self.activation_of:
                    key = f"a{len(self.activation_of)}"
                    self.activations[key] = ActivationQuantizer(_tensor(arrays[scale_name]))
                    self.activation_of[scale_name] = key
                users = consumers.get(node.output[0], [])
                if node.output[0] in self.output_names or any(
                    user.op_type != "DequantizeLinear" or list(user.input[1:]) != list(node.input[1:]) for user in users
                ):
                    raise UserInputError(f"qat: the integers of QuantizeLinear '{node.name or node.output[0]}' are used other than by its DequantizeLinear")
                used.update(node.input[1:])
        self.constants: dict[str, Tensor] = {}
        for name, array in arrays.items():
            if name in used and not any(user.op_type not in _QUANTIZATION for user in consumers.get(name, [])):
                continue
            if _trainable_float(array):
                key = f"f{len(self.float_of)}"
                self.floats[key] = nn.Parameter(_tensor(array), requires_grad=rank is None)
                self.float_of[name] = key
            else:
                self.constants[name] = _tensor(array)
        self.attributes = [_attributes(node) for node in graph.node]
        for node, attributes in zip(graph.node, self.attributes, strict=True):
            if node.op_type == "Split" and "num_outputs" not in attributes:
                attributes["outputs"] = len(node.output)
        self.zero_points = {name: _tensor(arrays[name]) for node in graph.node if node.op_type == "QuantizeLinear" for name in node.input[2:3]}
        self.ranges = {
            node.output[0]: _INTEGER_RANGES[types[node.input[2]]] if len(node.input) > 2 else _INTEGER_RANGES[onnx.TensorProto.UINT8]
            for node in graph.node
            if node.op_type == "QuantizeLinear"
        }

    def trainable(self) -> list[nn.Parameter]:
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def quantized_weights(self) -> dict[str, Tensor]:
        """Every quantized weight as the model computes it now (once per step, outside vmap)."""
        return {name: self.weights[weight.key]() for name, weight in self.weight_of.items()}

    def run(self, inputs: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> list[Tensor]:
        """One sample through the graph (``inputs``: the model's own shapes)."""
        values: dict[str, Tensor | None] = {**self.constants, **weights, **inputs}
        for name, key in self.float_of.items():
            values[name] = self.floats[key]
        for name, bias in self.bias_of.items():
            values[name] = self.floats[bias.key]
        for node, attributes in zip(self.proto.graph.node, self.attributes, strict=True):
            if node.output[0] in values and node.op_type == "DequantizeLinear":
                continue  # a weight or a bias, set above
            if node.op_type == "QuantizeLinear":
                low, high = self.ranges[node.output[0]]
                zero = self.zero_points.get(node.input[2]) if len(node.input) > 2 else torch.zeros(())
                assert zero is not None
                values[node.output[0]] = self.activations[self.activation_of[node.input[1]]](values[node.input[0]], zero, low, high)
                continue
            if node.op_type == "DequantizeLinear":
                values[node.output[0]] = values[node.input[0]] if node.input[0] in self.ranges else _dequantize(node, values)
                continue
            if node.op_type == "Constant":
                values[node.output[0]] = next(iter(attributes.values()))
                continue
            arguments = [values[name] if name else None for name in node.input]
            while arguments and arguments[-1] is None:
                arguments.pop()
            results = OPERATORS[node.op_type](*arguments, **attributes)
            for name, result in zip(node.output, results, strict=False):
                if name:
                    values[name] = result
        return [values[name] for name in self.output_names]  # type: ignore[misc]

    def forward(self, batch: Mapping[str, Tensor]) -> list[Tensor]:
        """A batch of samples (each input stacked on a new first axis) through the graph."""
        weights = self.quantized_weights()
        return torch.func.vmap(lambda sample: self.run(sample, weights))(dict(batch))


def _dequantize(node: onnx.NodeProto, values: Mapping[str, Tensor | None]) -> Tensor:
    """A DequantizeLinear of constants the model does not train (asymmetric weights, say)."""
    integers, scale = values[node.input[0]], values[node.input[1]]
    assert integers is not None and scale is not None
    zero = values[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    attributes = _attributes(node)
    grid = Grid(tuple(integers.shape), tuple(scale.shape), attributes.get("axis", 1), attributes.get("block_size", 0), 0, 0)
    centred = integers.to(FLOAT) - (0 if zero is None else grid.expand(zero.to(FLOAT)))
    return centred * grid.expand(scale.to(FLOAT))
