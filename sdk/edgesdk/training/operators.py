"""ONNX operators as torch functions, for training a model in its own graph (edgesdk.training.graph_module).

Each function takes the node's inputs (torch tensors, or None for an omitted optional input) and
its attributes, and returns its outputs. The graph runs under ``torch.func.vmap`` with one sample
per call, so shapes are the model's own (batch 1 included) and ``Shape`` or ``Reshape`` constants
mean what the exporter meant. Floating-point tensors are float32 throughout: a float16 model
trains in float32 and is written back in float16. The set covers what exporters write for CNNs and
transformers; any other operator is refused by name before training starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import onnx
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Operator = Callable[..., Sequence[Tensor | None]]

FLOAT = torch.float32

# ONNX element types -> the torch dtype computed with (every float type trains in float32).
DTYPES = {
    onnx.TensorProto.FLOAT: FLOAT,
    onnx.TensorProto.FLOAT16: FLOAT,
    onnx.TensorProto.BFLOAT16: FLOAT,
    onnx.TensorProto.DOUBLE: FLOAT,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def _ints(tensor: Tensor | None) -> list[int] | None:
    return None if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]


def _axes(node_axes: list[int] | None, tensor: Tensor | None) -> list[int] | None:
    return node_axes if node_axes is not None else _ints(tensor)


def _pads(pads: list[int] | None, spatial: int) -> tuple[list[int], bool]:
    """ONNX pads (begins then ends) as torch's F.pad list (last axis first), and whether they are symmetric."""
    pads = pads or [0] * (2 * spatial)
    begins, ends = pads[:spatial], pads[spatial:]
    flat: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        flat += [begin, end]
    return flat, begins == ends


def _same_pads(shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], upper: bool) -> list[int]:
    begins, ends = [], []
    for size, k, s, d in zip(shape, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def conv(x, w, b=None, *, pads=None, strides=None, dilations=None, group=1, auto_pad="NOTSET", kernel_shape=None):
    spatial = w.dim() - 2
    strides, dilations = strides or [1] * spatial, dilations or [1] * spatial
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(x.shape[2:], w.shape[2:], strides, dilations, auto_pad == "SAME_UPPER")
    flat, symmetric = _pads(pads, spatial)
    function = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    if symmetric:
        return [function(x, w, b, strides, flat[::2][::-1], dilations, group)]
    return [function(F.pad(x, flat), w, b, strides, 0, dilations, group)]


def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    y = alpha * (a.transpose(-1, -2) if transA else a) @ (b.transpose(-1, -2) if transB else b)
    return [y if c is None else y + beta * c]


def _pool(kind: str):
    def pool(x, *, kernel_shape, pads=None, strides=None, dilations=None, ceil_mode=0, auto_pad="NOTSET", count_include_pad=0, storage_order=0):
        spatial = len(kernel_shape)
        strides = strides or [1] * spatial
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = _same_pads(x.shape[2:], kernel_shape, strides, dilations or [1] * spatial, auto_pad == "SAME_UPPER")
        flat, symmetric = _pads(pads, spatial)
        if kind == "max":
            function = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
            if not symmetric:
                x, flat = F.pad(x, flat, value=-math.inf), [0] * len(flat)
            return [function(x, kernel_shape, strides, flat[::2][::-1], dilations or 1, bool(ceil_mode))]
        average = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
        if not symmetric:
            x, flat = F.pad(x, flat), [0] * len(flat)
        return [average(x, kernel_shape, strides, flat[::2][::-1], bool(ceil_mode), bool(count_include_pad))]

    return pool


def reshape(x, shape, *, allowzero=0):
    target = _ints(shape)
    assert target is not None
    if not allowzero:
        target = [x.shape[i] if size == 0 else size for i, size in enumerate(target)]
    return [x.reshape(target)]


def flatten(x, *, axis=1):
    axis = axis % x.dim() if x.dim() else 0
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def transpose(x, *, perm=None):
    return [x.permute(perm if perm is not None else list(reversed(range(x.dim()))))]


def squeeze(x, axes_input=None, *, axes=None):
    chosen = _axes(axes, axes_input)
    if chosen is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(a % x.dim() for a in chosen))]


def unsqueeze(x, axes_input=None, *, axes=None):
    chosen = _axes(axes, axes_input)
    assert chosen is not None
    rank = x.dim() + len(chosen)
    for axis in sorted(a % rank for a in chosen):
        x = x.unsqueeze(axis)
    return [x]


def concat(*xs, axis):
    return [torch.cat(xs, dim=axis)]


def split(x, sizes=None, *, axis=0, split=None, num_outputs=None, outputs=1):
    chosen = split if split is not None else _ints(sizes)
    if chosen is None:
        count = num_outputs or outputs
        chunk = -(-x.shape[axis] // count)
        chosen = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return list(torch.split(x, chosen, dim=axis))


def slice_(x, starts, ends, axes=None, steps=None):
    begin, end = _ints(starts), _ints(ends)
    assert begin is not None and end is not None
    chosen = _ints(axes) or list(range(len(begin)))
    strides = _ints(steps) or [1] * len(begin)
    index: list[slice] = [slice(None)] * x.dim()
    flips = []
    for b, e, a, s in zip(begin, end, chosen, strides, strict=True):
        a %= x.dim()
        size = x.shape[a]
        if s > 0:
            index[a] = slice(max(0, min(size, b + size if b < 0 else b)), max(0, min(size, e + size if e < 0 else e)), s)
        else:  # a negative step: slice the reversed axis
            b = min(size - 1, b + size if b < 0 else b)
            e = -1 if e < -size else (e + size if e < 0 else e)
            index[a] = slice(size - 1 - b, size - 1 - e, -s)
            flips.append(a)
    if flips:
        x = x.flip(flips)
    return [x[tuple(index)]]


def gather(x, indices, *, axis=0):
    axis %= x.dim()
    flat = indices.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    picked = x.index_select(axis, flat)
    return [picked.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :])]


def shape(x, *, start=0, end=None):
    return [torch.tensor(list(x.shape)[start:end], dtype=torch.int64)]


def cast(x, *, to, saturate=1):
    return [x.to(DTYPES[to])]


def constant_of_shape(shape, *, value=None):
    fill = value if value is not None else torch.zeros(1)
    target = _ints(shape)
    assert target is not None
    return [torch.full(target, fill.reshape(-1)[0].item(), dtype=fill.dtype)]


def expand(x, shape):
    target = _ints(shape)
    assert target is not None
    rank = max(x.dim(), len(target))
    full = [1] * (rank - len(target)) + target
    current = [1] * (rank - x.dim()) + list(x.shape)
    return [x.reshape(current).expand([c if t == 1 else t for c, t in zip(current, full, strict=True)])]


def _reduce(function):
    def reduce(x, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        chosen = _axes(axes, axes_input)
        if not chosen:
            if noop_with_empty_axes:
                return [x]
            chosen = list(range(x.dim()))
        return [function(x, [a % x.dim() for a in chosen], bool(keepdims))]

    return reduce


def _reduce_max(x, dims, keep):
    return torch.amax(x, dim=dims, keepdim=keep)


def _reduce_min(x, dims, keep):
    return torch.amin(x, dim=dims, keepdim=keep)


def softmax(x, *, axis=-1):
    return [torch.softmax(x, dim=axis)]


def log_softmax(x, *, axis=-1):
    return [torch.log_softmax(x, dim=axis)]


def layer_norm(x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis %= x.dim()
    return [F.layer_norm(x, x.shape[axis:], scale, bias, epsilon)]


def batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    view = [1, -1] + [1] * (x.dim() - 2)
    return [(x - mean.reshape(view)) / torch.sqrt(var.reshape(view) + epsilon) * scale.reshape(view) + bias.reshape(view)]


def clip(x, low=None, high=None, *, min=None, max=None):  # noqa: A002 - ONNX's attribute names (opset < 11)
    low = low if low is not None else (None if min is None else torch.tensor(min))
    high = high if high is not None else (None if max is None else torch.tensor(max))
    return [torch.clamp(x, low, high)]


def gelu(x, *, approximate="none"):
    return [F.gelu(x, approximate=approximate)]


def where(condition, a, b):
    return [torch.where(condition.bool(), a, b)]


def range_(start, limit, delta):
    return [torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)]


def tile(x, repeats):
    counts = _ints(repeats)
    assert counts is not None
    return [x.repeat(counts)]


def pad(x, pads, value=None, axes=None, *, mode="constant"):
    amounts = _ints(pads)
    assert amounts is not None
    chosen = [a % x.dim() for a in (_ints(axes) or list(range(x.dim())))]
    full = [0] * (2 * x.dim())
    for i, a in enumerate(chosen):
        full[a], full[x.dim() + a] = amounts[i], amounts[len(chosen) + i]
    flat, _ = _pads(full, x.dim())
    fill = 0.0 if value is None else value.reshape(-1)[0].item()
    return [F.pad(x, flat, mode=mode, value=fill) if mode == "constant" else F.pad(x, flat, mode=mode)]


def trilu(x, k=None, *, upper=1):
    offset = 0 if k is None else int(k.item())
    return [torch.triu(x, offset) if upper else torch.tril(x, offset)]


def _unary(function):
    return lambda x: [function(x)]


def _binary(function):
    return lambda a, b: [function(a, b)]


def _float_binary(function):
    """Arithmetic whose operands may mix float and integer tensors, as ONNX types them alike."""
    return lambda a, b: [function(a, b.to(a.dtype) if a.is_floating_point() else b)]


OPERATORS: dict[str, Operator] = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _float_binary(torch.add),
    "Sub": _float_binary(torch.sub),
    "Mul": _float_binary(torch.mul),
    "Div": lambda a, b: [a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")],
    "Pow": _binary(torch.pow),
    "Max": lambda *xs: [torch.stack(torch.broadcast_tensors(*xs)).amax(0)],
    "Min": lambda *xs: [torch.stack(torch.broadcast_tensors(*xs)).amin(0)],
    "Sqrt": _unary(torch.sqrt),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal),
    "Erf": _unary(torch.erf),
    "Tanh": _unary(torch.tanh),
    "Sigmoid": _unary(torch.sigmoid),
    "Relu": _unary(torch.relu),
    "Softplus": _unary(F.softplus),
    "LeakyRelu": lambda x, *, alpha=0.01: [F.leaky_relu(x, alpha)],
    "HardSigmoid": lambda x, *, alpha=0.2, beta=0.5: [torch.clamp(alpha * x + beta, 0, 1)],
    "HardSwish": _unary(F.hardswish),
    "Gelu": gelu,
    "Clip": clip,
    "Not": _unary(torch.logical_not),
    "And": _binary(torch.logical_and),
    "Or": _binary(torch.logical_or),
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le),
    "GreaterOrEqual": _binary(torch.ge),
    "Where": where,
    "Softmax": softmax,
    "LogSoftmax": log_softmax,
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(_reduce_max),
    "ReduceMin": _reduce(_reduce_min),
    "LayerNormalization": layer_norm,
    "BatchNormalization": batch_norm,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("average"),
    "GlobalAveragePool": lambda x: [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)],
    "GlobalMaxPool": lambda x: [x.amax(dim=tuple(range(2, x.dim())), keepdim=True)],
    "Flatten": flatten,
    "Reshape": reshape,
    "Transpose": transpose,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Gather": gather,
    "Shape": shape,
    "Cast": cast,
    "ConstantOfShape": constant_of_shape,
    "Expand": expand,
    "Range": range_,
    "Tile": tile,
    "Pad": pad,
    "Trilu": trilu,
    "Identity": lambda x: [x],
    "Dropout": lambda x, *_, **__: [x, None],
}
