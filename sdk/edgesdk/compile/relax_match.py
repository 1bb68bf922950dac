"""Reading a Relax function's dataflow for the quantization passes' pattern matching.

TVM is imported by the caller (the worker).
"""

from __future__ import annotations

import numpy as np


class Bindings:
    """What the variables of a function in dataflow normal form are bound to, and the values of
    its constants and of the parameters in ``known`` (weights kept as inputs: var -> array)."""

    def __init__(self, function, known: dict):
        from tvm import relax

        self._definitions = relax.analysis.get_var2val(function)
        self.known = known

    def value(self, expr):
        """What a variable is bound to, else the expression itself."""
        from tvm import relax

        return self._definitions.get(expr, expr) if isinstance(expr, relax.Var) else expr

    def op_name(self, expr) -> str:
        """The operator ``expr`` calls (``relax.nn.conv2d``, ...), or ""."""
        import tvm
        from tvm import relax

        expr = self.value(expr)
        return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else ""

    def constant(self, expr) -> np.ndarray | None:
        """The value of a constant or a known parameter, else None."""
        import tvm

        expr = self.value(expr)
        if isinstance(expr, tvm.ir.expr.Constant):
            return expr.value.numpy()
        return self.known.get(expr)

    def dequantized(self, call) -> np.ndarray | None:
        """The value of ``dequantize(q, scale, zero)`` over known tensors (per tensor or along its
        axis), in the call's dtype, else None."""
        q, scale, zero = (self.constant(arg) for arg in call.args)
        if q is None or scale is None or zero is None:
            return None
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[int(call.attrs.axis) % q.ndim] = -1
        floats = (q.astype(np.float64) - zero.astype(np.float64).reshape(shape if zero.size > 1 else [1] * q.ndim)) * scale.astype(np.float64).reshape(shape)
        return floats.astype(str(call.ty.dtype))

    def folded(self, expr, *, params: bool = True) -> np.ndarray | None:
        """The value of a reshape/dequantize chain over constants and known tensors, else None;
        with ``params=False`` a known parameter on its own is not a value (it stays a weight:
        only what a dequantize makes of it is)."""
        call = self.value(expr)
        name = self.op_name(expr)
        if name == "relax.reshape":
            inner = self.folded(call.args[0], params=params)
            return None if inner is None else inner.reshape([int(d) for d in call.ty.shape])
        if name == "relax.dequantize":
            return self.dequantized(call)
        import tvm

        return call.value.numpy() if isinstance(call, tvm.ir.expr.Constant) else self.known.get(call) if params else None


def rewriting_pass(name: str, rewriter_class):
    """A module pass that runs ``rewriter_class`` (a ``@mutator`` PyExprMutator) over every Relax
    function of the module."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        rewriter = rewriter_class(mod)
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return _pass
