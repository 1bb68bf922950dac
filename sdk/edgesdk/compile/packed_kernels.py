"""Compressed weights (int4/int8 blocked DequantizeLinear, vq codebook lookups) as packed kernel
operands.

An ONNX model with group-wise quantized weights stores each conv/matmul weight as an integer
tensor and a blocked ``DequantizeLinear`` (opset 21, ``block_size``); a vq model as indices, a
codebook and ``Gather``. TVM's ONNX frontend cannot read int4 tensors and would expand the
weights into float once at compile time anyway. So:

1. ``extract_blocked_weights`` (before the frontend) replaces each such subgraph over constants
   by a float initializer with the same values (what a layer left unmatched computes with, still
   correct) and remembers the integers, scales, zero points or codebook under its name;
2. ``unpack_in_kernels`` (on the imported Relax module) replaces every conv2d/matmul reading such
   a weight by a TE kernel whose operands are the *packed* integers (4-bit ones two per byte) and
   the per-group scales (or the codebook), unpacked inside the reduction loop; the float copy is
   dropped from the module's parameters, so the artifact's weights are the packed ones. When the
   layer's input is a dequantized int8 tensor (w4a8), the kernel takes the int8 tensor and sums
   products in int32 per group of weights.

TVM is imported by the caller (the worker).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from edgesdk.compile.relax_match import Bindings

PREFIX = "edgesdk_blocked_"


@dataclasses.dataclass
class BlockedWeight:
    """A weight as ``rows`` output channels x ``depth`` reduction elements, grouped along depth."""

    values: np.ndarray  # int32 (rows, depth): the stored integers
    scales: np.ndarray  # (rows, groups), float16 or float32
    zero_points: np.ndarray | None  # int32 (rows, groups), or None for symmetric
    group: int
    bits: int
    signed: bool
    axis: int  # 1: the float parameter is (rows, depth); 0: it is (depth, rows)
    codebook: bool = False  # vq: values are indices of `group`-weight vectors in `scales` (the codebook)

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def depth(self) -> int:
        return int(self.values.shape[1]) * (self.group if self.codebook else 1)

    def stored_scales(self) -> np.ndarray:
        """The scales as the artifact stores them: float32 ones that float16 holds exactly (w4a8's)
        as float16, half the bytes for the same values; the kernel still multiplies in float32."""
        if self.scales.dtype == np.float32 and not self.codebook:
            half = self.scales.astype(np.float16)
            if np.array_equal(half.astype(np.float32), self.scales):
                return half
        return self.scales

    def packed(self) -> np.ndarray:
        """int4: uint8 (rows, ceil(depth/2)), element 2j in the low nibble of byte j, stored with an
        offset of 8 when signed. int8/uint8: the integers as they are."""
        if self.bits == 8:
            return self.values.astype(np.int8 if self.signed else np.uint8)
        nibbles = (self.values + (8 if self.signed else 0)).astype(np.uint8)
        if nibbles.shape[1] % 2:
            nibbles = np.pad(nibbles, ((0, 0), (0, 1)))
        return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).astype(np.uint8)


_INTEGER_BITS = {onnx.TensorProto.INT4: (4, True), onnx.TensorProto.UINT4: (4, False), onnx.TensorProto.INT8: (8, True), onnx.TensorProto.UINT8: (8, False)}


def extract_blocked_weights(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, BlockedWeight]]:
    """``proto`` without its blocked dequantizes of 2-D integer constants (each replaced by a float
    initializer ``edgesdk_blocked_<i>``, folding a following Cast), and what they held."""
    initializers = {init.name: init for init in proto.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in proto.graph.node for out in node.output}
    table: dict[str, BlockedWeight] = {}
    drop_nodes: set[int] = set()  # id()s of the nodes to drop
    drop_inits: set[str] = set()
    new_inits: list[onnx.TensorProto] = []
    renames: dict[str, str] = {}
    for node in proto.graph.node:
        lookup = _codebook_lookup(node, initializers, producers, consumers)
        if lookup is not None:
            weight, output, nodes, names = lookup
            name = f"{PREFIX}{len(table)}"
            renames[output] = name
            floats = _dequantized(weight).astype(weight.scales.dtype)
            new_inits.append(numpy_helper.from_array(floats if weight.axis == 1 else floats.T, name))
            table[name] = weight
            drop_nodes.update(id(n) for n in nodes)
            drop_inits.update(names)
            continue
        block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
        if node.op_type != "DequantizeLinear" or block <= 0 or not all(name in initializers for name in node.input if name):
            continue
        stored = initializers[node.input[0]]
        if stored.data_type not in _INTEGER_BITS or len(stored.dims) != 2:
            continue
        bits, signed = _INTEGER_BITS[stored.data_type]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % 2
        values = numpy_helper.to_array(stored).astype(np.int32)
        scales = numpy_helper.to_array(initializers[node.input[1]])
        zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.int32) if len(node.input) > 2 and node.input[2] else None
        if axis == 0:  # (depth, rows) -> (rows, depth)
            values, scales, zero = values.T, scales.T, None if zero is None else zero.T
        weight = BlockedWeight(values, np.ascontiguousarray(scales), None if zero is None or not zero.any() else zero, int(block), bits, signed, axis)
        floats = _dequantized(weight).astype(scales.dtype)
        output = node.output[0]
        users = consumers.get(output, [])
        if len(users) == 1 and users[0].op_type == "Cast":
            cast = users[0]
            floats = floats.astype(onnx.helper.tensor_dtype_to_np_dtype(next(a.i for a in cast.attribute if a.name == "to")))
            drop_nodes.add(id(cast))
            output = cast.output[0]
        name = f"{PREFIX}{len(table)}"
        renames[output] = name
        new_inits.append(numpy_helper.from_array(floats if axis == 1 else floats.T, name))
        table[name] = weight
        drop_nodes.add(id(node))
        drop_inits.update(n for n in node.input if n)
    if not table:
        return proto, table
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    kept = [node for node in proto.graph.node if id(node) not in drop_nodes]
    del graph.node[:]
    for node in kept:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        for index, name in enumerate(node.input):
            node.input[index] = renames.get(name, name)
        graph.node.append(node)
    still_used = {name for node in graph.node for name in node.input}
    keep = [init for init in proto.graph.initializer if init.name not in drop_inits or init.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend([*keep, *new_inits])
    return copy, table


def _codebook_lookup(node, initializers, producers, consumers):
    """``Reshape(Gather(codebook, Cast(indices)), (rows, depth))``, then a Transpose for a MatMul's
    (depth, rows) weight, over constants (edgesdk's vq): (the weight, the value it makes, the nodes
    and initializers it replaces), else None."""
    if node.op_type != "Gather" or next((a.i for a in node.attribute if a.name == "axis"), 0) != 0 or node.input[0] not in initializers:
        return None
    cast, users = producers.get(node.input[1]), consumers.get(node.output[0], [])
    if cast is None or cast.op_type != "Cast" or cast.input[0] not in initializers or len(users) != 1 or users[0].op_type != "Reshape":
        return None
    reshape, stored, codebook = users[0], initializers[cast.input[0]], numpy_helper.to_array(initializers[node.input[0]])
    shape = numpy_helper.to_array(initializers[reshape.input[1]]) if reshape.input[1] in initializers else None
    if (
        stored.data_type not in (onnx.TensorProto.UINT4, onnx.TensorProto.UINT8)
        or len(stored.dims) != 2
        or codebook.ndim != 2
        or shape is None
        or len(shape) != 2
    ):
        return None
    indices = numpy_helper.to_array(stored).astype(np.int32)
    after = consumers.get(reshape.output[0], [])
    transpose = after[0] if len(after) == 1 and after[0].op_type == "Transpose" and list(after[0].attribute[0].ints) == [1, 0] else None
    weight = BlockedWeight(indices, codebook, None, int(codebook.shape[1]), _INTEGER_BITS[stored.data_type][0], False, 0 if transpose else 1, codebook=True)
    if [weight.rows, weight.depth] != [int(d) for d in shape]:
        return None
    replaced = [cast, node, reshape] + ([transpose] if transpose else [])
    return weight, (transpose or reshape).output[0], replaced, [cast.input[0], node.input[0], reshape.input[1]]


def _dequantized(weight: BlockedWeight) -> np.ndarray:
    """float32 (rows, depth): (values - zero point) * scale, per group; or the codebook's vectors."""
    if weight.codebook:
        return weight.scales.astype(np.float32)[weight.values].reshape(weight.rows, weight.depth)
    depth = weight.values.shape[1]

    def spread(per_group):
        return np.repeat(per_group, weight.group, axis=1)[:, :depth]

    values = weight.values - (spread(weight.zero_points) if weight.zero_points is not None else 0)
    return values.astype(np.float32) * spread(weight.scales.astype(np.float32))


def unpack_in_kernels(mod, known: dict, table: dict[str, BlockedWeight]):
    """``mod`` with its conv2d/matmul over ``table``'s weights reading packed integers, the
    parameter values (``known``: var -> array) of its new ``main``, and what each packed
    parameter holds (name -> int4, uint8, vq8...: the kernels' metadata)."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    if not table:
        return mod, known, {}
    main = mod["main"]
    by_name = {str(var.name): var for var in main.params if str(var.name) in table}
    known = dict(known)
    added: list = []
    packed_dtypes: dict[str, str] = {}
    bindings = Bindings(main, known)
    value, op_name, constant = bindings.value, bindings.op_name, bindings.constant

    def blocked(expr, through: str):
        """The table entry behind ``expr`` seen through one ``through`` op (or none), or None."""
        seen = None
        if op_name(expr) == through:
            seen, expr = value(expr), value(expr).args[0]
        if isinstance(expr, relax.Var) and str(expr.name) in by_name and by_name[str(expr.name)].same_as(expr):
            return table[str(expr.name)], seen
        return None, None

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            rewritten = self._rewrite(call)
            if rewritten is None and op_name(call) in ("relax.dequantize", "relax.reshape"):
                rewritten = self._fold(call)
            return rewritten if rewritten is not None else super().visit_call_(call)

        def _fold(self, call):
            """A dequantize of weights (a QDQ layer's int32 bias), and a reshape of it or of a
            constant, as the constant it is: computed once here, instead of a kernel run every time
            (TVM does not fold parameters) or one that FoldConstant compiles with LLVM per tensor
            (63 bias reshapes of YOLOv8n took 6 s of each build)."""
            folded = bindings.folded(call, params=False)
            return None if folded is None else relax.const(folded)

        def _operands(self, weight: BlockedWeight, stem: str):
            packed, scales = weight.packed(), weight.stored_scales()
            operands = [packed, scales] + ([weight.zero_points.astype(np.int32)] if weight.zero_points is not None else [])
            made = []
            packed_dtypes[f"{stem}_packed"] = weight_dtype(weight)
            for suffix, array in zip(("packed", "scales", "zero_points"), operands, strict=False):
                var = relax.Var(f"{stem}_{suffix}", relax.TensorType(list(array.shape), str(array.dtype)))
                known[var] = array
                added.append(var)
                made.append(var)
            return made

        def _integer_input(self, data):
            """``data`` = dequantize(xq) of int8/uint8 with a scalar scale and zero point: the
            kernel then takes xq and accumulates in int32 (w4a8); else None."""
            if op_name(data) != "relax.dequantize":
                return None
            xq, scale, zero = value(data).args
            scale, zero = constant(scale), constant(zero)
            if scale is None or zero is None or scale.size != 1 or str(xq.ty.dtype) not in ("int8", "uint8"):
                return None
            return self.visit_expr(xq), {"input_scale": float(scale.reshape(-1)[0]), "input_zero": int(zero.reshape(-1)[0])}

        def _emit(self, call, make, data, weight: BlockedWeight, name: str, **kwargs):
            integer = None if weight.codebook else self._integer_input(data)
            operands = self._operands(weight, f"w{len(added)}")
            if integer is not None:
                xq, quantization = integer
                kernel = self.builder_.call_te(
                    make, xq, *operands, **_layout(weight), **kwargs, **quantization, primfunc_name_hint=f"{name}_int8_{_packed_name(weight)}"
                )
                # Two reductions (int32 group sums, then their float sum) read as opaque to FuseOps;
                # like a convolution, the kernel takes its elementwise epilogue (bias, requantize).
                self.builder_.update_func(kernel.args[0], self.builder_.get()[kernel.args[0]].with_attr("op_pattern", 4))  # kOutEWiseFusable
            else:
                kernel = self.builder_.call_te(
                    make, self.visit_expr(data), *operands, **_layout(weight), **kwargs, primfunc_name_hint=f"{name}_{_packed_name(weight)}"
                )
            # The float32 result in the layer's dtype: an op fused into the kernel. Returned as calls,
            # not bound variables: an alias binding would keep FuseOps from fusing the epilogue.
            dtype = str(call.ty.dtype)
            return kernel if dtype == "float32" else relax.op.astype(self.builder_.emit(kernel), dtype)

        def _rewrite(self, call):
            kind = op_name(call)
            if kind == "relax.matmul":
                weight, transposed = blocked(call.args[1], "relax.permute_dims")
                # x @ W with W stored (depth, rows), or x @ W.T with W stored (rows, depth) (Gemm transB)
                if weight is None or weight.axis != (0 if transposed is None else 1):
                    return None
                if transposed is not None and [int(a) for a in transposed.attrs.axes] != [1, 0]:
                    return None
                if int(call.ty.shape[-1]) != weight.rows:
                    return None
                return self._emit(call, _matmul_te, call.args[0], weight, "matmul")
            if kind == "relax.nn.conv2d":
                attrs = call.attrs
                weight, reshape = blocked(call.args[1], "relax.reshape")
                if weight is None or weight.axis != 1 or str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
                    return None
                shape = [int(d) for d in call.args[1].ty.shape]
                if shape[0] != weight.rows or int(np.prod(shape[1:])) != weight.depth:
                    return None
                groups = int(attrs.groups)
                name = "depthwise_conv2d" if groups > 1 and shape[1] == 1 else "group_conv2d" if groups > 1 else "conv2d"
                return self._emit(
                    call, _conv2d_te, call.args[0], weight, name, kernel=shape, padding=[int(p) for p in attrs.padding],
                    strides=[int(s) for s in attrs.strides], dilation=[int(d) for d in attrs.dilation], groups=groups,
                )  # fmt: skip
            return None

    rewriter = Rewriter(mod)
    body = rewriter.visit_expr(main)
    built = rewriter.builder_.get()
    num_inputs = int(main.attrs["num_input"])
    function = relax.Function([*main.params, *added], body.body, body.ret_ty, body.is_pure, main.attrs)
    built["main"] = function
    built = relax.transform.DeadCodeElimination()(built)
    used = relax.analysis.free_vars(built["main"].body)
    params = [*main.params[:num_inputs], *(p for p in [*main.params[num_inputs:], *added] if any(p.same_as(u) for u in used))]
    built["main"] = relax.Function(params, built["main"].body, built["main"].ret_ty, built["main"].is_pure, main.attrs)
    return built, {var: array for var, array in known.items() if any(var.same_as(p) for p in params)}, packed_dtypes


def weight_dtype(weight: BlockedWeight) -> str:
    """What a packed weight's integers are: int4, uint4, int8, uint8, or vq4/vq8 (codebook indices)."""
    return f"vq{weight.bits}" if weight.codebook else f"{'' if weight.signed else 'u'}int{weight.bits}"


def _packed_name(weight: BlockedWeight) -> str:
    return f"packed_{weight_dtype(weight)}"


def _layout(weight: BlockedWeight) -> dict:
    """What a kernel needs to know of ``weight`` to unpack it."""
    return {
        "rows": weight.rows, "depth": weight.depth, "group": weight.group, "bits": weight.bits, "signed": weight.signed, "codebook": weight.codebook,
        "product": str(weight.scales.dtype),
    }  # fmt: skip


def _weight_value(
    packed, scales, zero_points, row, k, *, group: int, bits: int, signed: bool, product: str, codebook: bool = False, integer: bool = False, **_
):
    """The weight at (row, k), unpacked from the kernel's operands (a TE expression): the int32
    integer when ``integer``, else the float32 value, rounded through ``product`` (the type
    DequantizeLinear makes) like the model does; for a codebook, entry k % group of the vector
    whose index is stored at (row, k // group)."""
    from tvm import tirx

    slot = k // group if codebook else k
    if bits == 4:
        shift = tirx.Cast("uint8", slot % 2) * tirx.const(4, "uint8")
        nibble = (packed[row, slot // 2] >> shift) & tirx.const(15, "uint8")
        value = nibble.astype("int32") - (8 if signed else 0)
    else:
        value = packed[row, slot].astype("int32")
    if codebook:
        return scales[value, k % group].astype("float32")
    if zero_points is not None:
        value = value - zero_points[row, k // group]
    if integer:
        return value
    value = value.astype("float32") * scales[row, k // group].astype("float32")
    return value.astype(product).astype("float32") if product != "float32" else value


def _reduce(shape, activation, packed, scales, zero_points, *, depth: int, group: int, input_scale=None, input_zero=None, name: str, **layout):
    """out[..., row] = sum over k < depth of activation(index, k) x weight(row, k), where ``row`` is
    ``index[1]`` (conv, NCHW) or ``index[-1]`` (matmul).

    Float activations: one float32 reduction, weights unpacked to float. Integer activations
    (``input_scale``/``input_zero`` given): per group of weights an int32 sum of (x - zero) x q,
    then the groups' sums scaled by ``input_scale x scale[row, g]`` and added in float32.
    """
    from tvm import te, tirx

    row_of = (lambda index: index[1]) if name == "conv2d" else (lambda index: index[-1])
    if input_scale is None:
        k = te.reduce_axis((0, depth), name="k")

        def compute(*index):
            weight = _weight_value(packed, scales, zero_points, row_of(index), k, group=group, **layout)
            return te.sum(activation(index, k).astype("float32") * weight, axis=k)

        return te.compute(shape, compute, name=f"{name}_packed")
    groups = -(-depth // group)
    inner = te.reduce_axis((0, group), name="inner")

    def partial(*index_and_group):
        *index, g = index_and_group
        k = g * group + inner
        product = (activation(index, k).astype("int32") - input_zero) * _weight_value(
            packed, scales, zero_points, row_of(index), k, group=group, integer=True, **layout
        )
        return te.sum(tirx.if_then_else(k < depth, product, 0), axis=inner)

    sums = te.compute([*shape, groups], partial, name=f"{name}_int_groups")
    g = te.reduce_axis((0, groups), name="g")
    return te.compute(
        shape,
        lambda *index: te.sum(sums[(*index, g)].astype("float32") * (scales[row_of(index), g].astype("float32") * input_scale), axis=g),
        name=f"{name}_rescale",
    )


def _matmul_te(data, packed, scales, *rest, rows: int, depth: int, **layout):
    zero_points = rest[0] if rest else None
    shape = [*data.shape[:-1], rows]
    return _reduce(shape, lambda index, k: data[(*index[:-1], k)], packed, scales, zero_points, depth=depth, name="matmul", **layout)


def _conv2d_te(data, packed, scales, *rest, kernel, padding, strides, dilation, groups: int, rows: int, depth: int, **layout):
    """NCHW convolution, padding read in place (as the input's zero point when it is integer);
    weight element (o, r) with r = (c*kh + y)*kw + x."""
    from tvm import tirx

    zero_points = rest[0] if rest else None
    batch, _, height, width = (int(d) for d in data.shape)
    out_channels, per_group, kh, kw = kernel
    top, left, bottom, right = padding
    out_h = (height + top + bottom - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (width + left + right - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    outs_per_group = out_channels // groups
    pad_value = layout.get("input_zero") or 0

    def activation(index, r):
        n, o, i, j = index
        c, y, x = r // (kh * kw), (r // kw) % kh, r % kw
        row, col = i * strides[0] + y * dilation[0] - top, j * strides[1] + x * dilation[1] - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        pixel = data[n, (o // outs_per_group) * per_group + c, row, col]
        return tirx.if_then_else(inside, pixel, tirx.const(pad_value, data.dtype))

    return _reduce((batch, out_channels, out_h, out_w), activation, packed, scales, zero_points, depth=depth, name="conv2d", **layout)
