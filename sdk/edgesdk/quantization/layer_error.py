"""Per-layer size and error of a quantized model: where its bytes go and where its error builds up.

For each convolution and matmul of the quantized model: the bytes its constant inputs take as
stored (int8 or packed int4 weights, scales, bias) and the bits that makes per weight; and, on the
calibration samples, how far the value the next layer sees is from the float model's value of
the same tensor. That error is cumulative (all layers before it are quantized too), as in
onnxruntime's ``qdq_loss_debug`` and AIMET's per-layer output comparison: a layer whose SQNR drops
far below the one before it is where precision is lost.

Layers are matched by tensor name, which onnxruntime's QDQ quantizer and edgesdk's weight-only
rewrites keep; the quantized value is read after the layer's output quantize-dequantize pair
(what the next layer consumes: a folded ReLU's clip included).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.frontend.agreement import cosine
from edgesdk.quantization.ptq import QUANTIZABLE, intermediate_values
from edgesdk.quantization.schemes import stored_bytes

SAMPLES = 16  # two runs exposing every layer's output: the error's order of magnitude, not its last digit


class LayerError(BaseModel):
    """One convolution or matmul of the quantized model."""

    model_config = ConfigDict(extra="forbid")

    node: str
    op_type: str
    weights: int = Field(description="Weight elements.")
    stored_bytes: int = Field(description="Bytes of its constant inputs as stored (weights, scales, zero points, bias).")
    bits_per_weight: float = Field(description="stored_bytes x 8 / weights: 32 for float32, a little over 8 or 4 with scales.")
    sqnr_db: float | None = Field(
        None, description="Signal-to-quantization-noise ratio of its output against the float model's, in dB (None: not measured, or identical)."
    )
    cosine: float | None = Field(None, description="Cosine similarity of its output to the float model's (None: not measured).")


def _constants(name: str, initializers: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto]) -> set[str] | None:
    """The initializers ``name`` is computed from, when it depends on nothing else (a weight behind
    DequantizeLinear, Reshape or Gather); None for an activation."""
    if name in initializers:
        return {name}
    node = producers.get(name)
    if node is None:
        return None
    found: set[str] = set()
    for source in filter(None, node.input):
        constants = _constants(source, initializers, producers)
        if constants is None:
            return None
        found |= constants
    return found


def _consumed_value(name: str, consumers: dict[str, list[onnx.NodeProto]]) -> str:
    """What the layers after it read of tensor ``name``: its quantize-dequantize pair's output if it has one."""
    for q in consumers.get(name, []):
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return name


def _sqnr_db(quantized: np.ndarray, reference: np.ndarray) -> float | None:
    noise = float(np.sum((quantized - reference) ** 2))
    signal = float(np.sum(reference**2))
    return 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None


def layer_errors(quantized: onnx.ModelProto, float_model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> list[LayerError]:
    """Size of every conv/matmul of ``quantized``, and its output's error against ``float_model`` on
    (up to ``SAMPLES`` of) ``samples`` where the float model has the same tensor (no samples: sizes only)."""
    graph = quantized.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    shapes = {info.name: info for info in onnx.shape_inference.infer_shapes(quantized).graph.value_info}
    float_tensors = {out for node in float_model.graph.node for out in node.output}

    layers, compared = [], {}
    for index, node in enumerate(graph.node):
        if node.op_type not in QUANTIZABLE:
            continue
        constant_inputs = [(name, found) for name in node.input[:2] if name and (found := _constants(name, initializers, producers)) is not None]
        if not constant_inputs:
            continue  # a product of two activations (attention): no weight to size
        weight, constants = constant_inputs[0]
        for bias in filter(None, node.input[2:]):
            constants |= _constants(bias, initializers, producers) or set()
        if weight in initializers:
            elements = math.prod(initializers[weight].dims)
        else:
            dims = shapes[weight].type.tensor_type.shape.dim if weight in shapes else []
            elements = math.prod(d.dim_value for d in dims) if dims and all(d.dim_value > 0 for d in dims) else 0
        stored = sum(stored_bytes(initializers[name]) for name in constants)
        name = node.name or f"{node.op_type}_{index}"
        bits = round(8 * stored / elements, 2) if elements else 0.0
        layers.append(LayerError(node=name, op_type=node.op_type, weights=elements, stored_bytes=stored, bits_per_weight=bits))
        if node.output[0] in float_tensors:
            compared[name] = (_consumed_value(node.output[0], consumers), node.output[0])
    if samples and compared:
        samples = samples[:SAMPLES]
        ours = intermediate_values(quantized, [value for value, _ in compared.values()], samples)
        theirs = intermediate_values(float_model, [twin for _, twin in compared.values()], samples)
        for layer in layers:
            if layer.node in compared:
                value, twin = compared[layer.node]
                mine, reference = ours[value].astype(np.float64), theirs[twin].astype(np.float64)
                if mine.shape == reference.shape:
                    layer.sqnr_db = _sqnr_db(mine, reference)
                    layer.cosine = cosine(mine, reference)
    return layers
