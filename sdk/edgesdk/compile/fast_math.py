"""Vectorisable float32 exp, sigmoid, tanh, erf and softmax.

Legalized as written, these are calls to the C library's expf/tanhf/erff, one per element even in a
vectorised loop: a YOLOv8n conv whose SiLU epilogue calls expf spends most of its time there. TVM's
fast variants (polynomial after range reduction; topi.fast_exp, fast_tanh, fast_erf, fast_softmax)
are plain arithmetic that LLVM vectorises, within a few float32 ulps of the library's (the
verification against onnxruntime checks every artifact, and onnxruntime's own CPU kernels use
such polynomials). TVM's FastMathTransform does the same but leaves sigmoid out. Other dtypes are
left as they are: the fast variants are float32 only.
"""

from __future__ import annotations

from edgesdk.compile.relax_match import rewriting_pass


def FastMath():  # noqa: N802 - a pass constructor, named like TVM's
    from tvm import relax, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    def sigmoid(x):
        return topi.divide(1.0, topi.add(1.0, topi.fast_exp(topi.negative(x))))

    fast = {
        "relax.exp": topi.fast_exp,
        "relax.sigmoid": sigmoid,
        "relax.tanh": topi.fast_tanh,
        "relax.erf": topi.fast_erf,
    }

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = super().visit_call_(call)
            name = getattr(call.op, "name", None)
            if not isinstance(call.ty, relax.TensorType) or str(call.ty.dtype) != "float32":
                return call
            if name in fast:
                return self.builder_.call_te(fast[name], call.args[0])
            if name == "relax.nn.softmax":
                return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis))
            return call

    return rewriting_pass("edgesdk.FastMath", Rewriter)
