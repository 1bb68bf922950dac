"""ONNX operators TVM's frontend lacks, converted by edgesdk: one table (``CONVERTERS``), added to
the frontend's own while a model is imported (``converters_registered``).

- LSTM, GRU and RNN are unrolled over the sequence length the model is compiled for: the input
  projection of every step is one matmul, each step adds its recurrent matmul and gates. Every
  attribute of the standard is honoured (directions, layouts, activations with their alpha/beta,
  clip, peepholes, input_forget, linear_before_reset, sequence_lens, initial states).
- QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger become the integer computation they
  define: zero points subtracted in int32, an int32 convolution or matmul, and for the QLinear
  forms the requantization to the output's scale and zero point, rounded half to even and
  saturated.
- CumProd as Relax's cumprod (exclusive and reverse included).
- Elu and Selu replace TVM's, whose float32 constants break float16 models.
- LpNormalization and ReverseSequence.

A converter is a class with ``_impl_v<opset>`` classmethods, as TVM's frontend defines them.
This module imports TVM: only the compile worker loads it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as frontend

from edgesdk.compile.onnx_fallback import NodeGuard
from edgesdk.compile.onnx_scan import Loop, Scan
from edgesdk.compile.onnx_tensor_converters import TENSOR_CONVERTERS
from edgesdk.compile.relax_values import Expr, constant, dtype_of, shape_of, text

# --- recurrent layers -------------------------------------------------------------------------

# Each activation as the standard names it, with its alpha and beta defaults (None: takes none).
ACTIVATIONS: dict[str, tuple[Callable[[Expr, float, float, str], Expr], float | None, float | None]] = {
    "sigmoid": (lambda x, a, b, t: relax.op.sigmoid(x), None, None),
    "tanh": (lambda x, a, b, t: relax.op.tanh(x), None, None),
    "relu": (lambda x, a, b, t: relax.op.nn.relu(x), None, None),
    "affine": (lambda x, a, b, t: relax.op.add(relax.op.multiply(x, relax.const(a, t)), relax.const(b, t)), 1.0, 0.0),
    "leakyrelu": (lambda x, a, b, t: relax.op.nn.leakyrelu(x, a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b, t: relax.op.where(relax.op.greater(x, relax.const(a, t)), x, relax.op.zeros_like(x)), 1.0, None),
    "scaledtanh": (lambda x, a, b, t: relax.op.multiply(relax.const(a, t), relax.op.tanh(relax.op.multiply(x, relax.const(b, t)))), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b, t: relax.op.clip(relax.op.add(relax.op.multiply(x, relax.const(a, t)), relax.const(b, t)), 0.0, 1.0), 0.2, 0.5),
    "elu": (
        lambda x, a, b, t: relax.op.where(
            relax.op.greater_equal(x, relax.const(0.0, t)), x, relax.op.multiply(relax.const(a, t), relax.op.subtract(relax.op.exp(x), relax.const(1.0, t)))
        ),
        1.0,
        None,
    ),
    "softsign": (lambda x, a, b, t: relax.op.divide(x, relax.op.add(relax.const(1.0, t), relax.op.abs(x))), None, None),
    "softplus": (lambda x, a, b, t: relax.op.log(relax.op.add(relax.const(1.0, t), relax.op.exp(x))), None, None),
}


def _apply(function: Callable[[Expr, Any, Any, str], Expr], alpha, beta, dtype: str, x: Expr) -> Expr:
    return function(x, alpha, beta, dtype)


def _activations(attr: dict, count: int, defaults: list[str], dtype: str) -> list[Callable[[Expr], Expr]]:
    """``count`` activations per direction: the attribute's, or the defaults; alpha and beta are
    taken in order by the activations that use them."""
    names = [text(name).lower() for name in attr.get("activations", ())] or defaults * count
    alphas, betas = list(attr.get("activation_alpha", ())), list(attr.get("activation_beta", ()))
    functions: list[Callable[[Expr], Expr]] = []
    for name in names:
        if name not in ACTIVATIONS:
            raise ValueError(f"recurrent activation {name} is not supported")
        function, alpha, beta = ACTIVATIONS[name]
        a = alphas.pop(0) if alpha is not None and alphas else alpha
        b = betas.pop(0) if beta is not None and betas else beta
        functions.append(functools.partial(_apply, function, a, b, dtype))
    return functions


def _masked(alive: Expr, new: Expr, old: Expr, dtype: str) -> Expr:
    """``new`` where ``alive`` is 1, ``old`` where it is 0 (a sequence past its length)."""
    return relax.op.add(relax.op.multiply(alive, new), relax.op.multiply(relax.op.subtract(relax.const(1.0, dtype), alive), old))


class _Recurrent(frontend.OnnxOpConverter):
    """The common part of RNN, GRU and LSTM: the layout, the directions, the steps; ``_cell``
    computes one step of one direction."""

    GATES = 1
    DEFAULT_ACTIVATIONS = ["tanh"]

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * (8 - len(inputs))
        x, w, r, bias, lengths, initial_h = inputs[:6]
        layout = attr.get("layout", 0)
        if layout:
            x = relax.op.permute_dims(x, [1, 0, 2])
            initial_h = relax.op.permute_dims(initial_h, [1, 0, 2]) if initial_h is not None else None
        steps, batch, _ = shape_of(bb, x)
        directions, _, _ = shape_of(bb, w)
        hidden = attr.get("hidden_size") or shape_of(bb, r)[-1]
        dtype = dtype_of(bb, x)
        direction = text(attr.get("direction", b"forward"))
        activations = _activations(attr, directions, cls.DEFAULT_ACTIVATIONS, dtype)
        per = len(activations) // directions
        known = frontend.get_constant(lengths, params) if lengths is not None else None
        if isinstance(known, tvm.ir.GenericConst) and np.all(known.value.numpy() == steps):
            lengths = None  # every sequence full: no masking
        state = cls._extra_state(inputs, layout)
        ys, finals = [], []
        for d in range(directions):
            reverse = direction == "reverse" or d == 1
            take = lambda t, d=d: relax.op.squeeze(relax.op.strided_slice(t, [0], [d], [d + 1]), [0])  # noqa: E731
            w_d, r_d = take(w), take(r)
            b_d = take(bias) if bias is not None else None
            h = take(initial_h) if initial_h is not None else relax.op.zeros((batch, hidden), dtype)
            extra = cls._extra_for(state, d, take, batch, hidden, dtype)
            # Every step's input projection in one matmul: (steps*batch, input) x (input, gates*hidden).
            projected = bb.emit(relax.op.matmul(x, relax.op.permute_dims(w_d, [1, 0])))
            if b_d is not None:
                w_bias = relax.op.strided_slice(b_d, [0], [0], [cls.GATES * hidden])
                projected = bb.emit(relax.op.add(projected, w_bias))
            r_bias = relax.op.strided_slice(b_d, [0], [cls.GATES * hidden], [2 * cls.GATES * hidden]) if b_d is not None else None
            outputs: list[Expr | None] = [None] * steps
            order = range(steps - 1, -1, -1) if reverse else range(steps)
            for t in order:
                x_t = relax.op.squeeze(relax.op.strided_slice(projected, [0], [t], [t + 1]), [0])
                new_h, new_extra = cls._cell(bb, attr, x_t, h, extra, r_d, r_bias, inputs, d, activations[d * per : (d + 1) * per], hidden, dtype)
                if lengths is not None:  # past its length a sequence keeps its state and outputs zeros
                    alive = relax.op.reshape(relax.op.astype(relax.op.less(relax.const(t, dtype_of(bb, lengths)), lengths), dtype), (batch, 1))
                    new_h = _masked(alive, new_h, h, dtype)
                    new_extra = [_masked(alive, e, old, dtype) for e, old in zip(new_extra, extra, strict=True)]
                    outputs[t] = bb.emit(relax.op.multiply(alive, new_h))
                h, extra = bb.emit(new_h), [bb.emit(e) for e in new_extra]
                outputs[t] = outputs[t] if outputs[t] is not None else h
            ys.append(relax.op.stack(outputs, axis=0))  # (steps, batch, hidden)
            finals.append((h, extra))
        y = relax.op.stack(ys, axis=1)  # (steps, directions, batch, hidden)
        y_h = relax.op.stack([h for h, _ in finals], axis=0)
        extras = [relax.op.stack([extra[i] for _, extra in finals], axis=0) for i in range(len(finals[0][1]))]
        if layout:
            y = relax.op.permute_dims(y, [2, 0, 1, 3])
            y_h = relax.op.permute_dims(y_h, [1, 0, 2])
            extras = [relax.op.permute_dims(e, [1, 0, 2]) for e in extras]
        return relax.Tuple([bb.emit(y), bb.emit(y_h), *(bb.emit(e) for e in extras)])

    @classmethod
    def _extra_state(cls, inputs, layout):
        return None

    @classmethod
    def _extra_for(cls, state, d, take, batch, hidden, dtype) -> list[Expr]:
        return []

    @classmethod
    def _gates(cls, x_t, h, r_d, r_bias, count: int, hidden: int, clip) -> list[Expr]:
        """Input projection + recurrent projection (+ biases) split into ``count`` gates, clipped."""
        summed = relax.op.add(x_t, relax.op.matmul(h, relax.op.permute_dims(r_d, [1, 0])))
        if r_bias is not None:
            summed = relax.op.add(summed, r_bias)
        gates = [relax.op.strided_slice(summed, [1], [i * hidden], [(i + 1) * hidden]) for i in range(count)]
        return [relax.op.clip(g, -clip, clip) for g in gates] if clip is not None else gates


class RNN(_Recurrent):
    GATES = 1
    DEFAULT_ACTIVATIONS = ["tanh"]

    @classmethod
    def _cell(cls, bb, attr, x_t, h, extra, r_d, r_bias, inputs, d, activations, hidden, dtype):
        (gate,) = cls._gates(x_t, h, r_d, r_bias, 1, hidden, attr.get("clip"))
        return activations[0](gate), []


class GRU(_Recurrent):
    GATES = 3
    DEFAULT_ACTIVATIONS = ["sigmoid", "tanh"]

    @classmethod
    def _cell(cls, bb, attr, x_t, h, extra, r_d, r_bias, inputs, d, activations, hidden, dtype):
        f, g = activations
        clip = attr.get("clip")
        cut = lambda e, i: relax.op.strided_slice(e, [1], [i * hidden], [(i + 1) * hidden])  # noqa: E731
        limit = (lambda e: relax.op.clip(e, -clip, clip)) if clip is not None else (lambda e: e)  # noqa: E731
        recurrent = relax.op.matmul(h, relax.op.permute_dims(r_d, [1, 0]))
        recurrent_bias = lambda i: relax.op.strided_slice(r_bias, [0], [i * hidden], [(i + 1) * hidden]) if r_bias is not None else None  # noqa: E731
        plus = lambda a, b: relax.op.add(a, b) if b is not None else a  # noqa: E731
        z = f(limit(plus(plus(cut(x_t, 0), cut(recurrent, 0)), recurrent_bias(0))))
        reset = f(limit(plus(plus(cut(x_t, 1), cut(recurrent, 1)), recurrent_bias(1))))
        r_h = relax.op.strided_slice(r_d, [0], [2 * hidden], [3 * hidden])
        if attr.get("linear_before_reset", 0):
            candidate = plus(relax.op.matmul(h, relax.op.permute_dims(r_h, [1, 0])), recurrent_bias(2))
            candidate = relax.op.add(cut(x_t, 2), relax.op.multiply(reset, candidate))
        else:
            candidate = plus(relax.op.add(cut(x_t, 2), relax.op.matmul(relax.op.multiply(reset, h), relax.op.permute_dims(r_h, [1, 0]))), recurrent_bias(2))
        candidate = g(limit(candidate))
        one = relax.const(1.0, dtype)
        return relax.op.add(relax.op.multiply(relax.op.subtract(one, z), candidate), relax.op.multiply(z, h)), []


class LSTM(_Recurrent):
    GATES = 4
    DEFAULT_ACTIVATIONS = ["sigmoid", "tanh", "tanh"]

    @classmethod
    def _extra_state(cls, inputs, layout):
        initial_c, peepholes = inputs[6], inputs[7]
        if layout and initial_c is not None:
            initial_c = relax.op.permute_dims(initial_c, [1, 0, 2])
        return initial_c, peepholes

    @classmethod
    def _extra_for(cls, state, d, take, batch, hidden, dtype) -> list[Expr]:
        initial_c, _ = state
        return [take(initial_c) if initial_c is not None else relax.op.zeros((batch, hidden), dtype)]

    @classmethod
    def _cell(cls, bb, attr, x_t, h, extra, r_d, r_bias, inputs, d, activations, hidden, dtype):
        f, g, act_h = activations
        (c,) = extra
        i, o, forget, cell = cls._gates(x_t, h, r_d, r_bias, 4, hidden, attr.get("clip"))
        peepholes = inputs[7]
        if peepholes is not None:
            p = relax.op.squeeze(relax.op.strided_slice(peepholes, [0], [d], [d + 1]), [0])
            p_i, p_o, p_f = (relax.op.strided_slice(p, [0], [k * hidden], [(k + 1) * hidden]) for k in range(3))
            i = relax.op.add(i, relax.op.multiply(p_i, c))
            forget = relax.op.add(forget, relax.op.multiply(p_f, c))
        i = f(i)
        forget = relax.op.subtract(relax.const(1.0, dtype), i) if attr.get("input_forget", 0) else f(forget)
        new_c = relax.op.add(relax.op.multiply(forget, c), relax.op.multiply(i, g(cell)))
        if peepholes is not None:
            o = relax.op.add(o, relax.op.multiply(p_o, new_c))
        new_h = relax.op.multiply(f(o), act_h(new_c))
        return new_h, [new_c]


# --- integer operators ------------------------------------------------------------------------


def _widen(value: Expr, zero_point: Expr | None, axis_shape: list[int] | None = None) -> Expr:
    """``value - zero_point`` in int32 (a per-channel zero point reshaped to broadcast on ``axis_shape``)."""
    wide = relax.op.astype(value, "int32")
    if zero_point is None:
        return wide
    zero = relax.op.astype(zero_point, "int32")
    if axis_shape is not None:
        zero = relax.op.reshape(zero, axis_shape)
    return relax.op.subtract(wide, zero)


def _to_integer(real: Expr, y_scale: Expr, y_zero: Expr | None, dtype: str) -> Expr:
    quantized = relax.op.round(relax.op.divide(real, y_scale))
    if y_zero is not None:
        quantized = relax.op.add(quantized, relax.op.astype(y_zero, "float32"))
    limits = np.iinfo(dtype)
    return relax.op.astype(relax.op.clip(quantized, int(limits.min), int(limits.max)), dtype)


def _conv_attrs(attr: dict, rank: int) -> dict:
    spatial = rank - 2
    pads = list(attr.get("pads", [0] * 2 * spatial))
    if text(attr.get("auto_pad", b"NOTSET")) not in ("NOTSET", ""):
        raise ValueError("auto_pad on integer convolutions is not supported; export explicit pads")
    return {
        "strides": list(attr.get("strides", [1] * spatial)),
        "padding": pads,
        "dilation": list(attr.get("dilations", [1] * spatial)),
        "groups": attr.get("group", 1),
    }


def _integer_conv(bb, x: Expr, w: Expr, attr: dict) -> Expr:
    rank = len(shape_of(bb, x))
    conv = {3: relax.op.nn.conv1d, 4: relax.op.nn.conv2d, 5: relax.op.nn.conv3d}.get(rank)
    if conv is None:
        raise ValueError(f"integer convolution of rank {rank} is not supported")
    return conv(x, w, out_dtype="int32", **_conv_attrs(attr, rank))


class ConvInteger(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w, x_zero, w_zero = (list(inputs) + [None] * 4)[:4]
        channels = shape_of(bb, w)[0]
        w_zero_shape = [channels] + [1] * (len(shape_of(bb, w)) - 1) if w_zero is not None and shape_of(bb, w_zero) and shape_of(bb, w_zero)[0] > 1 else None
        return _integer_conv(bb, _widen(x, x_zero), _widen(w, w_zero, w_zero_shape), attr)


class MatMulInteger(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, b, a_zero, b_zero = (list(inputs) + [None] * 4)[:4]
        a_zero_shape = [shape_of(bb, a_zero)[0], 1] if a_zero is not None and shape_of(bb, a_zero) and shape_of(bb, a_zero)[0] > 1 else None
        return relax.op.matmul(_widen(a, a_zero, a_zero_shape), _widen(b, b_zero), out_dtype="int32")


class QLinearConv(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias = (list(inputs) + [None] * 9)[:9]
        channels = shape_of(bb, w)[0]
        per_channel = [1, channels] + [1] * (len(shape_of(bb, w)) - 2)
        w_zero_shape = [channels] + [1] * (len(shape_of(bb, w)) - 1) if shape_of(bb, w_zero) and shape_of(bb, w_zero)[0] > 1 else None
        accumulated = _integer_conv(bb, _widen(x, x_zero), _widen(w, w_zero, w_zero_shape), attr)
        if bias is not None:
            accumulated = relax.op.add(accumulated, relax.op.reshape(bias, per_channel))
        scale = relax.op.multiply(x_scale, relax.op.reshape(w_scale, per_channel) if shape_of(bb, w_scale) and shape_of(bb, w_scale)[0] > 1 else w_scale)
        real = relax.op.multiply(relax.op.astype(accumulated, "float32"), scale)
        return _to_integer(real, y_scale, y_zero, dtype_of(bb, y_zero) if y_zero is not None else "uint8")


class QLinearMatMul(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (list(inputs) + [None] * 8)[:8]
        accumulated = relax.op.matmul(_widen(a, a_zero), _widen(b, b_zero), out_dtype="int32")
        scale_dtype = dtype_of(bb, a_scale)
        real = relax.op.multiply(relax.op.astype(accumulated, scale_dtype), relax.op.multiply(a_scale, b_scale))
        real = relax.op.astype(real, "float32") if scale_dtype != "float32" else real
        y_scale = relax.op.astype(y_scale, "float32") if dtype_of(bb, y_scale) != "float32" else y_scale
        return _to_integer(real, y_scale, y_zero, dtype_of(bb, y_zero) if y_zero is not None else "uint8")


# --- other ------------------------------------------------------------------------------------


class CumProd(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        data = inputs[0]
        axis = int(np.ravel(constant(inputs[1], params, "CumProd's axis"))[0])
        reverse = attr.get("reverse", 0) != 0
        if reverse:
            data = relax.op.flip(data, axis)
        result = relax.op.cumprod(data, axis, exclusive=attr.get("exclusive", 0) != 0)
        return relax.op.flip(result, axis) if reverse else result


class Elu(frontend.OnnxOpConverter):
    """TVM's Elu and Selu make float32 constants: wrong for a float16 input."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = dtype_of(bb, x)
        return ACTIVATIONS["elu"][0](x, float(attr.get("alpha", 1.0)), 0.0, dtype)


class Selu(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = dtype_of(bb, x)
        alpha, gamma = float(attr.get("alpha", 1.67326319217681884765625)), float(attr.get("gamma", 1.05070102214813232421875))
        return relax.op.multiply(relax.const(gamma, dtype), ACTIVATIONS["elu"][0](x, alpha, 0.0, dtype))


class LpNormalization(frontend.OnnxOpConverter):
    """x divided by its L1 or L2 norm along ``axis`` (0 where the norm is 0, as the standard's reference)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = dtype_of(bb, x)
        axis, p = attr.get("axis", -1), attr.get("p", 2)
        if p not in (1, 2):
            raise ValueError(f"LpNormalization p={p}: the standard defines 1 and 2")
        norm = relax.op.sum(relax.op.abs(x), axis, keepdims=True) if p == 1 else relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), axis, keepdims=True))
        zero = relax.const(0.0, dtype)
        return relax.op.where(relax.op.equal(norm, zero), relax.op.zeros_like(x), relax.op.divide(x, norm))


class ReverseSequence(frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        return relax.op.reverse_sequence(inputs[0], inputs[1], attr.get("time_axis", 0), attr.get("batch_axis", 1))


CONVERTERS: dict[str, type] = {
    "RNN": RNN,
    "GRU": GRU,
    "LSTM": LSTM,
    "ConvInteger": ConvInteger,
    "MatMulInteger": MatMulInteger,
    "QLinearConv": QLinearConv,
    "QLinearMatMul": QLinearMatMul,
    "CumProd": CumProd,
    "Elu": Elu,
    "Selu": Selu,
    "LpNormalization": LpNormalization,
    "ReverseSequence": ReverseSequence,
    "Scan": Scan,
    "Loop": Loop,
    **TENSOR_CONVERTERS,
}


def supported_ops() -> set[str]:
    """The operators TVM's frontend converts with ``CONVERTERS`` added."""
    return set(frontend._get_convert_map()) | set(CONVERTERS)


@contextlib.contextmanager
def converters_registered(guard: NodeGuard | None = None) -> Iterator[None]:
    """TVM's frontend with ``CONVERTERS`` added for the block, each converter guarded by ``guard``
    (edgesdk.compile.onnx_fallback) when given; the operators it then converts."""
    original = frontend._get_convert_map
    table = {**original(), **CONVERTERS}
    guarded = guard.table(table) if guard is not None else table
    frontend._get_convert_map = lambda: guarded
    try:
        yield
    finally:
        frontend._get_convert_map = original
