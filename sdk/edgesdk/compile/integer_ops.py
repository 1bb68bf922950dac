"""Rewrite quantize/dequantize (QDQ) patterns into integer convolutions and matmuls, in Relax.

TVM's ONNX frontend imports a QDQ model as fake quantization: every conv runs in float32 between
a dequantize and a quantize. This pass turns

    quantize(relu?(conv2d(dequantize(xq, sx, zx), dequantize(wq, sw, 0)) + bias?), sy, zy)

(and the same around ``matmul``, whose weight may be transposed) into

    acc = conv2d(pad(xq, value=zx), wq, out_dtype=int32)    int8 x int8 -> int32 accumulation
          - zx * sum(wq over each output channel's window)  zero point of the input, exactly
    quantize(relu?(float(acc) * (sx * sw) + bias), sy, zy)  requantization (per output channel)

so the arithmetic of the layer is integer; only the per-channel rescale is float, as in
onnxruntime's own integer kernels. Weights must be symmetric (zero point 0, as every per-channel
scheme produces); anything else is left as it was, still correct, in float. TVM is imported by
the caller (the worker).
"""

from __future__ import annotations

import numpy as np

from edgesdk.compile.relax_match import Bindings


def integerize(mod, known: dict | None = None):
    """``mod`` with its QDQ conv2d/matmul patterns made integer.
    ``known`` maps parameters of ``main`` (weights kept as inputs) to their numpy values."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    main = mod["main"]
    bindings = Bindings(main, known or {})
    value, op_name, _const = bindings.value, bindings.op_name, bindings.constant

    def _by_reciprocal(call):
        """A quantize by a known scale multiplies by its reciprocal (then quantizes by 1.0, which
        LLVM folds) instead of dividing element by element: a vector division costs about ten times
        a multiplication, and an int8 epilogue has one or two per output value. The product can
        differ from the quotient in the last bit, which moves a rounding only within ~1e-5 of a
        half step: far inside the float32 noise verification allows for."""
        if op_name(call) != "relax.quantize":
            return call
        scale = _const(call.args[1])
        if scale is None or scale.dtype != np.float32 or not np.all(np.isfinite(1 / scale)):
            return call
        if scale.size == 1 and float(scale.reshape(-1)[0]) == 1.0:
            return call
        axis = int(call.attrs.axis)
        ndim = len(call.args[0].ty.shape)
        shape = (1,) * ndim if scale.size == 1 else tuple(scale.size if dim == axis % ndim else 1 for dim in range(ndim))
        scaled = relax.op.multiply(call.args[0], relax.const((np.float32(1) / scale).reshape(shape).astype(np.float32)))
        return relax.op.quantize(scaled, relax.const(np.float32(1.0)), call.args[2], axis=axis, out_dtype=str(call.attrs.out_dtype))

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            rewritten = self._rewrite(call)
            return _by_reciprocal(rewritten if rewritten is not None else super().visit_call_(call))

        def _rewrite(self, quantize):
            if op_name(quantize) != "relax.quantize":
                return None
            inner, relu = quantize.args[0], False
            if op_name(inner) == "relax.nn.relu":
                inner, relu = value(inner).args[0], True
            bias = None
            if op_name(inner) == "relax.add":
                left, right = value(inner).args
                if op_name(left) in ("relax.nn.conv2d", "relax.matmul"):
                    inner, bias = left, right
                elif op_name(right) in ("relax.nn.conv2d", "relax.matmul"):
                    inner, bias = right, left
            layer = value(inner)
            kind = op_name(inner)
            if kind not in ("relax.nn.conv2d", "relax.matmul"):
                return None
            data, weight = layer.args
            transposed = op_name(weight) == "relax.permute_dims"
            if transposed:
                weight = value(weight).args[0]
            if op_name(data) != "relax.dequantize" or op_name(weight) != "relax.dequantize":
                return None
            xq, sx, zx = value(data).args
            wq, sw, zw = value(weight).args
            weight_var = self.visit_expr(wq)  # the int8 weights, as a constant or a parameter
            sx, zx, wq_np, sw, zw = _const(sx), _const(zx), _const(wq), _const(sw), _const(zw)
            if sx is None or zx is None or wq_np is None or sw is None or zw is None:
                return None
            if sx.size != 1 or np.any(zw != 0) or wq_np.dtype != np.int8:
                return None
            # Per-channel scales must run along the output channels: axis 0 of a conv's (O, I, kh, kw)
            # or a transposed matmul weight's (N, K), axis 1 of a matmul weight's (K, N).
            channel_axis = 1 if kind == "relax.matmul" and not transposed else 0
            per_channel_ok = sw.size == 1 or int(value(weight).attrs.axis) % wq_np.ndim == channel_axis
            if str(value(data).args[0].ty.dtype) not in ("int8", "uint8") or not per_channel_ok or (kind == "relax.matmul" and wq_np.ndim != 2):
                return None
            xq = self.visit_expr(xq)
            emit = self.builder_.emit
            zero = int(zx.reshape(-1)[0])
            weights = wq_np.astype(np.int32)
            channel_shape: tuple[int, ...]
            if kind == "relax.nn.conv2d":
                attrs = layer.attrs
                if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
                    return None
                padding = [int(p) for p in attrs.padding]
                extra = int(attrs.groups) == 1 and wq_np.shape[1] % 2  # an odd input channel count (an RGB image)
                if extra:
                    # One more input channel, of zero weights (its input is the zero point): the
                    # channels then pair up for the 16-bit multiply-add (schedules.integer).
                    weight_var = relax.const(np.concatenate([wq_np, np.zeros_like(wq_np[:, :1])], axis=1))
                if any(padding) or extra:
                    # Padded with the zero point inside the conv's own function, where the conv
                    # schedule packs it with the input: as a Relax pad it was a kernel of its own.
                    acc = self.builder_.emit_te(
                        _padded_conv,
                        xq,
                        weight_var,
                        [int(extra), *padding],
                        zero,
                        attrs.strides,
                        attrs.dilation,
                        int(attrs.groups),
                        primfunc_name_hint="conv2d",
                    )
                else:
                    acc = emit(relax.op.nn.conv2d(xq, weight_var, strides=attrs.strides, dilation=attrs.dilation, groups=int(attrs.groups), out_dtype="int32"))
                channel_shape = (1, -1, 1, 1)
                window_sums = weights.sum(axis=(1, 2, 3))
            else:
                acc = emit(relax.op.matmul(xq, emit(relax.op.permute_dims(weight_var)) if transposed else weight_var, out_dtype="int32"))
                channel_shape = (1, -1)
                window_sums = weights.sum(axis=1) if transposed else weights.sum(axis=0)
            if zero:
                acc = emit(relax.op.subtract(acc, relax.const((zero * window_sums).reshape(channel_shape).astype(np.int32))))
            scale = (sx.reshape(-1)[0] * sw.astype(np.float32).reshape(-1)).reshape(channel_shape if sw.size > 1 else (1,) * len(channel_shape))
            y = emit(relax.op.multiply(emit(relax.op.astype(acc, "float32")), relax.const(scale.astype(np.float32))))
            if bias is not None:
                folded = bindings.folded(bias)  # a quantized bias, dequantized once here, not at every run
                y = emit(relax.op.add(y, relax.const(folded) if folded is not None else self.visit_expr(bias)))
            if relu:
                y = emit(relax.op.nn.relu(y))
            call = value(quantize)
            return relax.op.quantize(
                y, self.visit_expr(call.args[1]), self.visit_expr(call.args[2]), axis=int(call.attrs.axis), out_dtype=str(call.attrs.out_dtype)
            )

    rewriter = Rewriter(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(main))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


def _padded_conv(data, weight, padding, pad_value: int, strides, dilation, groups: int):
    """TE: ``data`` padded with ``pad_value`` (``padding``: extra channels at the end, then top,
    left, bottom, right), then an int32 conv2d NCHW.

    An extra channel meets zero weights only, so it repeats the last real channel instead of
    holding the zero point: the padding condition then tests rows and columns alone, the interior
    of the copy is unconditional (schedules.spatial.partition_padding) and vectorises. With the
    channel in the condition, an RGB stem conv's input copy stayed scalar: 11 of its 61 us."""
    from tvm import te, tirx, topi

    channels, top, left, bottom, right = padding
    batch, depth, height, width = data.shape

    def value(n, c, y, x):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        return tirx.if_then_else(inside, data[n, tirx.min(c, depth - 1), y - top, x - left], tirx.const(pad_value, data.dtype))

    padded = te.compute((batch, depth + channels, height + top + bottom, width + left + right), value, name="pad_temp")
    return topi.nn.conv(padded, weight, strides, 0, dilation, groups, "NCHW", "OIHW", "int32")
