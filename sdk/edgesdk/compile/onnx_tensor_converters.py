"""Converters for ONNX operators TVM's frontend lacks or gets wrong, built from Relax's elementwise
and indexing operators (added to edgesdk.compile.onnx_converters' table):

- OneHot whose values (and depth, bound at deploy) are tensors, not constants;
- EyeLike with its dtype and diagonal k;
- Pow for every type pair: a float base with an integer exponent, and integer bases computed in
  double and truncated back, as onnxruntime does;
- IsInf with detect_negative / detect_positive;
- SpaceToDepth in both modes (DCR, and CRD since opset 28);
- RMSNormalization over any axes, in its stash type;
- BitCast between types of one width;
- Resize with ``axes`` and ``keep_aspect_ratio_policy`` (made full-rank for TVM's converter);
- TensorScatter (a KV-cache update), BatchNormalization in training mode, and ReduceMax /
  ReduceMin over booleans, and over floats with their infinities;
- Split into pieces of size zero, and Reshape with ``allowzero`` to a shape holding a zero.

This module imports TVM: only the compile worker loads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import tvm
from tvm import relax, topi
from tvm.relax.frontend.onnx import onnx_frontend as frontend

from edgesdk.compile.relax_values import Expr, constant, dtype_of, shape_of, text


def _const(value, dtype: str) -> Expr:
    return relax.const(np.asarray(value, dtype=dtype), dtype)


def _positions(size: int, axis: int, rank: int) -> Expr:
    """0 .. size-1 along ``axis`` of a ``rank``-D tensor (1 along the others, to broadcast)."""
    shape = [1] * rank
    shape[axis] = size
    return relax.op.reshape(relax.op.arange(0, size, 1, "int64"), shape)


class OneHot(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        indices, depth, values = inputs[0], inputs[1], inputs[2]
        size = int(np.asarray(constant(depth, params, "OneHot's depth")).reshape(-1)[0])
        rank = len(shape_of(bb, indices)) + 1
        axis = attr.get("axis", -1) % rank
        index = relax.op.astype(indices, "int64")
        index = relax.op.where(relax.op.less(index, _const(0, "int64")), relax.op.add(index, _const(size, "int64")), index)
        hit = relax.op.equal(relax.op.expand_dims(index, axis), _positions(size, axis, rank))
        off = relax.op.take(values, _const(0, "int64"))
        on = relax.op.take(values, _const(1, "int64"))
        return relax.op.where(hit, on, off)


class EyeLike(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        rows, cols = shape_of(bb, inputs[0])
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attr["dtype"])).name if attr.get("dtype") else dtype_of(bb, inputs[0])
        row, col = _positions(rows, 0, 2), _positions(cols, 1, 2)
        return relax.op.astype(relax.op.equal(relax.op.add(row, _const(attr.get("k", 0), "int64")), col), dtype)


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


class Pow(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        base, exponent = inputs[0], inputs[1]
        base_dtype, exponent_dtype = dtype_of(bb, base), dtype_of(bb, exponent)
        if _is_float(base_dtype):
            return relax.op.power(base, relax.op.astype(exponent, base_dtype) if exponent_dtype != base_dtype else exponent)
        # onnxruntime computes an integer base's power in double and converts it back, truncating
        # (exact wherever the result has fewer than 53 bits); so does this.
        wide = relax.op.power(relax.op.astype(base, "float64"), relax.op.astype(exponent, "float64"))
        return relax.op.astype(wide, base_dtype)


class IsInf(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x = inputs[0]
        infinite = relax.op.isinf(x)
        negative, positive = attr.get("detect_negative", 1), attr.get("detect_positive", 1)
        if negative and positive:
            return infinite
        if not negative and not positive:
            return relax.op.zeros(shape_of(bb, x), "bool")
        zero = _const(0, dtype_of(bb, x))
        return relax.op.logical_and(infinite, relax.op.greater(x, zero) if positive else relax.op.less(x, zero))


class SpaceToDepth(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x, size = inputs[0], int(attr["blocksize"])
        batch, channels, height, width = shape_of(bb, x)
        blocks = relax.op.reshape(x, [batch, channels, height // size, size, width // size, size])
        # DCR puts the block offsets before the channels; CRD after them.
        order = [0, 1, 3, 5, 2, 4] if text(attr.get("mode", b"DCR")) == "CRD" else [0, 3, 5, 1, 2, 4]
        return relax.op.reshape(relax.op.permute_dims(blocks, order), [batch, channels * size * size, height // size, width // size])


class RMSNormalization(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        dtype, rank = dtype_of(bb, x), len(shape_of(bb, x))
        stash = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attr.get("stash_type", onnx.TensorProto.FLOAT))).name
        axes = list(range(attr.get("axis", -1) % rank, rank))
        wide = relax.op.astype(x, stash) if stash != dtype else x
        mean_square = relax.op.mean(relax.op.multiply(wide, wide), axes, keepdims=True)
        normalized = relax.op.divide(wide, relax.op.sqrt(relax.op.add(mean_square, _const(attr.get("epsilon", 1e-5), stash))))
        return relax.op.multiply(relax.op.astype(normalized, dtype) if stash != dtype else normalized, scale)


class BitCast(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attr["to"]))
        if target == np.bool_ or dtype_of(bb, inputs[0]) == "bool":
            raise NotImplementedError("BitCast to or from bool: TVM stores booleans in 1 bit")
        return bb.emit_te(topi.reinterpret, inputs[0], target.name)


def _values(inputs, index: int, params) -> np.ndarray | None:
    """Input ``index`` as a constant array, None when absent or empty."""
    expr = inputs[index] if len(inputs) > index else None
    if expr is None:
        return None
    found = frontend.get_constant(expr, params)
    if not isinstance(found, tvm.ir.GenericConst):
        raise NotImplementedError("Resize's roi, scales and sizes must be constants")
    array = found.value.numpy()
    return array if array.size else None


class Resize(frontend.OnnxOpConverter):
    """TVM's Resize, handed full-rank roi, scales and sizes: ``axes`` and ``keep_aspect_ratio_policy``
    applied first, as the standard does (TVM's converter reads neither)."""

    @classmethod
    def get_converter(cls, opset):
        resize = frontend.Resize.get_converter(opset)
        if opset < 11:
            return resize

        def convert(bb, inputs, attr, params):
            attr = dict(attr)
            given_axes, policy = attr.pop("axes", None), text(attr.pop("keep_aspect_ratio_policy", b"stretch"))
            shape = shape_of(bb, inputs[0])
            rank = len(shape)
            axes = [axis % rank for axis in given_axes] if given_axes is not None else list(range(rank))
            roi, scales, sizes = _values(inputs, 1, params), _values(inputs, 2, params), _values(inputs, 3, params)
            if roi is not None and len(roi) == 2 * len(axes):
                full = [0.0] * rank + [1.0] * rank
                for index, axis in enumerate(axes):
                    full[axis], full[rank + axis] = roi[index], roi[len(axes) + index]
                roi = np.asarray(full, roi.dtype)
            if sizes is not None:
                wanted = dict(zip(axes, sizes.tolist(), strict=True))
                if policy != "stretch":
                    pick = min if policy == "not_larger" else max
                    scale = pick(wanted[axis] / shape[axis] for axis in axes)
                    wanted = {axis: int(scale * shape[axis] + 0.5) for axis in axes}
                sizes = np.asarray([wanted.get(axis, dim) for axis, dim in enumerate(shape)], "int64")
            if scales is not None:
                factors = dict(zip(axes, scales.tolist(), strict=True))
                scales = np.asarray([factors.get(axis, 1.0) for axis in range(rank)], scales.dtype)
                whole = all(float(factor * dim).is_integer() for factor, dim in zip(scales.tolist(), shape, strict=True))
                if not whole and text(attr.get("mode", b"nearest")) != "nearest":
                    raise NotImplementedError("scales that give fractional sizes: TVM resizes by the sizes' ratio, not by the scales")
            given = [inputs[0], *(relax.const(array) if array is not None else None for array in (roi, scales, sizes))]
            return resize(bb, frontend.onnx_input(given), attr, params)

        return convert


class TensorScatter(frontend.OnnxOpConverter):
    """The update written into the cache along ``axis`` at each batch row's write index (modulo
    the cache's length in circular mode): one scatter of precomputed indices."""

    @classmethod
    def _impl_v24(cls, bb, inputs, attr, params):
        past, update = inputs[0], inputs[1]
        write = inputs[2] if len(inputs) > 2 else None
        shape = shape_of(bb, update)
        rank = len(shape)
        axis = attr.get("axis", -2) % rank
        start = relax.op.astype(write, "int64") if write is not None else relax.op.zeros([shape[0]], "int64")
        index = relax.op.add(relax.op.reshape(start, [shape[0]] + [1] * (rank - 1)), _positions(shape[axis], axis, rank))
        if text(attr.get("mode", b"linear")) == "circular":
            index = relax.op.floor_mod(index, _const(shape_of(bb, past)[axis], "int64"))
        return relax.op.scatter_elements(past, relax.op.broadcast_to(index, shape), update, axis)


class BatchNormalization(frontend.OnnxOpConverter):
    """TVM's, but in training mode the standard's: normalized by the batch's own statistics, and
    the running statistics updated with ``momentum``."""

    @classmethod
    def get_converter(cls, opset):
        inference = frontend.BatchNormalization.get_converter(opset)

        def convert(bb, inputs, attr, params):
            if not attr.get("training_mode", 0):
                return inference(bb, inputs, attr, params)
            x, scale, bias, mean, var = list(inputs)[:5]
            shape = shape_of(bb, x)
            rank = len(shape)
            axes = [axis for axis in range(rank) if axis != 1]
            dtype = dtype_of(bb, x)
            momentum, epsilon = _const(attr.get("momentum", 0.9), dtype), _const(attr.get("epsilon", 1e-5), dtype)
            batch_mean = relax.op.mean(x, axes)
            batch_var = relax.op.variance(x, axes)
            along = [shape[1]] + [1] * (rank - 2)
            centred = relax.op.subtract(x, relax.op.reshape(batch_mean, along))
            normalized = relax.op.divide(centred, relax.op.sqrt(relax.op.add(relax.op.reshape(batch_var, along), epsilon)))
            y = relax.op.add(relax.op.multiply(normalized, relax.op.reshape(scale, along)), relax.op.reshape(bias, along))
            keep = relax.op.subtract(_const(1, dtype), momentum)
            running_mean = relax.op.add(relax.op.multiply(mean, momentum), relax.op.multiply(batch_mean, keep))
            running_var = relax.op.add(relax.op.multiply(var, momentum), relax.op.multiply(batch_var, keep))
            return relax.Tuple([y, running_mean, running_var])

        return convert


class _Reduction(frontend.OnnxOpConverter):
    """TVM's ReduceMax / ReduceMin, over booleans as uint8 (TVM has no boolean min or max), and
    over floats with the infinities it loses: TVM starts a max from the dtype's lowest finite
    value, so a row of only -inf (a fully masked attention row) came out -3.4e38, not -inf. A
    second reduction, of 1 where a value is not that infinity, tells those rows (the same
    converter, so the same axes). An empty reduction stays a gap (edgesdk.compile.onnx_fallback)."""

    REDUCTION: Any  # the frontend's converter class
    SIGN: float  # -1: max (whose identity is -inf), +1: min

    @classmethod
    def get_converter(cls, opset):
        reduce = cls.REDUCTION.get_converter(opset)

        def convert(bb, inputs, attr, params):
            data, rest = inputs[0], list(inputs)[1:]
            dtype = dtype_of(bb, data)
            if dtype == "bool":
                widened = frontend.onnx_input([relax.op.astype(data, "uint8"), *rest])
                return relax.op.astype(reduce(bb, widened, attr, params), "bool")
            result = reduce(bb, inputs, attr, params)
            if not _is_float(dtype):
                return result
            infinity = _const(cls.SIGN * np.inf, dtype)
            # max: 1 where a value is not -inf, else 0, reduced: 0 when all are -inf
            marks = relax.op.where(relax.op.equal(data, infinity), _const(0, dtype), _const(-cls.SIGN, dtype))
            seen = bb.normalize(reduce(bb, frontend.onnx_input([marks, *rest]), attr, params))
            only_infinite = relax.op.greater_equal(relax.op.multiply(seen, _const(cls.SIGN, dtype)), _const(0, dtype))
            return relax.op.where(only_infinite, infinity, result)

        return convert


class ReduceMax(_Reduction):
    REDUCTION = frontend.ReduceMax
    SIGN = -1.0


class ReduceMin(_Reduction):
    REDUCTION = frontend.ReduceMin
    SIGN = 1.0


def _constant_list(expr, params) -> list[int] | None:
    """A constant integer input's values; None when it is absent or computed."""
    if expr is None:
        return None
    found = frontend.get_constant(expr, params)
    return [int(value) for value in found.value.numpy().reshape(-1)] if isinstance(found, tvm.ir.GenericConst) else None


class Split(frontend.Split):
    """TVM's, but pieces of size zero too, which its split refuses (its indices must increase):
    then each piece is a slice."""

    @classmethod
    def _pieces(cls, bb, data, sizes: list[int], axis: int) -> Expr:
        starts = np.cumsum([0, *sizes])
        axis %= len(shape_of(bb, data))
        return relax.Tuple(
            [
                bb.emit(relax.op.strided_slice(data, axes=[axis], begin=[int(start)], end=[int(start + size)]))
                for start, size in zip(starts, sizes, strict=False)
            ]
        )

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        sizes = list(attr.get("split", []))
        return cls._pieces(bb, inputs[0], sizes, attr.get("axis", 0)) if 0 in sizes else super()._impl_v1(bb, inputs, attr, params)

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        sizes = _constant_list(inputs[1] if len(inputs) > 1 else None, params) or []
        return cls._pieces(bb, inputs[0], sizes, attr.get("axis", 0)) if 0 in sizes else super()._impl_v13(bb, inputs, attr, params)


class Reshape(frontend.Reshape):
    """TVM's, but with ``allowzero`` and a constant shape holding a 0: TVM's leaves that shape
    symbolic, and Relax's reshape would copy the input's dim for the 0. Such a shape has no
    elements (nor has the input, then): it is an empty tensor of that shape."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        dims = _constant_list(inputs[1], params) if attr.get("allowzero", 0) and not isinstance(inputs[0], relax.ShapeExpr) else None
        if dims is None or 0 not in dims:
            return super()._impl_v13(bb, inputs, attr, params)
        if int(np.prod(shape_of(bb, inputs[0]))) != 0:
            raise ValueError(f"Reshape of a tensor with elements to the empty shape {dims}")
        return relax.op.zeros([0 if dim == -1 else dim for dim in dims], dtype_of(bb, inputs[0]))


TENSOR_CONVERTERS: dict[str, type] = {
    "Split": Split,
    "Reshape": Reshape,
    "TensorScatter": TensorScatter,
    "BatchNormalization": BatchNormalization,
    "ReduceMax": ReduceMax,
    "ReduceMin": ReduceMin,
    "Resize": Resize,
    "OneHot": OneHot,
    "EyeLike": EyeLike,
    "Pow": Pow,
    "IsInf": IsInf,
    "SpaceToDepth": SpaceToDepth,
    "RMSNormalization": RMSNormalization,
    "BitCast": BitCast,
}
