"""Small ONNX models built from scratch with seeded weights (no download, byte-for-byte stable).

They cover the op families a deploy must handle: convolutions with batch norm, depthwise
convolution, residual adds, pooling, Gemm and Softmax (`tiny_cnn`); dense layers (`mlp`); and a
transformer encoder block whose head reshapes are computed in-graph with Shape -> Gather ->
Concat -> Reshape, on dynamic batch and sequence dims (`transformer_block`). For performance work:
MobileNetV2's and ResNet-18's layouts at 224x224 (`mobilenet_v2_like`, `resnet18_like`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesdk.frontend.model import topological_order

OPSET = 17


class GraphBuilder:
    """Collects nodes and seeded initializers; names are generated so builders stay short."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, array: np.ndarray, stem: str = "w") -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        return self.const((self.rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def model(self, name: str, inputs, outputs, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgesdk.testing")
        onnx.checker.check_model(model, full_check=True)
        return model

    def batch_norm(self, x: str, channels: int) -> str:
        scale = self.const((1.0 + 0.1 * self.rng.standard_normal(channels)).astype(np.float32))
        bias = self.const((0.1 * self.rng.standard_normal(channels)).astype(np.float32))
        mean = self.const((0.1 * self.rng.standard_normal(channels)).astype(np.float32))
        var = self.const((1.0 + 0.1 * self.rng.random(channels)).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)


def tiny_cnn(seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """Conv-BN-ReLU, depthwise Conv-BN-ReLU, pointwise Conv, residual Add, GAP, Gemm, Softmax.

    Input `image`: [N, 3, 32, 32] with a dynamic batch N.
    """
    g = GraphBuilder(seed)
    x = g.op("Relu", [g.batch_norm(g.op("Conv", ["image", g.weight((16, 3, 3, 3), 27)], pads=[1, 1, 1, 1], strides=[2, 2]), 16)])
    y = g.op("Relu", [g.batch_norm(g.op("Conv", [x, g.weight((16, 1, 3, 3), 9)], pads=[1, 1, 1, 1], group=16), 16)])
    y = g.op("Conv", [y, g.weight((16, 16, 1, 1), 16), g.const(np.zeros(16, np.float32))])
    x = g.op("Relu", [g.op("Add", [x, y])])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    logits = g.op("Gemm", [x, g.weight((classes, 16), 16), g.const(np.zeros(classes, np.float32))], transB=1)
    probs = g.op("Softmax", [logits], "probs", axis=-1)
    return g.model(
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(probs, TensorProto.FLOAT, ["N", classes])],
    )


def mlp(seed: int = 1, features: int = 64, hidden: int = 128, classes: int = 10) -> onnx.ModelProto:
    """Two hidden dense layers with ReLU. Input `features`: [N, 64] with a dynamic batch N."""
    g = GraphBuilder(seed)
    x = "features"
    for fan_in, fan_out in ((features, hidden), (hidden, hidden)):
        x = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.weight((fan_in, fan_out), fan_in)]), g.const(np.zeros(fan_out, np.float32))])])
    logits = g.op("Gemm", [x, g.weight((hidden, classes), hidden), g.const(np.zeros(classes, np.float32))], "logits")
    return g.model(
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])],
    )


def transformer_block(seed: int = 2, d_model: int = 64, heads: int = 4, ffn: int = 128) -> onnx.ModelProto:
    """Pre-LN encoder block: LayerNorm, multi-head attention, Erf-GELU feed-forward, residuals.

    Input `tokens`: [batch, seq, 64] with dynamic batch and seq; the head split/merge reshapes
    are computed in-graph from Shape, so they fold only once the input shape is bound.
    """
    g = GraphBuilder(seed)
    head_dim = d_model // heads

    def layer_norm(x: str) -> str:
        scale = g.const(np.ones(d_model, np.float32))
        bias = g.const(np.zeros(d_model, np.float32))
        return g.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-5)

    def dense(x: str, fan_in: int, fan_out: int) -> str:
        return g.op("Add", [g.op("MatMul", [x, g.weight((fan_in, fan_out), fan_in)]), g.const(np.zeros(fan_out, np.float32))])

    shape = g.op("Shape", ["tokens"])
    batch = g.op("Gather", [shape, g.const(np.array([0], np.int64), "idx")], axis=0)
    seq = g.op("Gather", [shape, g.const(np.array([1], np.int64), "idx")], axis=0)
    split_shape = g.op("Concat", [batch, seq, g.const(np.array([heads, head_dim], np.int64), "dims")], axis=0)
    merge_shape = g.op("Concat", [batch, seq, g.const(np.array([d_model], np.int64), "dims")], axis=0)

    def heads_first(x: str) -> str:  # [b, s, d] -> [b, h, s, hd]
        return g.op("Transpose", [g.op("Reshape", [x, split_shape])], perm=[0, 2, 1, 3])

    h = layer_norm("tokens")
    q, k, v = (heads_first(dense(h, d_model, d_model)) for _ in range(3))
    scores = g.op("Div", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), g.const(np.array(math.sqrt(head_dim), np.float32))])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge_shape])
    x = g.op("Add", ["tokens", dense(context, d_model, d_model)])

    h = dense(layer_norm(x), d_model, ffn)
    erf = g.op("Erf", [g.op("Div", [h, g.const(np.array(math.sqrt(2.0), np.float32))])])
    gelu = g.op("Mul", [g.op("Mul", [h, g.const(np.array(0.5, np.float32))]), g.op("Add", [erf, g.const(np.array(1.0, np.float32))])])
    out = g.op("Add", [x, dense(gelu, ffn, d_model)], "hidden")
    return g.model(
        "transformer_block",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq", d_model])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "seq", d_model])],
    )


def _conv(g: GraphBuilder, x: str, cin: int, cout: int, kernel: int, stride: int = 1, group: int = 1, relu: bool = True) -> str:
    weight = g.weight((cout, cin // group, kernel, kernel), cin // group * kernel * kernel)
    y = g.op("Conv", [x, weight, g.const(np.zeros(cout, np.float32))], pads=[kernel // 2] * 4, strides=[stride] * 2, group=group)
    return g.op("Relu", [y]) if relu else y


def branchy_net(seed: int = 3) -> onnx.ModelProto:
    """Two Inception-style blocks: four parallel branches (1x1, 3x3, 5x5, pool + 1x1) concatenated.

    Input `image`: [N, 3, 64, 64].
    """
    g = GraphBuilder(seed)
    x, channels = _conv(g, "image", 3, 32, 3, stride=2), 32  # 32x32
    for width in (16, 24):
        branches = [
            _conv(g, x, channels, width, 1),
            _conv(g, _conv(g, x, channels, width, 1), width, width, 3),
            _conv(g, _conv(g, x, channels, width // 2, 1), width // 2, width, 5),
            _conv(g, g.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]), channels, width, 1),
        ]
        x, channels = g.op("Concat", branches, axis=1), 4 * width
    logits = g.op(
        "Gemm", [g.op("Flatten", [g.op("GlobalAveragePool", [x])]), g.weight((10, channels), channels), g.const(np.zeros(10, np.float32))], "logits", transB=1
    )
    return g.model(
        "branchy_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 10])],
    )


def level_by_level_branches(seed: int = 5, branches: int = 4) -> onnx.ModelProto:
    """Parallel branches (a 1x1 conv widening to 96 channels, then one narrowing to 8) concatenated,
    with the nodes listed level by level, as some exporters write them: in the file's order every
    branch's wide tensor is live at once; branch by branch, one is. (The wide convs have no
    activation: fused with one, each would run where its activation is listed, next to its reader.)

    Input `image`: [N, 3, 64, 64]; output `features` [N, 8 x branches, 32, 32].
    """
    g = GraphBuilder(seed)
    x = _conv(g, "image", 3, 16, 3, stride=2)  # 32x32
    wide = [_conv(g, x, 16, 96, 1, relu=False) for _ in range(branches)]
    narrow = [_conv(g, w, 96, 8, 1) for w in wide]
    features = g.op("Concat", narrow, "features", axis=1)
    return g.model(
        "level_by_level_branches",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info(features, TensorProto.FLOAT, ["N", 8 * branches, 32, 32])],
    )


def unet_like(seed: int = 9) -> onnx.ModelProto:
    """A small U-Net: three downsampling stages whose outputs are kept for the skip connections of
    the matching upsampling stages (the long-lived tensors of segmentation models).

    Input `image`: [N, 3, 64, 64]; output `mask` [N, 1, 64, 64].
    """
    g = GraphBuilder(seed)
    x, skips, channels = "image", [], 3
    for width in (16, 32, 64):
        x = _conv(g, _conv(g, x, channels, width, 3), width, width, 3)
        skips.append(x)
        x, channels = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), width
    x = _conv(g, x, channels, 128, 3)
    channels = 128
    for skip, width in zip(reversed(skips), (64, 32, 16), strict=True):
        up = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
        x = _conv(g, g.op("Concat", [up, skip], axis=1), channels + width, width, 3)
        channels = width
    mask = g.op("Sigmoid", [_conv(g, x, channels, 1, 1, relu=False)], "mask")
    return g.model(
        "unet_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info(mask, TensorProto.FLOAT, ["N", 1, 64, 64])],
    )


def nas_cells(seed: int = 10, cells: int = 3, nodes_per_cell: int = 5) -> onnx.ModelProto:
    """Cells of a randomly wired DAG, as neural architecture search finds them: inside a cell each
    node adds two earlier nodes' outputs through a 1x1 or 3x3 conv (seeded choices), the cell's
    output concatenates the nodes nobody inside read.

    Input `image`: [N, 3, 32, 32]; output `features` [N, C, 32, 32].
    """
    rng = np.random.default_rng(seed)
    g = GraphBuilder(seed)
    x, width = _conv(g, "image", 3, 16, 3), 16
    for _ in range(cells):
        states, read = [x], set[int]()
        for _ in range(nodes_per_cell):
            picks = rng.choice(len(states), size=min(2, len(states)), replace=False)
            read.update(int(p) for p in picks)
            terms = [_conv(g, states[int(p)], width, width, int(rng.choice([1, 3]))) for p in picks]
            states.append(g.op("Add", terms) if len(terms) > 1 else terms[0])
        ends = [state for index, state in enumerate(states) if index and index not in read]
        x = _conv(g, g.op("Concat", ends, axis=1), width * len(ends), width, 1) if len(ends) > 1 else ends[0]
    return g.model(
        "nas_cells",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width, 32, 32])],
    )


def shuffled(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """``model`` with its nodes in a random (seeded) but valid topological order, as careless
    exporters write them."""
    rank = np.random.default_rng(seed).permutation(len(model.graph.node))
    order = topological_order(model.graph.node, lambda index: int(rank[index]))
    assert order is not None, "a model has its nodes in some topological order"
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(model.graph.node[index] for index in order)
    result.graph.name = f"{model.graph.name}_shuffled{seed}"
    return result


def large_spatial_net(seed: int = 4, side: int = 224) -> onnx.ModelProto:
    """Few channels at high resolution, like an image-enhancement or segmentation stem.

    Input `image`: [N, 3, side, side]; output a 1-channel map [N, 1, side, side].
    """
    g = GraphBuilder(seed)
    x = _conv(g, "image", 3, 8, 3)
    x = _conv(g, x, 8, 8, 3)
    y = _conv(g, x, 8, 8, 3, group=8)
    x = g.op("Add", [x, y])
    out = g.op("Sigmoid", [_conv(g, x, 8, 1, 1, relu=False)], "mask")
    return g.model(
        "large_spatial_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 1, side, side])],
    )


def depthwise_net(seed: int = 5) -> onnx.ModelProto:
    """A MobileNet-style stack of depthwise-separable blocks. Input `image`: [N, 3, 96, 96]."""
    g = GraphBuilder(seed)
    x, channels = _conv(g, "image", 3, 16, 3, stride=2), 16  # 48x48
    for cout, stride in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
        x = _conv(g, x, channels, channels, 3, stride=stride, group=channels)
        x, channels = _conv(g, x, channels, cout, 1), cout
    logits = g.op(
        "Gemm", [g.op("Flatten", [g.op("GlobalAveragePool", [x])]), g.weight((10, channels), channels), g.const(np.zeros(10, np.float32))], "logits", transB=1
    )
    return g.model(
        "depthwise_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 96, 96])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 10])],
    )


def opset_net(opset: int, seed: int = 6) -> onnx.ModelProto:
    """A small classifier written at ONNX ``opset`` (11 or newer) with the operators whose
    signature changed over the opsets, spelled as that opset spells them: Clip bounds, ReduceMean
    and Squeeze axes (attributes, later inputs), Split sizes, and a dynamic batch dim."""
    g = GraphBuilder(seed)
    x = g.op("Conv", ["image", g.weight((8, 3, 3, 3), 27), g.const(np.zeros(8, np.float32))], pads=[1, 1, 1, 1])
    x = g.op("Clip", [x, g.const(np.array(0, np.float32)), g.const(np.array(6, np.float32))])
    left, right = g.name("left"), g.name("right")
    if opset >= 13:
        g.nodes.append(helper.make_node("Split", [x, g.const(np.array([4, 4], np.int64))], [left, right], axis=1))
    else:
        g.nodes.append(helper.make_node("Split", [x], [left, right], axis=1, split=[4, 4]))
    x = g.op("Concat", [g.op("Relu", [left]), g.op("Sigmoid", [right])], axis=1)
    x = g.op("Conv", [x, g.weight((16, 8, 3, 3), 72), g.const(np.zeros(16, np.float32))], pads=[1, 1, 1, 1], strides=[2, 2])
    x = g.op("Relu", [x])
    x = g.op("ReduceMean", [x, g.const(np.array([2, 3], np.int64))], keepdims=1) if opset >= 18 else g.op("ReduceMean", [x], axes=[2, 3], keepdims=1)
    x = g.op("Squeeze", [x, g.const(np.array([2, 3], np.int64))]) if opset >= 13 else g.op("Squeeze", [x], axes=[2, 3])
    x = g.op("Gemm", [x, g.weight((10, 16), 16), g.const(np.zeros(10, np.float32))], transB=1)
    g.op("Softmax", [x], "probs", axis=1)
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])]
    return g.model(f"opset{opset}_net", inputs, outputs, opset=opset)


def mcu_stem_net(seed: int = 12) -> onnx.ModelProto:
    """An MCU-sized classifier whose activation peak is set by its first, high-resolution stage
    (MCUNetV2's observation): a stride-2 stem, a depthwise-separable block that widens to 48
    channels at 64x64, then small blocks at 32x32 (one with a residual add) and 16x16.

    Input `image`: [N, 3, 128, 128]; float32 it needs about 1.2 MB of activations at once.
    """
    g = GraphBuilder(seed)
    x = _conv(g, "image", 3, 16, 3, stride=2)  # 64x64
    x = _conv(g, _conv(g, x, 16, 16, 3, group=16), 16, 48, 1)
    x = _conv(g, _conv(g, x, 48, 48, 3, stride=2, group=48), 48, 24, 1, relu=False)  # 32x32
    y = _conv(g, _conv(g, _conv(g, x, 24, 48, 1), 48, 48, 3, group=48), 48, 24, 1, relu=False)
    x = _conv(g, g.op("Add", [x, y]), 24, 64, 3, stride=2)  # 16x16
    logits = g.op("Gemm", [g.op("Flatten", [g.op("GlobalAveragePool", [x])]), g.weight((10, 64), 64), g.const(np.zeros(10, np.float32))], "logits", transB=1)
    return g.model(
        "mcu_stem_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 128, 128])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 10])],
    )


def mobilenet_v2_like(seed: int = 7, classes: int = 1000) -> onnx.ModelProto:
    """MobileNetV2's layout (inverted residual blocks: 1x1 expand, 3x3 depthwise, 1x1 project,
    ReLU6 as Clip, residual adds where shapes allow) with seeded weights. Input `image`: [N, 3, 224, 224]."""
    g = GraphBuilder(seed)

    def conv(x: str, cin: int, cout: int, kernel: int, stride: int = 1, group: int = 1, act: bool = True) -> str:
        weight = g.weight((cout, cin // group, kernel, kernel), cin // group * kernel * kernel)
        y = g.op("Conv", [x, weight, g.const(np.zeros(cout, np.float32))], pads=[kernel // 2] * 4, strides=[stride] * 2, group=group)
        return g.op("Clip", [y, g.const(np.array(0, np.float32)), g.const(np.array(6, np.float32))]) if act else y

    x, channels = conv("image", 3, 32, 3, stride=2), 32
    # (expansion, output channels, repeats, first stride): MobileNetV2's table.
    for expansion, cout, repeats, first_stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            hidden = channels * expansion
            y = conv(x, channels, hidden, 1) if expansion != 1 else x
            y = conv(y, hidden, hidden, 3, stride=stride, group=hidden)
            y = conv(y, hidden, cout, 1, act=False)
            x, channels = (g.op("Add", [x, y]) if stride == 1 and channels == cout else y), cout
    x = conv(x, channels, 1280, 1)
    logits = g.op(
        "Gemm", [g.op("Flatten", [g.op("GlobalAveragePool", [x])]), g.weight((classes, 1280), 1280), g.const(np.zeros(classes, np.float32))], "logits", transB=1
    )
    return g.model(
        "mobilenet_v2_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])],
    )


def resnet18_like(seed: int = 8, classes: int = 1000) -> onnx.ModelProto:
    """ResNet-18's layout (7x7 stem, max pool, four stages of two basic blocks, 1x1 projection
    shortcuts) with seeded weights. Input `image`: [N, 3, 224, 224]."""
    g = GraphBuilder(seed)
    x = _conv(g, "image", 3, 64, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    channels = 64
    for cout, first_stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for index in range(2):
            stride = first_stride if index == 0 else 1
            y = _conv(g, _conv(g, x, channels, cout, 3, stride=stride), cout, cout, 3, relu=False)
            shortcut = _conv(g, x, channels, cout, 1, stride=stride, relu=False) if stride != 1 or channels != cout else x
            x, channels = g.op("Relu", [g.op("Add", [y, shortcut])]), cout
    logits = g.op(
        "Gemm", [g.op("Flatten", [g.op("GlobalAveragePool", [x])]), g.weight((classes, 512), 512), g.const(np.zeros(classes, np.float32))], "logits", transB=1
    )
    return g.model(
        "resnet18_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])],
    )
