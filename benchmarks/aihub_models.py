"""Qualcomm AI Hub's benchmarked networks rebuilt as ONNX graphs, to compare our device simulator
with AI Hub's published latencies (benchmarks/data/aihub_perf.csv, keyed by its `model` column).

Built from scratch with `GraphBuilder` (no torch, no downloads) from the published designs:
torchvision's definitions for the torchvision-derived models, the AIMET model zoo's for the
super-resolution nets, torch_audioset's for YAMNet. Weights are seeded random (only latency
matters), bytes are deterministic. Batch norm is folded into the preceding conv (Conv with bias),
as in a deployed graph; it stays a BatchNormalization op only where no conv precedes it
(DenseNet's pre-activations). ImageNet classifiers start with AI Hub's in-graph input
normalisation ((x - mean) / std; Inception-v3: 2x - 1), take a [1, 3, 224, 224] image in [0, 1]
(AI Hub's ImagenetClassifier input spec, also for Inception-v3 and EfficientNet-V2-S) and
return [1, 1000] logits. Super-resolution nets take [1, 3, 128, 128] and upscale x4 (AI Hub's
defaults). Input sizes come from qai_hub_models at commit 52c080d2 (the CSV's source commit).

Params and MACs of the built graphs vs published figures: torchvision's tables (its "GFLOPS"
are multiply-accumulates) for the torchvision models, AI Hub's info.yaml params for the others
("-": none published). Built params exclude BN running stats; a folded BN leaves one bias per
channel where torchvision counts two, hence the built counts run up to 0.6% low. MACs count
Conv, Gemm and MatMul (attention included) from ONNX-inferred shapes.

    model               input           params M  published   GMACs  published
    mobilenet_v2        1x3x224x224        3.49     3.49        0.30    0.30
    mobilenet_v3_large  1x3x224x224        5.47     5.48        0.22    0.22
    mobilenet_v3_small  1x3x224x224        2.54     2.54        0.06    0.06
    resnet18            1x3x224x224       11.68    11.69        1.81    1.81
    resnet50            1x3x224x224       25.53    25.56        4.09    4.09
    resnet101           1x3x224x224       44.50    44.55        7.80    7.80
    resnext50           1x3x224x224       24.99    25.03        4.23    4.23
    resnext101          1x3x224x224       88.69    88.79       16.41   16.41   32x8d, as AI Hub uses
    wideresnet50        1x3x224x224       68.85    68.88       11.40   11.40
    squeezenet1_1       1x3x224x224        1.24     1.24        0.35    0.35
    shufflenet_v2       1x3x224x224        1.36     1.37        0.04    0.04    x0.5, as AI Hub uses
    googlenet           1x3x224x224        6.62     6.62        1.50    1.50
    inception_v3        1x3x224x224       23.82    23.83        2.84     -      5.71 at 299 (built: 5.71)
    densenet121         1x3x224x224        7.97     7.98        2.83    2.83
    efficientnet_b0     1x3x224x224        5.27     5.29        0.39    0.39
    efficientnet_v2_s   1x3x224x224       21.38    21.46        2.85     -      8.37 at 384 (built: 8.37)
    mnasnet05           1x3x224x224        2.21     2.22        0.10    0.10
    regnet              1x3x224x224       15.27    15.30        3.18    3.18    regnet_x_3_2gf
    regnet_y_800mf      1x3x224x224        6.42     6.43        0.83    0.83
    convnext_tiny       1x3x224x224       28.59    28.59        4.46    4.46
    vit                 1x3x224x224       86.57    86.57       17.56   17.56    vit_b_16
    quicksrnetsmall     1x3x128x128        0.033    0.033       0.54     -
    quicksrnetmedium    1x3x128x128        0.061    0.061       1.00     -
    quicksrnetlarge     1x3x128x128        0.436    0.436       7.13     -
    sesr_m5             1x3x128x128        0.343    0.343       5.62     -      uncollapsed, as AI Hub's
    xlsr                1x3x128x128        0.028    0.028       0.45     -
    yamnet              1x1x96x64          3.73     3.73        0.07     -

Build one with `build("resnet50")`; `MODELS` maps every AI Hub name to its builder.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgesdk.testing.models import GraphBuilder

HE_INIT = {"relu", "relu6", "clip01", "silu", "hswish"}  # activations that halve the variance: fan_in / 2
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _Net(GraphBuilder):
    """GraphBuilder with the layers the AI Hub networks share; seeded by the model's name."""

    def __init__(self, name: str):
        super().__init__(zlib.crc32(name.encode()))
        self.title = name
        self.scalars: dict[float, str] = {}

    def scalar(self, value: float) -> str:
        if value not in self.scalars:
            self.scalars[value] = self.const(np.array(value, np.float32), "c")
        return self.scalars[value]

    def ints(self, values) -> str:
        return self.const(np.array(values, np.int64), "shape")

    def multi(self, op_type: str, inputs: list[str], count: int, **attrs) -> list[str]:
        outputs = [self.name(op_type.lower()) for _ in range(count)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs

    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        if kind in ("relu6", "clip01"):
            return self.op("Clip", [x, self.scalar(0.0), self.scalar(6.0 if kind == "relu6" else 1.0)])
        if kind == "hsigmoid":
            return self.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)
        if kind == "silu":
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if kind == "gelu":  # Erf form: Gelu is not an opset-17 op
            erf = self.op("Erf", [self.op("Mul", [x, self.scalar(1 / math.sqrt(2))])])
            return self.op("Mul", [self.op("Mul", [x, self.scalar(0.5)]), self.op("Add", [erf, self.scalar(1.0)])])
        return self.op({"relu": "Relu", "hswish": "HardSwish", "sigmoid": "Sigmoid"}[kind], [x])

    def conv(self, x: str, cin: int, cout: int, k=1, stride: int = 1, group: int = 1, act=None, pads=None, bias: bool = True) -> str:
        """Conv (BN folded into its bias) + activation; ``k`` an int or (kh, kw), 'same' pads by default."""
        kh, kw = (k, k) if isinstance(k, int) else k
        fan_in = cin // group * kh * kw
        inputs = [x, self.weight((cout, cin // group, kh, kw), max(1, fan_in // 2) if act in HE_INIT else fan_in)]
        if bias:
            inputs.append(self.const(np.zeros(cout, np.float32), "b"))
        pads = [kh // 2, kw // 2] * 2 if pads is None else pads
        y = self.op("Conv", inputs, kernel_shape=[kh, kw], pads=pads, strides=[stride, stride], group=group)
        return self.act(y, act)

    def dense(self, x: str, fin: int, fout: int, act=None) -> str:
        """Linear layer on [..., fin] as MatMul + Add."""
        y = self.op("Add", [self.op("MatMul", [x, self.weight((fin, fout), fin)]), self.const(np.zeros(fout, np.float32), "b")])
        return self.act(y, act)

    def gemm(self, x: str, fin: int, fout: int, act=None) -> str:
        y = self.op("Gemm", [x, self.weight((fout, fin), fin), self.const(np.zeros(fout, np.float32), "b")], transB=1)
        return self.act(y, act)

    def pool(self, x: str, kind: str, k: int, stride: int, pad: int = 0, ceil: int = 0) -> str:
        attrs = {"count_include_pad": 1} if kind == "AveragePool" else {}
        return self.op(kind, [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, ceil_mode=ceil, **attrs)

    def gap(self, x: str) -> str:
        """Global average pool to [N, C] (AdaptiveAvgPool2d(1) + flatten)."""
        return self.op("Flatten", [self.op("GlobalAveragePool", [x])])

    def mean_hw(self, x: str) -> str:
        """x.mean([2, 3]) as torchvision's ShuffleNet and MNASNet write it."""
        return self.op("ReduceMean", [x], axes=[2, 3], keepdims=0)

    def layer_norm(self, x: str, dim: int, eps: float = 1e-6) -> str:
        scale = self.const((1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32), "ln")
        return self.op("LayerNormalization", [x, scale, self.const(np.zeros(dim, np.float32), "b")], axis=-1, epsilon=eps)

    def layer_norm2d(self, x: str, dim: int) -> str:
        """LayerNorm over the channels of NCHW (ConvNeXt's LayerNorm2d): Transpose, LN, Transpose."""
        y = self.layer_norm(self.op("Transpose", [x], perm=[0, 2, 3, 1]), dim)
        return self.op("Transpose", [y], perm=[0, 3, 1, 2])

    def squeeze_excite(self, x: str, channels: int, squeeze: int, act: str = "relu", gate: str = "sigmoid") -> str:
        s = self.conv(self.op("GlobalAveragePool", [x]), channels, squeeze, 1, act=act)
        return self.op("Mul", [x, self.conv(s, squeeze, channels, 1, act=gate)])

    def inverted_residual(self, x, cin, cout, k, stride, expanded, act, se=0, se_act="relu", gate="sigmoid") -> str:
        """MobileNetV2/V3, MNASNet and EfficientNet MBConv block: [1x1 expand], depthwise, [SE], 1x1 project, [residual]."""
        y = self.conv(x, cin, expanded, 1, act=act) if expanded != cin else x
        y = self.conv(y, expanded, expanded, k, stride, group=expanded, act=act)
        if se:
            y = self.squeeze_excite(y, expanded, se, se_act, gate)
        y = self.conv(y, expanded, cout, 1)
        return self.op("Add", [x, y]) if stride == 1 and cin == cout else y

    def residual(self, x: str, y: str, cin: int, cout: int, stride: int) -> str:
        """ReLU(y + shortcut), the shortcut a strided 1x1 projection where shapes change."""
        shortcut = self.conv(x, cin, cout, 1, stride) if stride != 1 or cin != cout else x
        return self.op("Relu", [self.op("Add", [y, shortcut])])

    def bottleneck(self, x: str, cin: int, width: int, cout: int, stride: int, groups: int = 1, se: int = 0) -> str:
        """ResNet-v1.5 / ResNeXt / RegNet bottleneck: 1x1, grouped 3x3 (stride), [SE], 1x1, residual."""
        y = self.conv(self.conv(x, cin, width, 1, act="relu"), width, width, 3, stride, group=groups, act="relu")
        if se:
            y = self.squeeze_excite(y, width, se)
        return self.residual(x, self.conv(y, width, cout, 1), cin, cout, stride)

    def encoder_block(self, x: str, dim: int, heads: int, ffn: int, seq: int) -> str:
        """Pre-LN transformer encoder block: fused QKV, multi-head attention, Erf-GELU MLP, residuals."""
        hd = dim // heads
        q, k, v = self.multi("Split", [self.dense(self.layer_norm(x, dim), dim, 3 * dim), self.ints([dim] * 3)], 3, axis=-1)
        split = self.ints([1, seq, heads, hd])
        q, k, v = (self.op("Transpose", [self.op("Reshape", [t, split])], perm=perm) for t, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])))
        scores = self.op("Mul", [self.op("MatMul", [q, k]), self.scalar(1 / math.sqrt(hd))])
        context = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
        context = self.op("Reshape", [self.op("Transpose", [context], perm=[0, 2, 1, 3]), self.ints([1, seq, dim])])
        x = self.op("Add", [x, self.dense(context, dim, dim)])
        return self.op("Add", [x, self.dense(self.dense(self.layer_norm(x, dim), dim, ffn, act="gelu"), ffn, dim)])

    def depth_to_space(self, x: str, scale: int) -> str:
        return self.op("DepthToSpace", [x], blocksize=scale, mode="CRD")  # = torch PixelShuffle

    def image(self, inception: bool = False) -> str:
        """AI Hub ImagenetClassifier's in-graph input normalisation of `image_tensor` (range [0, 1])."""
        if inception:  # normalize + transform_input folded: 2x - 1
            return self.op("Sub", [self.op("Mul", ["image_tensor", self.scalar(2.0)]), self.scalar(1.0)])
        mean, std = (self.const(np.array(v, np.float32).reshape(1, 3, 1, 1), "norm") for v in (MEAN, STD))
        return self.op("Div", [self.op("Sub", ["image_tensor", mean]), std])

    def finish(self, out: str, out_shape, in_name: str = "image_tensor", in_shape=(1, 3, 224, 224), out_name: str = "class_logits") -> onnx.ModelProto:
        for node in self.nodes:
            node.output[:] = [out_name if o == out else o for o in node.output]
        return self.model(
            self.title,
            [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        )

    def classifier(self, x: str, channels: int, classes: int = 1000) -> onnx.ModelProto:
        """Global average pool, Linear to ``classes`` logits, and the finished model."""
        return self.finish(self.gemm(self.gap(x), channels, classes), [1, classes])


# ---------------------------------------------------------------- ResNet family (torchvision)


def _resnet(name: str, layers: tuple[int, ...], bottleneck: bool = True, groups: int = 1, width_per_group: int = 64) -> onnx.ModelProto:
    g = _Net(name)
    x = g.pool(g.conv(g.image(), 3, 64, 7, 2, act="relu"), "MaxPool", 3, 2, 1)
    cin = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        for index in range(count):
            stride = 2 if stage and not index else 1
            if bottleneck:
                width, cout = planes * width_per_group // 64 * groups, planes * 4
                x = g.bottleneck(x, cin, width, cout, stride, groups)
            else:
                cout = planes
                y = g.conv(g.conv(x, cin, cout, 3, stride, act="relu"), cout, cout, 3)
                x = g.residual(x, y, cin, cout, stride)
            cin = cout
    return g.classifier(x, cin)


def resnet18() -> onnx.ModelProto:
    """ResNet-18 (torchvision, basic blocks [2, 2, 2, 2]); input [1, 3, 224, 224]."""
    return _resnet("resnet18", (2, 2, 2, 2), bottleneck=False)


def resnet50() -> onnx.ModelProto:
    """ResNet-50 (torchvision v1.5 bottlenecks [3, 4, 6, 3]); input [1, 3, 224, 224]."""
    return _resnet("resnet50", (3, 4, 6, 3))


def resnet101() -> onnx.ModelProto:
    """ResNet-101 (torchvision v1.5 bottlenecks [3, 4, 23, 3]); input [1, 3, 224, 224]."""
    return _resnet("resnet101", (3, 4, 23, 3))


def resnext50() -> onnx.ModelProto:
    """ResNeXt-50 32x4d (torchvision resnext50_32x4d); input [1, 3, 224, 224]."""
    return _resnet("resnext50", (3, 4, 6, 3), groups=32, width_per_group=4)


def resnext101() -> onnx.ModelProto:
    """ResNeXt-101 32x8d (torchvision resnext101_32x8d, AI Hub's choice); input [1, 3, 224, 224]."""
    return _resnet("resnext101", (3, 4, 23, 3), groups=32, width_per_group=8)


def wideresnet50() -> onnx.ModelProto:
    """Wide ResNet-50-2 (torchvision wide_resnet50_2); input [1, 3, 224, 224]."""
    return _resnet("wideresnet50", (3, 4, 6, 3), width_per_group=128)


# ---------------------------------------------------------------- mobile CNNs


def mobilenet_v2() -> onnx.ModelProto:
    """MobileNetV2 1.0 (tonylins/pytorch-mobilenet-v2 as AI Hub uses: ReLU6, mean(3).mean(2) pool); input [1, 3, 224, 224]."""
    g = _Net("mobilenet_v2")
    x, cin = g.conv(g.image(), 3, 32, 3, 2, act="relu6"), 32
    for expansion, cout, repeats, first_stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for index in range(repeats):
            x, cin = g.inverted_residual(x, cin, cout, 3, first_stride if index == 0 else 1, cin * expansion, "relu6"), cout
    x = g.conv(x, cin, 1280, 1, act="relu6")
    x = g.op("ReduceMean", [g.op("ReduceMean", [x], axes=[3], keepdims=0)], axes=[2], keepdims=0)
    return g.finish(g.gemm(x, 1280, 1000), [1, 1000])


# (kernel, expanded, out, squeeze-excite, activation, stride): torchvision's MobileNetV3 tables.
_MNV3_LARGE = [
    (3, 16, 16, 0, "relu", 1), (3, 64, 24, 0, "relu", 2), (3, 72, 24, 0, "relu", 1), (5, 72, 40, 1, "relu", 2), (5, 120, 40, 1, "relu", 1),
    (5, 120, 40, 1, "relu", 1), (3, 240, 80, 0, "hswish", 2), (3, 200, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1),
    (3, 480, 112, 1, "hswish", 1), (3, 672, 112, 1, "hswish", 1), (5, 672, 160, 1, "hswish", 2), (5, 960, 160, 1, "hswish", 1), (5, 960, 160, 1, "hswish", 1),
]  # fmt: skip
_MNV3_SMALL = [
    (3, 16, 16, 1, "relu", 2), (3, 72, 24, 0, "relu", 2), (3, 88, 24, 0, "relu", 1), (5, 96, 40, 1, "hswish", 2), (5, 240, 40, 1, "hswish", 1),
    (5, 240, 40, 1, "hswish", 1), (5, 120, 48, 1, "hswish", 1), (5, 144, 48, 1, "hswish", 1), (5, 288, 96, 1, "hswish", 2), (5, 576, 96, 1, "hswish", 1),
    (5, 576, 96, 1, "hswish", 1),
]  # fmt: skip


def _mobilenet_v3(name: str, table, hidden: int) -> onnx.ModelProto:
    g = _Net(name)
    x, cin = g.conv(g.image(), 3, 16, 3, 2, act="hswish"), 16
    for k, expanded, cout, se, act, stride in table:
        x, cin = g.inverted_residual(x, cin, cout, k, stride, expanded, act, se and _make_divisible(expanded // 4), gate="hsigmoid"), cout
    x = g.gap(g.conv(x, cin, 6 * cin, 1, act="hswish"))
    return g.finish(g.gemm(g.gemm(x, 6 * cin, hidden, act="hswish"), hidden, 1000), [1, 1000])


def mobilenet_v3_large() -> onnx.ModelProto:
    """MobileNetV3-Large (torchvision: HardSwish, SE with HardSigmoid); input [1, 3, 224, 224]."""
    return _mobilenet_v3("mobilenet_v3_large", _MNV3_LARGE, 1280)


def mobilenet_v3_small() -> onnx.ModelProto:
    """MobileNetV3-Small (torchvision: HardSwish, SE with HardSigmoid); input [1, 3, 224, 224]."""
    return _mobilenet_v3("mobilenet_v3_small", _MNV3_SMALL, 1024)


def mnasnet05() -> onnx.ModelProto:
    """MNASNet 0.5 (torchvision mnasnet0_5); input [1, 3, 224, 224]."""
    g = _Net("mnasnet05")
    x = g.conv(g.conv(g.image(), 3, 16, 3, 2, act="relu"), 16, 16, 3, group=16, act="relu")
    x, cin = g.conv(x, 16, 8, 1), 8
    for cout, k, stride, expansion, repeats in ((16, 3, 2, 3, 3), (24, 5, 2, 3, 3), (40, 5, 2, 6, 3), (48, 3, 1, 6, 2), (96, 5, 2, 6, 4), (160, 3, 1, 6, 1)):
        for index in range(repeats):
            x, cin = g.inverted_residual(x, cin, cout, k, stride if index == 0 else 1, cin * expansion, "relu"), cout
    x = g.mean_hw(g.conv(x, cin, 1280, 1, act="relu"))
    return g.finish(g.gemm(x, 1280, 1000), [1, 1000])


def squeezenet1_1() -> onnx.ModelProto:
    """SqueezeNet 1.1 (torchvision: Fire modules, ceil-mode max pools, conv classifier); input [1, 3, 224, 224]."""
    g = _Net("squeezenet1_1")
    x, cin = g.pool(g.conv(g.image(), 3, 64, 3, 2, act="relu", pads=[0] * 4), "MaxPool", 3, 2, ceil=1), 64
    for fire in ((16, 64), (16, 64), None, (32, 128), (32, 128), None, (48, 192), (48, 192), (64, 256), (64, 256)):
        if fire is None:
            x = g.pool(x, "MaxPool", 3, 2, ceil=1)
            continue
        squeeze, expand = fire
        s = g.conv(x, cin, squeeze, 1, act="relu")
        x, cin = g.op("Concat", [g.conv(s, squeeze, expand, 1, act="relu"), g.conv(s, squeeze, expand, 3, act="relu")], axis=1), 2 * expand
    return g.finish(g.gap(g.conv(x, cin, 1000, 1, act="relu")), [1, 1000])


def shufflenet_v2() -> onnx.ModelProto:
    """ShuffleNetV2 x0.5 (torchvision shufflenet_v2_x0_5, AI Hub's choice): Split, Reshape/Transpose shuffle; input [1, 3, 224, 224]."""
    g = _Net("shufflenet_v2")
    x, cin, side = g.pool(g.conv(g.image(), 3, 24, 3, 2, act="relu"), "MaxPool", 3, 2, 1), 24, 56
    for cout, repeats in ((48, 4), (96, 8), (192, 4)):
        side //= 2
        half = cout // 2
        for index in range(repeats):
            if index == 0:  # both branches see the input, both downsample
                left = g.conv(g.conv(x, cin, cin, 3, 2, group=cin), cin, half, 1, act="relu")
                right, rin, stride = x, cin, 2
            else:
                (left, right), rin, stride = g.multi("Split", [x, g.ints([half, half])], 2, axis=1), half, 1
            right = g.conv(g.conv(g.conv(right, rin, half, 1, act="relu"), half, half, 3, stride, group=half), half, half, 1, act="relu")
            x = g.op("Reshape", [g.op("Concat", [left, right], axis=1), g.ints([1, 2, half, side, side])])
            x = g.op("Reshape", [g.op("Transpose", [x], perm=[0, 2, 1, 3, 4]), g.ints([1, cout, side, side])])
        cin = cout
    x = g.mean_hw(g.conv(x, cin, 1024, 1, act="relu"))
    return g.finish(g.gemm(x, 1024, 1000), [1, 1000])


# ---------------------------------------------------------------- Inception family and DenseNet (torchvision)


def _branches(g: _Net, x: str, cin: int, branches) -> tuple[str, int]:
    """Concat of branches, each a list of layers: (cout, kernel[, stride]) conv + ReLU (stride 2
    unpadded), "max" / "avg" 3x3 stride-1 pools, "max2" a 3x3 stride-2 pool, or a nested list of
    branches (Inception-v3's E-block fork)."""
    outs, total = [], 0
    for branch in branches:
        y, c = x, cin
        for layer in branch:
            if layer == "max":
                y = g.pool(y, "MaxPool", 3, 1, 1, ceil=1)
            elif layer == "avg":
                y = g.pool(y, "AveragePool", 3, 1, 1)
            elif layer == "max2":
                y = g.pool(y, "MaxPool", 3, 2)
            elif isinstance(layer, list):
                y, c = _branches(g, y, c, layer)
            else:
                cout, k, stride = (*layer, 1)[:3]
                y, c = g.conv(y, c, cout, k, stride, act="relu", pads=[0] * 4 if stride == 2 else None), cout
        outs.append(y)
        total += c
    return g.op("Concat", outs, axis=1), total


def googlenet() -> onnx.ModelProto:
    """GoogLeNet / Inception v1 (torchvision, no aux heads, 3x3 in the "5x5" branch); input [1, 3, 224, 224]."""
    g = _Net("googlenet")
    x = g.pool(g.conv(g.image(), 3, 64, 7, 2, act="relu"), "MaxPool", 3, 2, ceil=1)
    x, cin = g.pool(g.conv(g.conv(x, 64, 64, 1, act="relu"), 64, 192, 3, act="relu"), "MaxPool", 3, 2, ceil=1), 192
    for spec in (
        (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), 3, (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), 2, (256, 160, 320, 32, 128, 128),
        (384, 192, 384, 48, 128, 128),
    ):  # fmt: skip
        if isinstance(spec, int):  # max pool of that kernel between the inception groups
            x = g.pool(x, "MaxPool", spec, 2, ceil=1)
            continue
        c1, r3, c3, r5, c5, pool = spec
        x, cin = _branches(g, x, cin, [[(c1, 1)], [(r3, 1), (c3, 3)], [(r5, 1), (c5, 3)], ["max", (pool, 1)]])
    return g.classifier(x, cin)


def inception_v3() -> onnx.ModelProto:
    """Inception v3 (torchvision, no aux head) at AI Hub's input [1, 3, 224, 224] (not 299)."""
    g = _Net("inception_v3")
    valid = [0] * 4
    x = g.conv(g.conv(g.image(inception=True), 3, 32, 3, 2, act="relu", pads=valid), 32, 32, 3, act="relu", pads=valid)
    x = g.pool(g.conv(x, 32, 64, 3, act="relu"), "MaxPool", 3, 2)
    x = g.pool(g.conv(g.conv(x, 64, 80, 1, act="relu"), 80, 192, 3, act="relu", pads=valid), "MaxPool", 3, 2)
    cin, fork = 192, [[(384, (1, 3))], [(384, (3, 1))]]
    blocks = [[[(64, 1)], [(48, 1), (64, 5)], [(64, 1), (96, 3), (96, 3)], ["avg", (pool, 1)]] for pool in (32, 64, 64)]  # A
    blocks.append([[(384, 3, 2)], [(64, 1), (96, 3), (96, 3, 2)], ["max2"]])  # B
    for c7 in (128, 160, 160, 192):  # C
        blocks.append(
            [[(192, 1)], [(c7, 1), (c7, (1, 7)), (192, (7, 1))], [(c7, 1), (c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))], ["avg", (192, 1)]]
        )
    blocks.append([[(192, 1), (320, 3, 2)], [(192, 1), (192, (1, 7)), (192, (7, 1)), (192, 3, 2)], ["max2"]])  # D
    blocks += [[[(320, 1)], [(384, 1), fork], [(448, 1), (384, 3), fork], ["avg", (192, 1)]]] * 2  # E
    for block in blocks:
        x, cin = _branches(g, x, cin, block)
    return g.classifier(x, cin)


def densenet121() -> onnx.ModelProto:
    """DenseNet-121 (torchvision: growth 32, blocks [6, 12, 24, 16], BN-ReLU pre-activations kept as BatchNormalization); input [1, 3, 224, 224]."""
    g = _Net("densenet121")
    x, cin = g.pool(g.conv(g.image(), 3, 64, 7, 2, act="relu"), "MaxPool", 3, 2, 1), 64
    for index, layers in enumerate((6, 12, 24, 16)):
        features = [x]
        for j in range(layers):
            c = cin + 32 * j
            h = g.op("Concat", features, axis=1) if j else x
            h = g.conv(g.op("Relu", [g.batch_norm(h, c)]), c, 128, 1, act="relu")
            features.append(g.conv(h, 128, 32, 3, bias=False))
        x, cin = g.op("Concat", features, axis=1), cin + 32 * layers
        if index < 3:  # transition
            x = g.conv(g.op("Relu", [g.batch_norm(x, cin)]), cin, cin // 2, 1, bias=False)
            x, cin = g.pool(x, "AveragePool", 2, 2), cin // 2
    return g.classifier(g.op("Relu", [g.batch_norm(x, cin)]), cin)


# ---------------------------------------------------------------- EfficientNet, RegNet, ConvNeXt, ViT (torchvision)


def _efficientnet(name: str, stages) -> onnx.ModelProto:
    """Stages of (fused, expand, kernel, stride, in, out, layers); MBConv has SE (in // 4, SiLU, Sigmoid)."""
    g = _Net(name)
    x, cin = g.conv(g.image(), 3, stages[0][4], 3, 2, act="silu"), stages[0][4]
    for fused, expand, k, first_stride, _, cout, layers in stages:
        for index in range(layers):
            stride, expanded = first_stride if index == 0 else 1, _make_divisible(cin * expand)
            if not fused:
                x = g.inverted_residual(x, cin, cout, k, stride, expanded, "silu", max(1, cin // 4), se_act="silu")
            else:  # FusedMBConv: full kxk expand conv (or the only conv), 1x1 project
                y = g.conv(x, cin, expanded, k, stride, act="silu")
                y = g.conv(y, expanded, cout, 1) if expanded != cin else y
                x = g.op("Add", [x, y]) if stride == 1 and cin == cout else y
            cin = cout
    return g.classifier(g.conv(x, cin, 1280, 1, act="silu"), 1280)


def efficientnet_b0() -> onnx.ModelProto:
    """EfficientNet-B0 (torchvision: MBConv, SiLU as x * Sigmoid(x), SE); input [1, 3, 224, 224]."""
    stages = [
        (0, 1, 3, 1, 32, 16, 1), (0, 6, 3, 2, 16, 24, 2), (0, 6, 5, 2, 24, 40, 2), (0, 6, 3, 2, 40, 80, 3), (0, 6, 5, 1, 80, 112, 3),
        (0, 6, 5, 2, 112, 192, 4), (0, 6, 3, 1, 192, 320, 1),
    ]  # fmt: skip
    return _efficientnet("efficientnet_b0", stages)


def efficientnet_v2_s() -> onnx.ModelProto:
    """EfficientNetV2-S (torchvision: FusedMBConv then MBConv+SE) at AI Hub's input [1, 3, 224, 224] (info.yaml says 384; the input spec is 224)."""
    stages = [
        (1, 1, 3, 1, 24, 24, 2), (1, 4, 3, 2, 24, 48, 4), (1, 4, 3, 2, 48, 64, 4), (0, 4, 3, 2, 64, 128, 6), (0, 6, 3, 1, 128, 160, 9),
        (0, 6, 3, 2, 160, 256, 15),
    ]  # fmt: skip
    return _efficientnet("efficientnet_v2_s", stages)


def _regnet(name: str, depth: int, w_0: float, w_a: float, w_m: float, group_width: int, se: bool) -> onnx.ModelProto:
    """torchvision RegNet from its design-space parameters: quantized linear widths, grouped bottlenecks."""
    block_widths = np.round(w_0 * w_m ** np.round(np.log((np.arange(depth) * w_a + w_0) / w_0) / np.log(w_m)) / 8).astype(int) * 8
    stages: list[list[int]] = []
    for width in block_widths.tolist():
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    g = _Net(name)
    x, cin = g.conv(g.image(), 3, 32, 3, 2, act="relu"), 32
    for width, count in stages:
        gw = min(group_width, width)
        width = _make_divisible(width, gw)
        for index in range(count):
            x = g.bottleneck(x, cin, width, width, 2 if index == 0 else 1, width // gw, int(round(0.25 * cin)) if se else 0)
            cin = width
    return g.classifier(x, cin)


def regnet() -> onnx.ModelProto:
    """RegNetX-3.2GF (torchvision regnet_x_3_2gf, AI Hub's `regnet`: widths 96-192-432-1008); input [1, 3, 224, 224]."""
    return _regnet("regnet", 25, 88, 26.31, 2.25, 48, se=False)


def regnet_y_800mf() -> onnx.ModelProto:
    """RegNetY-800MF (torchvision regnet_y_800mf: widths 64-144-320-784, SE); input [1, 3, 224, 224]."""
    return _regnet("regnet_y_800mf", 14, 56, 38.84, 2.4, 16, se=True)


def convnext_tiny() -> onnx.ModelProto:
    """ConvNeXt-Tiny (torchvision: depthwise 7x7, Transpose + LayerNormalization, Erf-GELU MLP, layer scale); input [1, 3, 224, 224]."""
    g = _Net("convnext_tiny")
    x, cin = g.layer_norm2d(g.conv(g.image(), 3, 96, 4, 4, pads=[0] * 4), 96), 96
    for dim, depth in ((96, 3), (192, 3), (384, 9), (768, 3)):
        if dim != cin:  # downsample: LayerNorm2d, 2x2 stride-2 conv
            x, cin = g.conv(g.layer_norm2d(x, cin), cin, dim, 2, 2, pads=[0] * 4), dim
        for _ in range(depth):
            y = g.layer_norm(g.op("Transpose", [g.conv(x, dim, dim, 7, group=dim)], perm=[0, 2, 3, 1]), dim)
            y = g.op("Transpose", [g.dense(g.dense(y, dim, 4 * dim, act="gelu"), 4 * dim, dim)], perm=[0, 3, 1, 2])
            x = g.op("Add", [x, g.op("Mul", [y, g.const(np.full((dim, 1, 1), 0.1, np.float32), "gamma")])])
    x = g.op("Flatten", [g.layer_norm2d(g.op("GlobalAveragePool", [x]), cin)])
    return g.finish(g.gemm(x, cin, 1000), [1, 1000])


def vit() -> onnx.ModelProto:
    """ViT-B/16 (torchvision vit_b_16: 16x16 patch conv, class token, 12 pre-LN encoder blocks); input [1, 3, 224, 224]."""
    g = _Net("vit")
    dim, seq = 768, 197
    x = g.op("Reshape", [g.conv(g.image(), 3, dim, 16, 16, pads=[0] * 4), g.ints([1, dim, seq - 1])])
    token, position = (g.const((0.02 * g.rng.standard_normal(shape)).astype(np.float32), "embed") for shape in ((1, 1, dim), (1, seq, dim)))
    x = g.op("Add", [g.op("Concat", [token, g.op("Transpose", [x], perm=[0, 2, 1])], axis=1), position])
    for _ in range(12):
        x = g.encoder_block(x, dim, 12, 4 * dim, seq)
    x = g.op("Gather", [g.layer_norm(x, dim), g.const(np.array(0, np.int64), "idx")], axis=1)  # class token
    return g.finish(g.gemm(x, dim, 1000), [1, 1000])


# ---------------------------------------------------------------- super resolution (AIMET model zoo, x4) and audio


def _upscaled(g: _Net, x: str) -> onnx.ModelProto:
    return g.finish(g.depth_to_space(x, 4), [1, 3, 512, 512], "image", (1, 3, 128, 128), "upscaled_image")


def _quicksrnet(name: str, channels: int, layers: int, anchor: bool) -> onnx.ModelProto:
    g = _Net(name)
    y = g.conv("image", 3, channels, 3, act="clip01")
    for _ in range(layers):
        y = g.conv(y, channels, channels, 3, act="clip01")
    y = g.conv(y, channels, 48, 3)
    if anchor:  # input-to-output connection: a learned 1x1 conv of the input added before depth-to-space
        y = g.op("Add", [g.conv("image", 3, 48, 1), y])
    return _upscaled(g, g.act(y, "clip01"))


def quicksrnetsmall() -> onnx.ModelProto:
    """QuickSRNet-Small x4 (32 channels, 2 intermediate 3x3 convs, Clip(0, 1) activations, DepthToSpace); input [1, 3, 128, 128]."""
    return _quicksrnet("quicksrnetsmall", 32, 2, anchor=False)


def quicksrnetmedium() -> onnx.ModelProto:
    """QuickSRNet-Medium x4 (32 channels, 5 intermediate 3x3 convs); input [1, 3, 128, 128]."""
    return _quicksrnet("quicksrnetmedium", 32, 5, anchor=False)


def quicksrnetlarge() -> onnx.ModelProto:
    """QuickSRNet-Large x4 (64 channels, 11 intermediate 3x3 convs, anchor 1x1 conv + add); input [1, 3, 128, 128]."""
    return _quicksrnet("quicksrnetlarge", 64, 11, anchor=True)


def sesr_m5() -> onnx.ModelProto:
    """SESR-M5 x4, uncollapsed as AI Hub exports it (kxk conv to 256, 1x1 back to 16; 5 residual blocks; anchor); input [1, 3, 128, 128]."""
    g = _Net("sesr_m5")

    def linear_block(x: str, cin: int, cout: int, k: int) -> str:  # collapsible linear block: kxk expand (no bias), 1x1 squeeze
        return g.conv(g.conv(x, cin, 256, k, bias=False), 256, cout, 1)

    first = g.op("Relu", [linear_block("image", 3, 16, 5)])
    x = first
    for _ in range(5):
        x = g.op("Relu", [g.op("Add", [x, linear_block(x, 16, 16, 3)])])
    x = linear_block(g.op("Add", [x, first]), 16, 48, 5)
    return _upscaled(g, g.op("Add", [x, g.conv("image", 3, 48, 1)]))


def xlsr() -> onnx.ModelProto:
    """XLSR x4 (3 G-blocks of grouped 3x3 + 1x1, residual 3x3 concat, clipped ReLU after DepthToSpace); input [1, 3, 128, 128]."""
    g = _Net("xlsr")
    residual = g.conv("image", 3, 16, 3)
    x = g.conv(g.conv("image", 3, 32, 3, act="relu"), 32, 32, 1)
    for _ in range(3):
        x = g.conv(g.conv(x, 32, 32, 3, group=4, act="relu"), 32, 32, 1)
    x = g.conv(g.conv(g.op("Concat", [x, residual], axis=1), 48, 32, 1, act="relu"), 32, 48, 3)
    out = g.act(g.depth_to_space(x, 4), "clip01")
    return g.finish(out, [1, 3, 512, 512], "image", (1, 3, 128, 128), "upscaled_image")


def yamnet() -> onnx.ModelProto:
    """YAMNet (torch_audioset: MobileNetV1 with TF-SAME pads, 1024 -> 521 logits) on AI Hub's log-mel patch [1, 1, 96, 64]."""
    g = _Net("yamnet")
    same2 = [0, 0, 1, 1]  # TF SAME for a 3x3 stride-2 conv on even sizes: pad bottom/right only
    x, cin = g.conv("audio", 1, 32, 3, 2, act="relu", pads=same2), 32
    for cout, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)):
        x = g.conv(g.conv(x, cin, cin, 3, stride, group=cin, act="relu", pads=same2 if stride == 2 else None), cin, cout, 1, act="relu")
        cin = cout
    return g.finish(g.gemm(g.gap(x), cin, 521), [1, 521], "audio", (1, 1, 96, 64), "class_scores")


# ---------------------------------------------------------------- registry

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    builder.__name__: builder
    for builder in (
        mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, resnet18, resnet50, resnet101, resnext50, resnext101, wideresnet50,
        squeezenet1_1, shufflenet_v2, googlenet, inception_v3, densenet121, efficientnet_b0, efficientnet_v2_s, mnasnet05, regnet,
        regnet_y_800mf, convnext_tiny, vit, quicksrnetsmall, quicksrnetmedium, quicksrnetlarge, sesr_m5, xlsr, yamnet,
    )
}  # fmt: skip

# The check set: never used to fit the simulator, only to check it.
HELD_OUT_FAMILIES = frozenset(
    {"mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet50", "resnet101", "resnext50", "resnext101", "wideresnet50"}
)


def build(name: str) -> onnx.ModelProto:
    """The ONNX graph of AI Hub model ``name`` (a key of MODELS)."""
    return MODELS[name]()
