"""What the compiled model does, kernel by kernel: the input of partitioning and the cost model.

After TVM's fusion (FuseOps + FuseTIR) a model is a sequence of kernels (TIR functions) called by
the Relax ``main`` in order. For each call this records the op classes inside the kernel (from the
names fusion gives kernels, e.g. ``fused_conv2d_add_relu``, and the TIR block names), its FLOPs
(``tvm.s_tir.analysis.estimate_tir_flops``), and its tensors with their shapes, dtypes and where
they come from (a model input, a weight, or an earlier kernel). The analysis runs in the TVM
worker; the result is plain data (JSON), so partitioning and simulation need no TVM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesdk.compile.reorder import ORDER_ATTR, OrderRecord

# Relax op names (as fusion joins them into kernel names) -> the profile's op classes. Longest
# names first, so that `layer_norm` is not read as something ending in `norm`.
_OP_CLASSES = {
    "conv2d_transpose": "conv",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "matmul": "matmul",
    "dense": "matmul",
    "linear": "matmul",
    "max_pool2d": "pool",
    "avg_pool2d": "pool",
    "adaptive_avg_pool2d": "pool",
    "layer_norm": "normalization",
    "batch_norm": "normalization",
    "group_norm": "normalization",
    "instance_norm": "normalization",
    "rms_norm": "normalization",
    "log_softmax": "softmax",
    "softmax": "softmax",
    "relu": "activation",
    "gelu": "activation",
    "sigmoid": "activation",
    "tanh": "activation",
    "erf": "activation",
    "clip": "activation",
    "hardswish": "activation",
    "hard_sigmoid": "activation",
    "silu": "activation",
    "leakyrelu": "activation",
    "mean": "reduce",
    "sum": "reduce",
    "max": "reduce",
    "min": "reduce",
    "prod": "reduce",
    "variance": "reduce",
    "argmax": "reduce",
    "argmin": "reduce",
    "topk": "sort",
    "sort": "sort",
    "argsort": "sort",
    "take": "gather",
    "gather_elements": "gather",
    "gather_nd": "gather",
    "scatter_elements": "gather",
    "resize2d": "resize",
    "image_resize2d": "resize",
    "reshape": "data_movement",
    "transpose": "data_movement",
    "permute_dims": "data_movement",
    "concatenate": "data_movement",
    "concat": "data_movement",
    "split": "data_movement",
    "strided_slice": "data_movement",
    "dynamic_strided_slice": "data_movement",
    "squeeze": "data_movement",
    "expand_dims": "data_movement",
    "broadcast_to": "data_movement",
    "flatten": "data_movement",
    "tile": "data_movement",
    "repeat": "data_movement",
    "pad": "data_movement",
    "astype": "elementwise",
    "add": "elementwise",
    "subtract": "elementwise",
    "multiply": "elementwise",
    "divide": "elementwise",
    "power": "elementwise",
    "sqrt": "elementwise",
    "rsqrt": "elementwise",
    "exp": "elementwise",
    "log": "elementwise",
    "negative": "elementwise",
    "abs": "elementwise",
    "maximum": "elementwise",
    "minimum": "elementwise",
    "where": "elementwise",
    "equal": "elementwise",
    "less": "elementwise",
    "greater": "elementwise",
    "floor": "elementwise",
    "round": "elementwise",
    "cast": "elementwise",
    "quantize": "elementwise",
    "dequantize": "elementwise",
}
_OP_PATTERN = re.compile("|".join(sorted(map(re.escape, _OP_CLASSES), key=len, reverse=True)))
# The order in which a kernel's classes name it: the heaviest op first.
_WEIGHT = [
    "conv",
    "depthwise_conv",
    "matmul",
    "softmax",
    "normalization",
    "pool",
    "reduce",
    "sort",
    "gather",
    "resize",
    "activation",
    "elementwise",
    "data_movement",
    "other",
]


class Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: list[int]
    dtype: str
    source: Literal["input", "weight", "constant", "kernel"] = "kernel"
    producer: int | None = Field(None, description="Index of the kernel that computes it, when source is `kernel`.")
    param: int | None = Field(
        None, description="A model input or weight: its position among the parameters of `main` (one tensor, however many kernels read it)."
    )
    packed_dtype: str | None = Field(None, description="A weight stored packed (edgesdk.compile.packed_kernels): what its integers are, e.g. int4, uint8, vq8.")

    @property
    def bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class LoopNest(BaseModel):
    """The loop nest of a kernel's main block (the one with the most iterations): what the speed of
    compiled loop code depends on, beyond the FLOP count (edgesdk.simulate.efficiency_model uses it)."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(description="Iterations of the block's loop nest.")
    reduction: int = Field(description="Product of its reduction loop extents (1 if none).")
    inner_extent: int = Field(description="Extent of its innermost spatial loop.")
    inner_stride_bytes: int = Field(description="Largest stride (bytes) of a read along the innermost spatial loop.")
    reduction_extents: list[int] = Field(description="Extent of each reduction loop (extent > 1, outer to inner).")
    reduction_strides_bytes: list[int] = Field(description="Per reduction loop (extent > 1, outer to inner), the largest read stride in bytes.")
    transcendentals: int = Field(0, description="Calls of exp, erf, tanh, sigmoid, log, pow or sqrt in the kernel's code.")
    operand_dtype: str = Field("", description="Dtype of the block's first operand: int8 for an integer convolution whose kernel outputs float.")


class AxisAccess(BaseModel):
    """How an operand of a kernel's main block is indexed along one of its output axes."""

    model_config = ConfigDict(extra="forbid")

    axis: int = Field(description="Index into the kernel's TileSpace.extents.")
    stride: int = Field(description="Operand elements one step of the axis moves (2 for a stride-2 convolution).")
    window: int = Field(description="Operand elements one output element reads along it (3 for a 3x3 kernel, 1 elementwise).")
    extent: int = Field(description="The operand's own extent along that dimension.")


class Operand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: int
    access: list[AxisAccess] = Field(description="The output axes it depends on; a tile along any other axis reads all of it.")


class TileSpace(BaseModel):
    """The output axes a kernel can be tiled along and how each operand of its main block follows
    them: what a tile of the kernel reads (edgesdk.simulate.tiling)."""

    model_config = ConfigDict(extra="forbid")

    axes: list[str] = Field(description="Names of the main block's output axes (extent > 1), outermost first.")
    extents: list[int]
    operands: list[Operand]


class Kernel(BaseModel):
    """One call of a fused kernel in the model's ``main``, in execution order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    op_classes: list[str]
    flops: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    nest: LoopNest | None = None
    tile_space: TileSpace | None = Field(None, description="How it can be tiled; null: it cannot (its indexing is not affine).")

    @property
    def ops(self) -> int:
        """What the cost model counts as work: FLOPs, or one op per output element for a kernel
        that only moves data (a transpose has no FLOPs but still takes time)."""
        if self.flops:
            return self.flops
        return sum(int(np.prod(t.shape, dtype=np.int64)) for t in self.outputs)

    @property
    def packed_weight_dtype(self) -> str | None:
        """What the packed weights this kernel unpacks are (int4, uint8, vq8...), or None."""
        return next((tensor.packed_dtype for tensor in self.inputs if tensor.packed_dtype), None)

    @property
    def op_class(self) -> str:
        """The class that dominates the kernel (its heaviest op)."""
        return self.op_classes[0]

    @property
    def bytes_read(self) -> int:
        return sum(tensor.bytes for tensor in self.inputs)

    @property
    def bytes_written(self) -> int:
        return sum(tensor.bytes for tensor in self.outputs)

    @property
    def dtypes(self) -> set[str]:
        return {tensor.dtype for tensor in (*self.inputs, *self.outputs)}

    @property
    def max_rank(self) -> int:
        """The largest rank of its tensors, not counting dimensions of extent one: a runtime
        squeezes those (a channel shuffle through [1, 2, 24, 28, 28] runs on a rank-4 NPU: AI Hub
        runs ShuffleNet-v2 entirely on the Hexagon NPU)."""
        return max((sum(extent != 1 for extent in tensor.shape) for tensor in (*self.inputs, *self.outputs)), default=0)


class ModelAnalysis(BaseModel):
    """The kernels of a compiled model, in the order they run."""

    model_config = ConfigDict(extra="forbid")

    kernels: list[Kernel]
    order: OrderRecord | None = Field(None, description="How the kernels were ordered by memory (edgesdk.compile.reorder); null: not ordered.")

    @cached_property
    def flops(self) -> int:
        return sum(kernel.flops for kernel in self.kernels)


def classify(kernel_name: str, block_names: list[str], weight_shape: list[int] | None) -> list[str]:
    """Op classes of a kernel, heaviest first, from its fused name and its TIR block names."""
    name = re.sub(r"\d+(?=_|$)", "", kernel_name.removeprefix("fused_"))
    classes = {_OP_CLASSES[match] for match in _OP_PATTERN.findall(name)}
    # A grouped convolution with one input channel per group is depthwise.
    grouped = "conv" in classes and any("group_conv" in block or "depthwise" in block for block in block_names)
    if grouped and weight_shape is not None and len(weight_shape) >= 2 and weight_shape[1] == 1:
        classes = (classes - {"conv"}) | {"depthwise_conv"}
    return sorted(classes or {"other"}, key=_WEIGHT.index)


def main_block(func, script: str) -> tuple[LoopNest | None, TileSpace | None]:
    """The loop nest and the tile space of a TIR function's main block (the one with the most
    iterations; ``script``: its TVMScript text); None for a function with no blocks or one TVM's
    schedule API cannot read (TVM is imported by the caller, in the worker)."""
    import tvm

    try:
        schedule = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
        found = _main_block(schedule)
        if found is None:
            return None, None
        nest, tiles = _loop_nest(*found), _tile_space(*found)
    except (ValueError, RuntimeError, IndexError):  # how TVM's FFI reports a schedule error
        return None, None
    nest.transcendentals = len(_TRANSCENDENTAL.findall(script))
    return nest, tiles


_TRANSCENDENTAL = re.compile(r"\bT\.(?:exp|exp2|erf|tanh|sigmoid|log|log2|pow|sqrt|rsqrt)\(")


def _main_block(schedule):
    """(iterations, block, [(var, extent, kind)]) of the block with the most iterations (then the
    longest reduction), or None."""
    best = None
    for block_rv in schedule.get_child_blocks(schedule.get_sblock("root", "main")):
        block = schedule.get(block_rv)
        iterations = int(np.prod([int(schedule.get(loop).extent) for loop in schedule.get_loops(block_rv)], dtype=np.int64))
        axes = [(axis.var, int(axis.dom.extent), int(axis.iter_type)) for axis in block.iter_vars]
        reduction = int(np.prod([extent for _, extent, kind in axes if kind == REDUCE], dtype=np.int64))
        if best is None or (iterations, reduction) > best[0]:
            best = ((iterations, reduction), block, axes)
    return None if best is None else (best[0][0], best[1], best[2])


def _loop_nest(iterations: int, block, axes) -> LoopNest:
    import tvm
    from tvm.sym import detect_linear_equation

    def stride_bytes(var) -> int:
        """The largest distance in memory between two reads one step of ``var`` apart."""
        largest = 0
        for read in block.reads:
            shape = [int(dim) for dim in read.source.shape]
            strides = np.cumprod([1, *shape[:0:-1]])[::-1]
            step = 0
            for extent, stride in zip(read.region, strides, strict=False):
                coefficients = detect_linear_equation(extent.min, [var])
                step += int(coefficients[0]) * int(stride) if len(coefficients) else 0
            largest = max(largest, abs(step) * tvm.runtime.DataType(read.source.dtype).bits // 8)
        return largest

    spatial = [var for var, extent, kind in axes if kind == SPATIAL and extent > 1]
    reduced = [(var, extent) for var, extent, kind in axes if kind == REDUCE and extent > 1]
    return LoopNest(
        iterations=iterations,
        reduction=int(np.prod([extent for _, extent, kind in axes if kind == REDUCE], dtype=np.int64)),
        inner_extent=next((extent for var, extent, kind in reversed(axes) if kind == SPATIAL and extent > 1), 1),
        inner_stride_bytes=stride_bytes(spatial[-1]) if spatial else 0,
        reduction_extents=[extent for _, extent in reduced],
        reduction_strides_bytes=[stride_bytes(var) for var, _ in reduced],
        operand_dtype=str(block.reads[0].source.dtype) if block.reads else "",
    )


def _tile_space(iterations: int, block, axes) -> TileSpace | None:
    """Per operand of the block, the output axes its index follows, with stride and window (a
    window spans the reduction axes in the same index: kernel taps). None where an index is not
    affine in the block's axes (a reshape's modulo): such a kernel is not tiled."""
    import tvm
    from tvm.sym import detect_linear_equation

    spatial = [(var, extent) for var, extent, kind in axes if kind == SPATIAL and extent > 1]
    reduced = [(var, extent) for var, extent, kind in axes if kind == REDUCE and extent > 1]
    every = [var for var, _, _ in axes]
    operands = []
    for read in block.reads:
        access = []
        for dim, region in zip(read.source.shape, read.region, strict=False):
            coefficients = detect_linear_equation(region.min, every)
            if not len(coefficients) or not isinstance(region.extent, tvm.tirx.IntImm):
                return None
            by_var = dict(zip(every, (int(c) for c in coefficients[:-1]), strict=True))
            window = int(region.extent) + sum(abs(by_var[var]) * (extent - 1) for var, extent in reduced)
            for axis, (var, _) in enumerate(spatial):
                if by_var[var]:
                    access.append(AxisAccess(axis=axis, stride=abs(by_var[var]), window=window, extent=int(dim)))
        elements = int(np.prod([int(dim) for dim in read.source.shape], dtype=np.int64))
        operands.append(Operand(bytes=elements * tvm.runtime.DataType(read.source.dtype).bits // 8, access=access))
    return TileSpace(axes=[str(var.name).removeprefix("v_") for var, _ in spatial], extents=[extent for _, extent in spatial], operands=operands)


SPATIAL, REDUCE = 0, 2  # tirx IterVar kinds


def analyze(mod, packed: Mapping[str, str] | None = None) -> ModelAnalysis:
    """Analyze a Relax module after FuseTIR (TVM is imported by the caller, in the worker)."""
    import tvm
    from tvm import relax

    main = mod["main"]
    num_inputs = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params)
    sources: dict = {}
    for index, param in enumerate(main.params):
        sources[param] = ("input" if index < num_inputs else "weight", None)
    position = {param: index for index, param in enumerate(main.params)}
    packed = packed or {}

    def tensor(expr, source=("kernel", None)) -> Tensor | None:
        ty = expr.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            return None
        kind, producer = sources.get(expr, ("constant", None) if isinstance(expr, tvm.ir.expr.Constant) else source)
        packed_dtype = packed.get(str(expr.name)) if kind == "weight" and packed else None
        return Tensor(
            shape=[int(d) for d in ty.shape], dtype=str(ty.dtype), source=kind, producer=producer, packed_dtype=packed_dtype, param=position.get(expr)
        )

    kernels: list[Kernel] = []
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
                callee = mod[value.args[0]]
                args = [t for t in (tensor(arg) for arg in value.args[1].fields) if t is not None]
                out_types = value.ty.fields if isinstance(value.ty, relax.TupleType) else [value.ty]
                outputs = [Tensor(shape=[int(d) for d in ty.shape], dtype=str(ty.dtype)) for ty in out_types if isinstance(ty, relax.TensorType)]
                script = callee.script()
                blocks = re.findall(r'T\.s?block\("([^"]+)"', script)
                weight_shape = args[1].shape if len(args) > 1 else None
                nest, tile_space = main_block(callee, script)
                flops = int(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": callee})))
                if any(arg.packed_dtype for arg in args) and nest is not None:
                    # TVM counts the unpacking of packed int4/int8 weights as arithmetic; a device
                    # does one multiply-add per weight use, like the float layer (+ the epilogue).
                    flops = 2 * nest.iterations + int(np.prod(outputs[0].shape)) * len(blocks)
                kernels.append(
                    Kernel(
                        name=value.args[0].name_hint,
                        op_classes=classify(value.args[0].name_hint, blocks, weight_shape),
                        flops=flops,
                        inputs=args,
                        outputs=outputs,
                        nest=nest,
                        tile_space=tile_space,
                    )
                )
                sources[binding.var] = ("kernel", len(kernels) - 1)
            elif isinstance(value, relax.Call) and value.args and value.args[0] in sources:
                sources[binding.var] = sources[value.args[0]]  # a view (reshape) of its input
            elif isinstance(value, relax.TupleGetItem) and value.tuple_value in sources:
                sources[binding.var] = sources[value.tuple_value]
            elif isinstance(value, relax.Var) and value in sources:
                sources[binding.var] = sources[value]
    recorded = main.attrs.get(ORDER_ATTR) if main.attrs else None
    return ModelAnalysis(kernels=kernels, order=OrderRecord.model_validate_json(str(recorded)) if recorded is not None else None)
