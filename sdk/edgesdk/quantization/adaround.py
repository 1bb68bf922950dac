"""AdaRound (Nagel et al. 2020): learn whether each weight rounds up or down, within a time bound.

Rounding every weight to the nearest integer minimizes each weight's error, not the layer's. For
a layer ``y = W x`` with weights stored as integers ``q`` times a per-channel or per-group scale
``s``, AdaRound keeps ``floor(W / s)`` and learns a soft rounding ``h(V)`` in [0, 1] per weight
(a rectified sigmoid) that minimizes the output error on the layer's float inputs,

    E[||(s * (floor(W/s) + h(V)) - W) x||^2] + lambda * sum(1 - |2 h(V) - 1|^beta),

where the regularizer, with ``beta`` annealed from 20 to 2, drives ``h`` to 0 or 1. The output
error needs only ``C = E[x x^T]`` (per conv group), accumulated once from the calibration samples
(im2col patches for a convolution), so each step is a (rows x depth) x (depth x depth) product,
optimized with Adam in numpy. One deadline covers the covariances and the optimization (the
layers' inputs are collected first, in one onnxruntime run): each layer gets an equal share of the
time left and stops at ``ITERATIONS`` or when its share is spent; a layer keeps the learned
rounding only if its output error beats round-to-nearest on the samples.

Works on the integer weights of any quantized model edgesdk makes (int8 QDQ, w4a8, w8a16, w4a16)
whose layers keep their float model's node names; weights must be symmetric (zero point 0).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import onnx
from onnx import numpy_helper

from edgesdk.progress import counted, stage
from edgesdk.quantization.bias_correction import SAMPLES
from edgesdk.quantization.ptq import intermediate_values

ITERATIONS = 1000
LEARNING_RATE = 1e-2
REGULARIZATION = 0.1  # lambda, against the output error normalized by round-to-nearest's
WARMUP = 0.2  # share of the steps without the regularizer
GAMMA, ZETA = -0.1, 1.1  # the rectified sigmoid's stretch
MAX_PATCHES = 4096  # conv positions per sample used for E[x x^T]


@dataclasses.dataclass
class LayerResult:
    node: str
    nearest_error: float  # mean squared output error, round-to-nearest
    error: float  # with the rounding kept (learned if it won)
    steps: int
    learned: bool


@dataclasses.dataclass
class _Layer:
    node: onnx.NodeProto  # the conv/matmul in the float model
    stored: onnx.TensorProto  # its integer weights in the quantized model
    scales: np.ndarray  # per element of ``stored``
    low: int
    high: int
    weight: np.ndarray  # float weights in the layout of ``stored``
    transposed: bool  # stored as (out, ...) (conv, Gemm transB) rather than (in, out)
    float_shape: tuple[int, ...]  # the float model's weight shape (a conv's kernel size)

    def rows(self, array: np.ndarray) -> np.ndarray:
        """``array`` (in the stored layout) as (output channels, input vector)."""
        return array.reshape(array.shape[0], -1) if self.transposed else array.T

    def stored_layout(self, rows: np.ndarray) -> np.ndarray:
        return rows.reshape(self.weight.shape) if self.transposed else rows.T


def adaround(quantized: onnx.ModelProto, float_model: onnx.ModelProto, samples, seconds: float) -> tuple[onnx.ModelProto, list[LayerResult]]:
    """``quantized`` with its conv/matmul integer weights re-rounded by AdaRound in ``seconds``."""
    from edgesdk.quantization.ptq import named_nodes

    float_model = named_nodes(float_model)  # the names the quantizer gave the layers
    proto = onnx.ModelProto()
    proto.CopyFrom(quantized)
    layers = _layers(proto, float_model)
    if not layers:
        return proto, []
    samples = samples[:SAMPLES]
    stage("AdaRound: the layers' inputs on the samples")
    inputs = intermediate_values(float_model, list(dict.fromkeys(layer.node.input[0] for layer in layers)), samples)
    results = []
    # One deadline for all: each layer's covariance counts against it, and each layer gets an equal
    # share of what is left (a layer reached with no time left keeps its nearest rounding).
    deadline = time.monotonic() + seconds
    for done, layer in enumerate(counted(layers, "AdaRound", lambda layer: layer.node.name)):
        covariance = _covariance(layer.node, layer.float_shape, inputs[layer.node.input[0]])
        results.append(_round_layer(layer, covariance, max(0.0, deadline - time.monotonic()) / (len(layers) - done)))
    return proto, results


def _attr(node, name, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _layers(proto: onnx.ModelProto, float_model: onnx.ModelProto) -> list[_Layer]:
    """Each conv/matmul of ``proto`` whose weight is a DequantizeLinear of an integer initializer
    (through Reshape/Cast), paired with the float model's node of the same name."""
    initializers = {init.name: init for init in proto.graph.initializer}
    float_initializers = {init.name: init for init in float_model.graph.initializer}
    float_nodes = {node.name: node for node in float_model.graph.node if node.name}
    producers = {out: node for node in proto.graph.node for out in node.output}
    layers = []
    for node in proto.graph.node:
        twin = float_nodes.get(node.name)
        if node.op_type not in ("Conv", "MatMul", "Gemm") or twin is None or len(twin.input) < 2 or twin.input[1] not in float_initializers:
            continue
        source = producers.get(node.input[1])
        while source is not None and source.op_type in ("Reshape", "Cast"):
            source = producers.get(source.input[0])
        if source is None or source.op_type != "DequantizeLinear" or source.input[0] not in initializers or source.input[1] not in initializers:
            continue
        if len(source.input) > 2 and source.input[2] and np.any(numpy_helper.to_array(initializers[source.input[2]])):
            continue  # asymmetric weights
        stored = initializers[source.input[0]]
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.INT8: 8}.get(stored.data_type)
        if bits is None:
            continue
        values = numpy_helper.to_array(stored)
        scale = numpy_helper.to_array(initializers[source.input[1]]).astype(np.float32)
        weight = numpy_helper.to_array(float_initializers[twin.input[1]]).astype(np.float32)
        transposed = twin.op_type == "Conv" or bool(_attr(twin, "transB", 0))
        if (twin.op_type == "Conv" and weight.ndim != 4) or weight.size != values.size or (not transposed and weight.shape != values.shape):
            continue
        axis, block = _attr(source, "axis", 1) % values.ndim, _attr(source, "block_size", 0)
        in_layout = weight.reshape(values.shape) if transposed else weight
        layers.append(
            _Layer(twin, stored, _spread(scale, values.shape, axis, block), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, in_layout, transposed, weight.shape)
        )
    return layers


def _spread(scale: np.ndarray, shape, axis: int, block: int) -> np.ndarray:
    """A per-element scale of ``shape`` from a per-tensor, per-axis or blocked one."""
    if scale.size == 1:
        return np.full(shape, float(scale.reshape(-1)[0]), np.float32)
    if block:
        return np.repeat(scale, block, axis=axis)[tuple(slice(0, n) for n in shape)]
    view = [1] * len(shape)
    view[axis] = -1
    return np.broadcast_to(scale.reshape(view), shape).astype(np.float32)


def _covariance(node: onnx.NodeProto, weight_shape, values: np.ndarray) -> np.ndarray:
    """E[x x^T] of the layer's input vectors: (groups, depth, depth); conv inputs as im2col patches."""
    if node.op_type != "Conv":
        x = values.reshape(-1, values.shape[-1]).astype(np.float64)
        return (x.T @ x / len(x))[None]
    kh, kw = weight_shape[2:]
    strides, dilations = _attr(node, "strides", [1, 1]), _attr(node, "dilations", [1, 1])
    pads, groups = _attr(node, "pads", [0, 0, 0, 0]), _attr(node, "group", 1)
    images = values.reshape(-1, *values.shape[-3:]).astype(np.float64)  # (samples x batch, C, H, W)
    images = np.pad(images, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = ((kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1)
    windows = np.lib.stride_tricks.sliding_window_view(images, span, axis=(2, 3))[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]]
    channels = images.shape[1] // groups
    rng = np.random.default_rng(0)
    total: np.ndarray | None = None
    count = 0
    for image in windows:  # (C, H', W', kh, kw)
        patches = image.transpose(1, 2, 0, 3, 4).reshape(-1, groups, channels * kh * kw)
        if len(patches) > MAX_PATCHES:
            patches = patches[rng.choice(len(patches), MAX_PATCHES, replace=False)]
        part = np.einsum("pgi,pgj->gij", patches, patches)
        total = part if total is None else total + part
        count += len(patches)
    assert total is not None  # values hold at least one sample (intermediate_values stacks one per sample)
    return total / count


def _round_layer(layer: _Layer, covariance: np.ndarray, seconds: float) -> LayerResult:
    weight, scale = layer.rows(layer.weight).astype(np.float64), layer.rows(layer.scales).astype(np.float64)
    groups = covariance.shape[0]
    per_group = weight.shape[0] // groups

    def output_error(quantized_weight) -> float:
        error = (quantized_weight - weight).reshape(groups, per_group, -1)
        return float(np.einsum("gri,gij,grj->", error, covariance, error) / weight.shape[0])

    def gradient_of(error):
        shaped = error.reshape(groups, per_group, -1)
        return 2 * np.einsum("gri,gij->grj", shaped, covariance).reshape(error.shape) / weight.shape[0]

    floor = np.floor(weight / scale)
    nearest = np.clip(np.round(weight / scale), layer.low, layer.high)
    nearest_error = output_error(nearest * scale)
    rest = np.clip(weight / scale - floor, 1e-3, 1 - 1e-3)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)
    first, second = np.zeros_like(v), np.zeros_like(v)
    start, step = time.monotonic(), 0
    normalizer = max(nearest_error, 1e-30)
    while step < ITERATIONS and time.monotonic() - start < seconds:
        step += 1
        sigmoid = 1 / (1 + np.exp(-v))
        stretched = sigmoid * (ZETA - GAMMA) + GAMMA
        h = np.clip(stretched, 0, 1)
        soft = np.clip(floor + h, layer.low, layer.high) * scale
        grad_h = gradient_of(soft - weight) * scale / normalizer
        progress = step / ITERATIONS
        if progress > WARMUP:
            beta = 20 + (2 - 20) * (progress - WARMUP) / (1 - WARMUP)
            centered = 2 * h - 1
            grad_h += REGULARIZATION / h.size * -beta * np.abs(centered) ** (beta - 1) * np.sign(centered) * 2
        inside = (stretched > 0) & (stretched < 1) & (floor + h >= layer.low) & (floor + h <= layer.high)
        grad_v = grad_h * inside * (ZETA - GAMMA) * sigmoid * (1 - sigmoid)
        first = 0.9 * first + 0.1 * grad_v
        second = 0.999 * second + 0.001 * grad_v**2
        v -= LEARNING_RATE * (first / (1 - 0.9**step)) / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
    learned = np.clip(floor + (np.clip((1 / (1 + np.exp(-v))) * (ZETA - GAMMA) + GAMMA, 0, 1) >= 0.5), layer.low, layer.high)
    error = output_error(learned * scale)
    keep = error < nearest_error
    chosen = learned if keep else nearest
    stored = numpy_helper.to_array(layer.stored)
    updated = layer.stored_layout(chosen).astype(stored.dtype)
    if layer.stored.data_type == onnx.TensorProto.INT4:
        layer.stored.CopyFrom(onnx.helper.make_tensor(layer.stored.name, onnx.TensorProto.INT4, list(updated.shape), updated.ravel().tolist()))
    else:
        layer.stored.CopyFrom(numpy_helper.from_array(updated, layer.stored.name))
    return LayerResult(layer.node.name, nearest_error, min(error, nearest_error), step, bool(keep))
