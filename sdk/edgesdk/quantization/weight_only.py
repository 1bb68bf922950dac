"""Weight-only quantization (w4a16, w8a16): int4 or int8 weights, float16 activations.

Each convolution and matmul weight is quantized symmetrically in groups of ``group_size``
consecutive weights along its reduction axis (a conv's weights flattened over input channels and
kernel window, as ``(O, I*kh*kw)``), one float16 scale per group; ``group_size=None`` is one group
per output channel. No calibration data is needed: only weights change.

The result is one ONNX model: the float model converted to float16 activations (inputs and
outputs keep their types), whose quantized weights are ONNX opset-21 blocked ``DequantizeLinear``
nodes over int4/int8 initializers. onnxruntime runs it (it is what ``edgesdk quantize`` exports and
what a deploy checks the artifact against); the lowering turns each blocked dequantize into a
kernel that reads the packed integers and unpacks them inside its reduction loop
(edgesdk.compile.packed_kernels).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesdk.frontend.model import Model
from edgesdk.quantization.half import to_float16
from edgesdk.quantization.opset import converted, opset_of
from edgesdk.quantization.ptq import named_nodes

GROUP_SIZES = (32, 64, 128)
OPSET = 21  # DequantizeLinear with block_size and int4 inputs
IR_VERSION = 10  # int4 tensors


@dataclasses.dataclass
class QuantizedWeight:
    """One weight as ``rows`` output channels x ``depth`` reduction elements, grouped along depth."""

    name: str
    values: np.ndarray  # int8 holding the quantized integers, shape (rows, depth)
    scales: np.ndarray  # float16, shape (rows, ceil(depth / group))
    group: int
    bits: int

    def dequantized(self) -> np.ndarray:
        """float32 weights (rows, depth) as DequantizeLinear computes them (rounded to float16)."""
        scales = np.repeat(self.scales.astype(np.float32), self.group, axis=1)[:, : self.values.shape[1]]
        return (self.values.astype(np.float32) * scales).astype(np.float16).astype(np.float32)


def quantize_rows(name: str, weights: np.ndarray, bits: int, group: int | None) -> QuantizedWeight:
    """Symmetric group-wise quantization of ``weights`` (rows, depth): each group's largest
    magnitude maps to the largest positive integer."""
    rows, depth = weights.shape
    group = depth if group is None else min(group, depth)
    groups = -(-depth // group)
    padded = np.zeros((rows, groups * group), np.float32)
    padded[:, :depth] = weights
    largest = np.abs(padded.reshape(rows, groups, group)).max(axis=2)
    top = 2 ** (bits - 1) - 1
    # float16 scales: a group of tiny weights would round its scale to 0 (then 0/0 weights)
    scales = np.where(largest > 0, np.maximum(largest / top, np.finfo(np.float16).smallest_subnormal), 1.0).astype(np.float16)
    full = np.repeat(scales.astype(np.float32), group, axis=1)[:, :depth]
    values = np.clip(np.round(weights / full), -top - 1, top).astype(np.int8)
    return QuantizedWeight(name, values, scales, group, bits)


def weights_of(proto: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, np.ndarray]]:
    """Conv, MatMul and Gemm weights held in initializers, by initializer name."""
    initializers = {init.name: init for init in proto.graph.initializer}
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    found = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name not in initializers or uses[name] != 1:
            continue  # a computed or shared weight stays float
        array = numpy_helper.to_array(initializers[name])
        if array.dtype == np.float32 and (array.ndim == 4 if node.op_type == "Conv" else array.ndim == 2):
            found[name] = (node, array)
    return found


def is_transposed(node: onnx.NodeProto) -> bool:
    """Whether the weight is stored (out, depth): a Gemm with transB=1, or any Conv."""
    if node.op_type == "Conv":
        return True
    return node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)


def quantize_weight_only(model: Model, bits: int, group: int | None, *, only=None, keep_float=()) -> Model:
    """``model`` with float16 activations and its conv/matmul weights quantized to ``bits`` in
    groups of ``group`` (None: per output channel); ``only``/``keep_float``: node names."""
    named = named_nodes(model.proto)
    weights = quantize_weights(named, bits, group, only=only, keep_float=keep_float)
    half = to_float16(dataclasses.replace(model, proto=named))
    grouping = f"groups of {group}" if group else "per output channel"
    notes = [*model.notes, f"int{bits} weights ({len(weights)} layers, {grouping}), float16 activations"]
    # Not through load_model: onnxruntime's optimizer would wrap the float16 convolutions in casts.
    return dataclasses.replace(model, proto=with_blocked_weights(half.proto, weights, TensorProto.FLOAT16), notes=notes)


def quantize_weights(proto: onnx.ModelProto, bits: int, group: int | None, *, only=None, keep_float=()) -> dict[str, QuantizedWeight]:
    """The quantized weights of ``proto``'s convolutions and matmuls (by initializer name): of
    the nodes named in ``only`` (default all), except those named in ``keep_float``."""
    quantized = {}
    for name, (node, array) in weights_of(proto).items():
        if node.name in keep_float or (only is not None and node.name not in only):
            continue
        rows = array.reshape(array.shape[0], -1) if is_transposed(node) else array.T
        quantized[name] = quantize_rows(name, rows, bits, group)
    return quantized


def with_blocked_weights(proto: onnx.ModelProto, weights: dict[str, QuantizedWeight], float_type: int) -> onnx.ModelProto:
    """A copy of ``proto`` whose weights named in ``weights`` are blocked DequantizeLinear nodes
    producing ``float_type`` (a TensorProto type) in each layer's layout."""
    proto = at_blocked_opset(proto)
    graph = proto.graph
    by_name = {init.name: init for init in graph.initializer}
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        name = node.input[1] if len(node.input) > 1 else None
        if name in weights and name in by_name:
            made, initializers = _dequantize_nodes(weights[name], by_name[name], node, float_type)
            graph.node.extend(made)
            graph.initializer.extend(initializers)
            graph.initializer.remove(by_name.pop(name))
        graph.node.append(node)
    return proto


def _dequantize_nodes(weight: QuantizedWeight, original: onnx.TensorProto, node: onnx.NodeProto, float_type: int, output: str | None = None):
    """The nodes and initializers making ``weight`` (the float value ``output``, default its name)."""
    name, shape, output = weight.name, list(original.dims), output or weight.name
    transposed = is_transposed(node)
    values, scales = (weight.values, weight.scales) if transposed else (weight.values.T, weight.scales.T)
    integer_type = TensorProto.INT4 if weight.bits == 4 else TensorProto.INT8
    stored = helper.make_tensor(f"{name}_quantized", integer_type, list(values.shape), values.ravel().tolist())
    # Dequantized in the layer's type: float32 products of int4/int8 and float16 scales are exact,
    # what an integer kernel (w4a8) computes; float16 ones round like a float16 layer does.
    scales = scales if float_type == TensorProto.FLOAT16 else scales.astype(helper.tensor_dtype_to_np_dtype(float_type))
    scale = numpy_helper.from_array(np.ascontiguousarray(scales), f"{name}_scale")
    initializers = [stored, scale]
    out = f"{name}_dequantized"
    made = [
        helper.make_node(
            "DequantizeLinear", [stored.name, scale.name], [out], axis=1 if transposed else 0, block_size=weight.group, name=f"{name}_DequantizeLinear"
        )
    ]
    if len(shape) != 2:
        target = numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape")
        initializers.append(target)
        made.append(helper.make_node("Reshape", [out, target.name], [output], name=f"{name}_Reshape"))
    else:
        made[-1].output[0] = output
    return made, initializers


def at_blocked_opset(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` at ONNX opset >= 21 and IR version >= 10 (blocked int4 dequantize)."""
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    if opset_of(copy) < OPSET:
        copy = converted(copy, OPSET)
    copy.ir_version = max(copy.ir_version, IR_VERSION)
    return copy


def with_int4_weights(qdq: onnx.ModelProto, source: onnx.ModelProto, group: int | None) -> tuple[onnx.ModelProto, int]:
    """W4A8 from a W8A8 QDQ model: each int8 conv/matmul weight's DequantizeLinear replaced by a
    blocked int4 one, quantized from ``source``'s float weight of the same name (or from the int8
    values when the quantizer renamed it). Returns the model and how many weights changed."""
    proto = at_blocked_opset(qdq)
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    floats = {init.name: init for init in source.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced: dict[int, tuple[list, list]] = {}
    for node in graph.node:
        users = consumers.get(node.output[0], [])
        stored = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if stored is None or stored.data_type != TensorProto.INT8 or len(users) != 1 or users[0].op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        layer = users[0]
        if len(layer.input) < 2 or layer.input[1] != node.output[0]:
            continue
        name = node.input[0].removesuffix("_quantized")
        original = floats.get(name)
        if original is not None and list(original.dims) == list(stored.dims):
            array = numpy_helper.to_array(original).astype(np.float32)
        else:
            array = _dequantize_int8(node, initializers)  # what int8 holds
        rows = array.reshape(array.shape[0], -1) if is_transposed(layer) else array.T
        replaced[id(node)] = _dequantize_nodes(quantize_rows(name, rows, 4, group), stored, layer, TensorProto.FLOAT, output=node.output[0])
    nodes = list(graph.node)
    del graph.node[:]
    old = {name for node in nodes if id(node) in replaced for name in node.input}
    kept = [init for init in graph.initializer if init.name not in old]  # the int8 weights, scales, zero points
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in nodes:
        made, new = replaced.get(id(node), ([node], []))
        graph.node.extend(made)
        graph.initializer.extend(new)
    return proto, len(replaced)


def _dequantize_int8(node: onnx.NodeProto, initializers) -> np.ndarray:
    values = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * values.ndim
    if scale.size > 1:
        shape[axis] = -1
    return (values - zero.reshape(shape)) * scale.reshape(shape)
