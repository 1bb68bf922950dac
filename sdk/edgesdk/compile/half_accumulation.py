"""float16 convolutions, matmuls, reductions and averages that sum in float32, in Relax.

A float16 model (``--quantize fp16``, and the float16 activations of w8a16/w4a16/vq) stores
weights and activations in float16, but a long dot product summed in float16 drifts: PP-OCRv4
rec's softmax came out 0.07 away from float32 (onnxruntime, whose CPU kernels sum float16 in
float32, stays within 0.005). Every float16 ``conv*``/``matmul`` left after the packed-weight
kernels (which already sum in float32) is rewritten to ``astype(op(..., out_dtype=float32),
float16)``: the way GPU and NPU float16 units accumulate; the cast fuses into the kernel. Being
explicit about the output dtype also sidesteps TVM legalizing a float16 ``conv2d_transpose`` to a
float32 result (PP-OCRv4 det failed with "Binary operators must have the same datatype").
TVM is imported by the caller (the worker).
"""

from __future__ import annotations

# op name -> the attributes its constructor takes back (besides out_dtype)
WIDENED = {
    "relax.nn.conv1d": ("strides", "padding", "dilation", "groups", "data_layout", "kernel_layout", "out_layout"),
    "relax.nn.conv2d": ("strides", "padding", "dilation", "groups", "data_layout", "kernel_layout", "out_layout"),
    "relax.nn.conv3d": ("strides", "padding", "dilation", "groups", "data_layout", "kernel_layout", "out_layout"),
    "relax.nn.conv1d_transpose": ("strides", "padding", "output_padding", "dilation", "groups", "data_layout", "kernel_layout", "out_layout"),
    "relax.nn.conv2d_transpose": ("strides", "padding", "output_padding", "dilation", "groups", "data_layout", "kernel_layout", "out_layout"),
    "relax.matmul": (),
}


# Reductions and averaging pools: same attributes, input widened. A float16 sum overflows
# (65,504) long before a float32 one: PP-OCRv4 det's GlobalAveragePool over 6,400 values up to 160
# came out inf, and its probability map 1.0 where float32 says 0.
WIDENED_INPUT = {
    "relax.mean",
    "relax.sum",
    "relax.variance",
    "relax.std",
    "relax.nn.avg_pool1d",
    "relax.nn.avg_pool2d",
    "relax.nn.avg_pool3d",
    "relax.nn.adaptive_avg_pool1d",
    "relax.nn.adaptive_avg_pool2d",
    "relax.nn.adaptive_avg_pool3d",
    # A softmax sums exponentials too, and onnxruntime's CPU kernel computes a float16 one in
    # float32: in float16, attention rows came out a float16 ulp (0.001) off in 1-11% of elements.
    "relax.nn.softmax",
    "relax.nn.log_softmax",
}


def accumulate_in_float32(mod):
    """``mod`` with every float16 conv/matmul, reduction and average summing in float32 and
    rounding its result once."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    def _half(expr) -> bool:
        return str(getattr(expr.ty, "dtype", "")) == "float16"

    constructors = {name: getattr(relax.op.nn, name.rsplit(".", 1)[1]) if ".nn." in name else relax.op.matmul for name in WIDENED}

    @mutator
    class Widen(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = super().visit_call_(call)
            name = call.op.name if isinstance(call.op, tvm.ir.Op) else None
            if name in WIDENED_INPUT and _half(call.args[0]) and _half(call):
                wide = self.builder_.emit(relax.op.astype(call.args[0], "float32"))
                summed = self.builder_.emit(relax.Call(call.op, [wide, *call.args[1:]], call.attrs))
                return relax.op.astype(summed, "float16")
            if name not in WIDENED or not all(_half(arg) for arg in call.args[:2]):
                return call
            attributes = {key: getattr(call.attrs, key) for key in WIDENED[name]}
            summed = self.builder_.emit(constructors[name](call.args[0], call.args[1], **attributes, out_dtype="float32"))
            return relax.op.astype(summed, "float16")

    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = Widen().visit_expr(func)
    return mod
