"""How a unit lays tensors out: an NPU stores activations with their channels padded to its
vector depth, and computes and streams the padding too.

Qualcomm's HTP keeps an activation in tiles 32 channels deep (TVM's Hexagon layouts
``nhwc-8h8w32c`` for 8-bit and ``nhwc-8h2w32c2w`` for fp16): a 3-channel image occupies and
streams as 32 channels. A unit's ``channel_tile`` says so (null: no padding).

The channel axis is axis 1 of a 4-D or wider tensor (the ONNX layout, NCHW) and the innermost axis
of a narrower one (features of a matmul).
"""

from __future__ import annotations

import math

from edgesdk.compile.kernels import Kernel


def channel_axis(shape: list[int]) -> int | None:
    if not shape:
        return None
    return 1 if len(shape) >= 4 else len(shape) - 1


def _padded(extent: int, tile: int) -> float:
    """How many times larger ``extent`` is rounded up to a multiple of ``tile``."""
    return math.ceil(extent / tile) * tile / extent if extent else 1.0


def padding(shape: list[int], tile: int | None) -> float:
    """How many times larger ``shape`` is with its channels padded to a multiple of ``tile``."""
    axis = channel_axis(shape)
    return 1.0 if tile is None or axis is None else _padded(shape[axis], tile)


def padded_ops(kernel: Kernel, tile: int | None) -> float:
    """``kernel.ops`` counting padded lanes: its output's channels, and for a convolution that
    reduces over input channels (not a depthwise one) its reduction, input channels times window,
    packed into the tile (a 7x7 stem over 3 channels reduces 147 products: 160 lanes, not 32 x 49)."""
    if tile is None or not kernel.outputs:
        return float(kernel.ops)
    factor = padding(kernel.outputs[0].shape, tile)
    weight = next((t for t in kernel.inputs if t.source in ("weight", "constant") and len(t.shape) == 4), None)
    if kernel.op_class == "conv" and weight is not None:
        factor *= _padded(math.prod(weight.shape[1:]), tile)
    return kernel.ops * factor


def streamed_bytes(kernel: Kernel, tile: int | None) -> float:
    """What the unit reads and writes for ``kernel`` in its layout: weights as they are, and the
    model's inputs as the application hands them over (flat); the activations it computes padded."""
    return sum(t.bytes if t.source in ("weight", "constant", "input") else t.bytes * padding(t.shape, tile) for t in (*kernel.inputs, *kernel.outputs))
