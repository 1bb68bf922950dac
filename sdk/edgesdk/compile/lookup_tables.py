"""Elementwise functions of one 8-bit tensor become 256-entry lookup tables, in Relax.

After `integer_ops`, a quantized (QDQ) model still runs every activation between two integer
layers in float32: ``quantize(f(dequantize(q)))``, e.g. SiLU in YOLO is dequantize, sigmoid,
multiply, quantize. In a fused int8 conv that epilogue costs as much as the conv itself (a
polynomial exp and two roundings per output value). Its input takes only 256 values, so the whole
chain is a table: ``take(table, q)``, with the table computed here in float32 exactly as the chain
would (round half to even, as ONNX QuantizeLinear), as int8 runtimes do for their activations.

The chain may be any graph of the elementwise operators below over one source, with scalar
constants. The source is ``dequantize(q)`` of an 8-bit ``q`` with a scalar scale, optionally behind
data movement (reshape, transpose, slicing) or a max pool (dequantize is increasing, so the max
commutes with it): those then run on ``q`` itself, in 8 bits. A requantize (``quantize(dequantize
(q))`` to other scale and zero point) is a table too, and one to the same ones disappears. TVM is
imported by the caller (the worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgesdk.compile.relax_match import Bindings

_erf = np.vectorize(math.erf, otypes=[np.float64])
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relax.sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relax.tanh": np.tanh,
    "relax.exp": np.exp,
    "relax.erf": _erf,
    "relax.nn.relu": lambda x: np.maximum(x, 0),
    "relax.nn.silu": lambda x: x / (1 + np.exp(-x)),
    "relax.nn.gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "relax.negative": np.negative,
    "relax.abs": np.abs,
    "relax.isnan": np.isnan,  # with where: how the ONNX frontend writes Clip, HardSigmoid, HardSwish
}
_BINARY: dict[str, Callable[..., np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}
# Operators that move values without changing them: they commute with the elementwise dequantize.
_MOVEMENT = ("relax.reshape", "relax.permute_dims", "relax.strided_slice", "relax.squeeze", "relax.expand_dims", "relax.flatten")
LOOKUP_KERNEL = "lookup_table"
_ELEMENTWISE = 0  # TVM's OpPatternKind kElemWise: a conv fuses only these after it
_MARK = "edgesdk.lookup_table"


def tabulate(mod, known: dict | None = None):
    """``mod`` with its 8-bit elementwise chains made table lookups. ``known`` maps parameters of
    ``main`` (weights, scales and zero points kept as inputs) to their numpy values."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    main = mod["main"]
    bindings = Bindings(main, known or {})
    value, op_name, constant = bindings.value, bindings.op_name, bindings.constant

    def scalar(expr) -> float | None:
        array = constant(expr)
        return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None

    def source(expr):
        """(q, movement calls from q outward, scale, zero point) if ``expr`` is a movement chain
        over ``dequantize(q)`` of an 8-bit q with a positive scalar scale, else None."""
        chain = []
        while op_name(expr) in (*_MOVEMENT, "relax.nn.max_pool2d"):
            chain.append(value(expr))
            expr = value(expr).args[0]
        if op_name(expr) != "relax.dequantize":
            return None
        q, scale, zero = value(expr).args
        s, z = scalar(scale), scalar(zero)
        if s is None or z is None or not s > 0 or str(q.ty.dtype) not in ("int8", "uint8") or str(value(expr).ty.dtype) != "float32":
            return None
        return q, chain[::-1], s, z

    def same_source(a, b) -> bool:
        from tvm_ffi import structural_equal

        def same_call(x, y) -> bool:  # the same operator on the same terms (a slice's bounds are arguments)
            return (
                x.op.same_as(y.op)
                and structural_equal(x.attrs, y.attrs)
                and len(x.args) == len(y.args)
                and all(structural_equal(p, r) for p, r in zip(x.args[1:], y.args[1:], strict=True))
            )

        return a[0].same_as(b[0]) and a[2:] == b[2:] and len(a[1]) == len(b[1]) and all(same_call(x, y) for x, y in zip(a[1], b[1], strict=True))

    def chain_values(expr, shape, found: list):
        """The float32 values of ``expr`` at the 256 levels of its one source (appended to
        ``found``), or None if it is not such a chain."""
        name = op_name(expr)
        if not name or str(value(expr).ty.dtype) not in ("float32", "bool") or [int(d) for d in value(expr).ty.shape] != shape:
            return None
        leaf = source(expr)
        if leaf is not None:
            if found and not same_source(found[0], leaf):
                return None
            found[:1] = [leaf]
            _, _, s, z = leaf
            return ((_levels(leaf[0]) - np.float32(z)) * np.float32(s)).astype(np.float32)
        call = value(expr)
        if name in _UNARY:
            inner = chain_values(call.args[0], shape, found)
            if inner is None:
                return None
            result = np.asarray(_UNARY[name](inner))
            return result if result.dtype == np.bool_ else result.astype(np.float32)
        if name == "relax.where":
            parts = [chain_values(arg, shape, found) if scalar(arg) is None else np.float32(scalar(arg)) for arg in call.args]
            return None if any(part is None for part in parts) else np.where(*parts).astype(np.float32)
        if name == "relax.nn.leakyrelu":
            inner = chain_values(call.args[0], shape, found)
            return None if inner is None else np.where(inner >= 0, inner, inner * np.float32(call.attrs.alpha)).astype(np.float32)
        if name == "relax.clip":
            inner = chain_values(call.args[0], shape, found)
            low, high = (float(getattr(arg.value, "value", arg.value)) for arg in call.args[1:])  # PrimValues
            return None if inner is None else np.clip(inner, low, high).astype(np.float32)
        if name in _BINARY:
            operands = []
            for arg in call.args:
                known = scalar(arg)
                operands.append(np.float32(known) if known is not None else chain_values(arg, shape, found))
                if operands[-1] is None:
                    return None
            with np.errstate(all="ignore"):
                return np.asarray(_BINARY[name](*operands), dtype=np.float32)
        return None

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            rewritten = self._rewrite(call)
            return rewritten if rewritten is not None else super().visit_call_(call)

        def _rewrite(self, quantize):
            if op_name(quantize) != "relax.quantize":
                return None
            scale, zero = scalar(quantize.args[1]), scalar(quantize.args[2])
            out_dtype = str(quantize.attrs.out_dtype)
            if scale is None or zero is None or out_dtype not in ("int8", "uint8"):
                return None
            shape = [int(d) for d in quantize.ty.shape]
            found: list = []
            with np.errstate(all="ignore"):
                floats = chain_values(quantize.args[0], shape, found)
            if floats is None or not found:
                return None
            info = np.iinfo(out_dtype)
            table = np.clip(np.rint(floats / np.float32(scale)) + zero, info.min, info.max).astype(out_dtype)
            q, chain, _, _ = found[0]
            moved = self.visit_expr(q)
            for call in chain:
                moved = self.builder_.emit(relax.Call(call.op, [moved, *call.args[1:]], call.attrs))
            if str(q.ty.dtype) == out_dtype and np.array_equal(table, _levels(q).astype(out_dtype)):
                return moved  # a requantize to the same scale and zero point: nothing to do
            call = self.builder_.call_te(_lookup, relax.const(table), moved, primfunc_name_hint=LOOKUP_KERNEL)
            lookups.add(call.args[0])  # the PrimFunc's GlobalVar, marked below
            return call

    lookups: set = set()
    rewriter = Rewriter(mod)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(main))
    mod = rewriter.builder_.get()
    for gvar in lookups:
        mod[gvar] = mod[gvar].with_attr(_MARK, True)
    return relax.transform.DeadCodeElimination()(mod)


def MarkLookups():  # noqa: N802 - a pass constructor, named like TVM's
    """Run after AnnotateTIROpPattern, before FuseOps: a lookup reads its table at a data-dependent
    index, so TVM calls it opaque and runs it as a kernel of its own, one more pass over memory.
    It is elementwise in its input (the table is a constant): so marked, a conv fuses it into its
    epilogue."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="edgesdk.MarkLookups")
    def _pass(mod, _ctx):
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and _MARK in func.attrs:
                mod[gvar] = func.with_attr("op_pattern", _ELEMENTWISE)
        return mod

    return _pass


def _lookup(table, q):
    from tvm import te

    offset = -int(np.iinfo(str(q.dtype)).min)
    return te.compute(q.shape, lambda *index: table[q(*index).astype("int32") + offset], name=LOOKUP_KERNEL)


def _levels(q) -> np.ndarray:
    """The 256 values of q's 8-bit dtype in table order (index = value - its minimum)."""
    info = np.iinfo(str(q.ty.dtype))
    return np.arange(info.min, info.max + 1, dtype=np.int64)
