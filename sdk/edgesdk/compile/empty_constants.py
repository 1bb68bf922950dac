"""Constants with no elements, allocated at run time instead of stored.

TVM 0.27's VM stores a Relax function's constants in the library and reads each back with a
read that fails on zero bytes ("Invalid DLTensor file format"), so a model with an empty constant
(a Reshape to a shape with a 0, a state of length 0) compiles and then cannot be loaded. An empty
tensor has no values to keep: this pass, run on lowered code before memory planning, allocates it.
"""

from __future__ import annotations

from edgesdk.compile.relax_match import rewriting_pass


def EmptyConstantsAllocated():  # noqa: N802 - a pass constructor, named like TVM's
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Rewriter(PyExprMutator):
        def visit_generic_const_(self, const):  # noqa: N802 - TVM's visitor naming
            shape = [int(dim) for dim in getattr(const.value, "shape", ())]
            if isinstance(const.ty, relax.TensorType) and 0 in shape:
                return relax.op.builtin.alloc_tensor(relax.ShapeExpr(shape), str(const.ty.dtype), 0)
            return const

    return rewriting_pass("edgesdk.EmptyConstantsAllocated", Rewriter)
