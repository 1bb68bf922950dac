"""The contraction rule: matmul, batch matmul, dense and every conv2d NCHW (pointwise, 3x3, strided,
grouped, depthwise), with their fused elementwise epilogues.

What it recognises: a PrimFunc with exactly one reduction block of the form
``C[s0, .., sn] = C[s0, .., sn] + A[..] * B[..]`` (loads maybe cast) whose output is indexed by its
spatial iterators in loop order, nested in one loop per iterator. Legalized matmul and conv2d all
look like that; the operand layouts differ but do not matter to the schedule:

- the vector axis is the output's innermost axis (matmul N, conv output width), so the output and
  the operand that carries it (matmul B, conv input) are read in contiguous runs;
- the reuse axis is a spatial axis that operand does not depend on (matmul M, conv output
  channels): every vector loaded is reused across it, so a register block of reuse x vector
  accumulators stays in registers (depthwise has no such axis: its channels are used for
  independent accumulation chains instead).

Schedule: spatial loops tiled by the register block, reduction loops inside the tiles, the block
(reuse unrolled, vector vectorised) accumulated in a local buffer whose write-back carries the
inlined epilogue (bias, activation, residual add), outer tiles fused and parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgesdk.compile.schedules.cpu import CpuSpec
from edgesdk.compile.schedules.spatial import reduces, strip_cast

# Below this many multiply-adds a kernel takes tens of microseconds on one core: waking a second
# thread costs about as much, and on a loaded machine a parallel region can wait a whole time slice.
MIN_PARALLEL_MACS = 1 << 19
# Channel blocks (x batch) from which a conv packs each weight panel inside its block's loop: enough
# parallel chunks for a few threads without splitting rows.
PANELS_PER_BLOCK_MIN = 8


@dataclass(frozen=True)
class Contraction:
    block_name: str
    spatial: list[int]  # extent per spatial iterator, in loop order
    reduction: list[int]
    vector_axis: int  # index into spatial
    reuse_axis: int | None
    # The streamed operand's position in the block's reads when it is a plain [.., K, N] tensor
    # (matmul B): then a [K, vector] panel of it is copied contiguous once per column tile.
    panel_read: int | None = None
    # Conv2d NCHW whose input does not depend on the output channel (not grouped): the weight's
    # position in the block's reads when it is read plainly as [OC, IC, KH, KW]. Such a conv can
    # vectorise over output channels instead (`schedule_channels`).
    weight_read: int | None = None
    # Conv2d NCHW where every output channel reads its own input channel (depthwise): no operand
    # is shared across a spatial axis, so `schedule_depthwise` blocks rows x columns instead.
    depthwise: bool = False
    # How far apart the streamed operand's elements are along the vector axis (conv stride), and
    # its position in the block's reads: 0 when not a plain constant stride.
    column_stride: int = 1
    streamed_read: int | None = None
    # The streamed operand's dtype when both operands are 8-bit integers ("int8" or "uint8"; the
    # other one, the weight, is then int8): such a conv may multiply in 16-bit pairs (`integer`).
    eight_bit: str | None = None


def _uses(expr, var) -> bool:
    from tvm import tirx

    return any(free.same_as(var) for free in tirx.analysis.undefined_vars(expr))


def match(sch) -> Contraction | None:
    """The one contraction block of ``sch``'s function, or None when the function is anything else."""
    from tvm import tirx
    from tvm.ir import TensorLoad  # what tirx.BufferLoad builds
    from tvm.sym.pattern import detect_linear_equation

    candidates = [block_rv for block_rv in _all_blocks(sch) if reduces(sch.get(block_rv))]
    if len(candidates) != 1:
        return None
    block_rv = candidates[0]
    block = sch.get(block_rv)
    if block.init is None or len(block.writes) != 1:
        return None
    store = block.body
    if not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tirx.Add):
        return None
    acc, product = store.value.a, store.value.b
    if not (isinstance(acc, TensorLoad) and acc.source.same_as(store.buffer) and isinstance(product, tirx.Mul)):
        return None
    operands = [strip_cast(product.a), strip_cast(product.b)]
    if not all(isinstance(operand, TensorLoad) for operand in operands):
        return None
    # float32 x float32 -> float32, or 8-bit integers -> int32. Not float16 (accumulated in float32):
    # unrolled and vectorised, its conversions are library calls on baseline x86-64 that LLVM takes minutes over.
    dtypes = {str(operand.source.dtype) for operand in operands}
    if str(store.buffer.dtype) == "float32":
        if dtypes != {"float32"}:
            return None
    elif str(store.buffer.dtype) != "int32" or not dtypes <= {"int8", "uint8"}:
        return None
    spatial_vars = [var.var for var in block.iter_vars if var.iter_type == tirx.IterVar.DataPar]
    reduce_vars = [var.var for var in block.iter_vars if var.iter_type == tirx.IterVar.CommReduce]
    if len(spatial_vars) + len(reduce_vars) != len(block.iter_vars) or not spatial_vars:
        return None
    # The output indexed by exactly the spatial iterators, in order; the accumulator read the same way.
    if len(store.indices) != len(spatial_vars) or not all(index.same_as(var) for index, var in zip(store.indices, spatial_vars, strict=True)):
        return None
    if not all(index.same_as(var) for index, var in zip(acc.indices, spatial_vars, strict=True)):
        return None
    # One loop per iterator, bound to it directly, with this block as the only statement inside.
    loops = sch.get_loops(block_rv)
    if len(loops) != len(block.iter_vars):
        return None
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, tirx.stmt.Stmt) or not hasattr(realize, "iter_values"):
        return None
    for loop_rv, value, iter_var in zip(loops, realize.iter_values, block.iter_vars, strict=True):
        loop = sch.get(loop_rv)
        if not value.same_as(loop.loop_var) or not isinstance(loop.extent, tirx.IntImm) or int(loop.extent) != int(iter_var.dom.extent):
            return None
        if not isinstance(iter_var.dom.min, tirx.IntImm) or int(iter_var.dom.min) != 0:
            return None
    for loop_rv in loops[:-1]:
        if isinstance(sch.get(loop_rv).body, tirx.SeqStmt):
            return None
    extents = [int(sch.get(loop_rv).extent) for loop_rv in loops]
    spatial, reduction = extents[: len(spatial_vars)], extents[len(spatial_vars) :]
    if [var.iter_type for var in block.iter_vars] != [tirx.IterVar.DataPar] * len(spatial_vars) + [tirx.IterVar.CommReduce] * len(reduce_vars):
        return None
    vector_axis = len(spatial_vars) - 1
    vector_var = spatial_vars[vector_axis]
    streamed = [operand for operand in operands if operand.indices and _uses(operand.indices[-1], vector_var)]
    reuse_axis = None
    if len(streamed) == 1:
        free = [axis for axis, var in enumerate(spatial_vars[:-1]) if spatial[axis] > 1 and not any(_uses(index, var) for index in streamed[0].indices)]
        reuse_axis = free[-1] if free else None
    panel_read = None
    if reuse_axis is not None and len(streamed) == 1:
        indices = streamed[0].indices
        plain = all(any(index.same_as(var) for var in spatial_vars + reduce_vars) for index in indices)
        uses_reduction = any(index.same_as(var) for index in indices for var in reduce_vars)
        reads = [str(region.source.name) for region in block.reads]
        name = str(streamed[0].source.name)
        if plain and uses_reduction and reads.count(name) == 1:
            panel_read = reads.index(name)
    weight_read = None
    if len(spatial) == 4 and reuse_axis == 1 and len(streamed) == 1 and len(reduce_vars) == 3:
        weights = [operand for operand in operands if operand is not streamed[0]]
        expected = [spatial_vars[1], *reduce_vars]  # [OC, IC, KH, KW]
        reads = [str(region.source.name) for region in block.reads]
        if len(weights) == 1 and len(weights[0].indices) == 4 and all(index.same_as(var) for index, var in zip(weights[0].indices, expected, strict=True)):
            name = str(weights[0].source.name)
            weight_read = reads.index(name) if reads.count(name) == 1 else None
    column_stride, streamed_read = 0, None
    if len(streamed) == 1:
        linear = detect_linear_equation(streamed[0].indices[-1], [vector_var])
        if len(linear) == 2 and isinstance(linear[0], tirx.IntImm):
            column_stride = int(linear[0])
        reads = [str(region.source.name) for region in block.reads]
        name = str(streamed[0].source.name)
        streamed_read = reads.index(name) if reads.count(name) == 1 else None
    eight_bit = None
    if len(streamed) == 1 and str(store.buffer.dtype) == "int32" and all(str(o.source.dtype) == "int8" for o in operands if o is not streamed[0]):
        eight_bit = str(streamed[0].source.dtype)
    depthwise = len(spatial) == 4 and reuse_axis is None and len(streamed) == 1 and len(reduction) == 3 and reduction[0] == 1
    if reuse_axis is None:
        # Depthwise and the like: the largest other axis still gives independent accumulators.
        others = [axis for axis in range(len(spatial) - 1) if spatial[axis] > 1]
        reuse_axis = max(others, key=lambda axis: spatial[axis]) if others else None
    return Contraction(
        str(block.name_hint), spatial, reduction, vector_axis, reuse_axis, panel_read, weight_read, depthwise, column_stride, streamed_read, eight_bit
    )


def _all_blocks(sch):
    root = sch.get_sblock("root") if _has_root(sch) else None
    return sch.get_child_blocks(root) if root is not None else []


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - TVM raises a bare error for a missing name
        return False
    return True


def _factor(extent: int, wanted: int, multiple_of: int = 1) -> int:
    """A tile size for ``extent``: ``wanted`` if it divides, else the largest divisor <= wanted that
    is a multiple of ``multiple_of`` and at least half of ``wanted``; the extent itself when small;
    ``wanted`` (with a guarded tail) otherwise."""
    if extent <= wanted:
        return extent
    for size in range(wanted, max(wanted // 2, 1) - 1, -1):
        if extent % size == 0 and size % multiple_of == 0:
            return size
    if extent <= 2 * wanted:
        return extent
    return wanted


def tiles(found: Contraction, cpu: CpuSpec) -> tuple[int, int]:
    """(reuse, vector) register block: accumulators fill most of the vector registers, leaving room
    for the streamed vectors and one broadcast."""
    accumulators = cpu.registers - 4
    reuse_extent = found.spatial[found.reuse_axis] if found.reuse_axis is not None else 1
    reuse = _factor(reuse_extent, min(8, accumulators // 2))
    vectors = max(2, min(accumulators // max(reuse, 1), 8))
    vector = _factor(found.spatial[found.vector_axis], cpu.lanes * vectors, cpu.lanes)
    return reuse, vector


def schedule(sch, found: Contraction, cpu: CpuSpec, inline_epilogue):
    """Schedule the contraction; returns the outermost loop of its nest."""
    block = sch.get_sblock(found.block_name)
    loops = sch.get_loops(block)
    spatial_loops, reduce_loops = loops[: len(found.spatial)], loops[len(found.spatial) :]
    reuse, vector = tiles(found, cpu)
    outer = list(spatial_loops)
    vector_outer, vector_inner = sch.split(spatial_loops[found.vector_axis], factors=[None, vector])
    outer[found.vector_axis] = vector_outer
    inner = [vector_inner]
    if found.reuse_axis is not None:
        reuse_outer, reuse_inner = sch.split(spatial_loops[found.reuse_axis], factors=[None, reuse])
        outer[found.reuse_axis] = reuse_outer
        inner = [reuse_inner, vector_inner]
    panel_at = None
    if found.panel_read is not None and found.reuse_axis is not None:
        # Column tiles outside row tiles: the panel, packed once per column tile, serves every row tile.
        outer.remove(reuse_outer)
        panel_at = outer[-1]
        outer.append(reuse_outer)
    sch.reorder(*outer, *reduce_loops, *inner)
    if panel_at is not None:
        panel = sch.cache_read(block, found.panel_read, "global")
        sch.compute_at(panel, panel_at, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(panel)[-1])
    local = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, local)
    sch.reverse_compute_at(local, outer[-1], preserve_unit_loops=True)
    # Unroll/vectorise the update before splitting off its init: a block without init no longer
    # counts as a reduction and the vectorize check would refuse it.
    if found.reuse_axis is not None:
        sch.unroll(inner[0])
    sch.vectorize(vector_inner)
    for loop in sch.get_loops(local)[len(outer) :][:-1]:
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(local)[-1])
    parallel = cpu.parallel and math.prod(found.spatial) * math.prod(found.reduction) >= MIN_PARALLEL_MACS
    if parallel and panel_at is not None:
        # Only the loops above the panel copy can be fused: threads split the column tiles.
        shared = outer[: outer.index(panel_at) + 1]
        fused = sch.fuse(*shared) if len(shared) > 1 else shared[0]
        sch.parallel(fused)
        outer = [fused, *outer[len(shared) :]]
    elif parallel:
        outer = [sch.fuse(*outer)]
        sch.parallel(outer[0])
    init = sch.decompose_reduction(block, reduce_loops[0])
    init_loops = sch.get_loops(init)[len(outer) :]
    for loop in init_loops[:-1]:
        sch.unroll(loop)
    sch.vectorize(init_loops[-1])
    return outer[0]


def channel_tiles(found: Contraction, cpu: CpuSpec) -> tuple[int, int] | None:
    """(output columns, output channels) register block of the channel-vectorised conv, or None
    where output channels do not fill whole vectors (then the width path is used)."""
    if found.weight_read is None:
        return None
    channels, width = found.spatial[1], found.spatial[3]
    vectors = 2 if cpu.registers <= 16 else 4  # channel vectors per block; SSE/AVX2: 16 registers
    while vectors > 1 and channels % (vectors * cpu.lanes):
        vectors -= 1
    if channels % (vectors * cpu.lanes):
        return None
    # Accumulators = columns x vectors, leaving registers for the weight vectors and a broadcast.
    wanted = max(2, min(8, (cpu.registers - vectors - 2) // vectors))
    return _factor(width, wanted), vectors * cpu.lanes


def schedule_channels(sch, found: Contraction, cpu: CpuSpec, inline_epilogue, columns: int, vector: int):
    """Conv2d NCHW vectorised over a block of output channels: the weight read as [OC/vector, IC,
    KH, KW, vector] panels (repacked once per call: weights are parameters, not constants), each
    input value broadcast against a channel vector, a block of output columns x channel vector
    accumulated in registers. Output channels are contiguous in the weights whatever the spatial
    size, so small and strided outputs (7x7, 14x14, stride 2) fill whole vectors, unlike the width
    path. Returns the outermost loop of the nest."""
    block = sch.get_sblock(found.block_name)
    n, oc, h, w, rc, ry, rx = sch.get_loops(block)
    channel_outer, channel_inner = sch.split(oc, factors=[None, vector])
    column_outer, column_inner = sch.split(w, factors=[None, columns])
    sch.reorder(n, channel_outer, h, column_outer, rc, ry, rx, column_inner, channel_inner)
    packed = sch.cache_read(block, found.weight_read, "global")
    sch.transform_layout(block, ("read", found.weight_read), lambda o, i, kh, kw: (o // vector, i, kh, kw, o % vector))
    sch.unroll(column_inner)
    sch.vectorize(channel_inner)
    return channel_nest(sch, block, found, cpu, inline_epilogue, packed, (n, channel_outer, h, column_outer), rc, vector)


def channel_nest(sch, block, found: Contraction, cpu: CpuSpec, inline_epilogue, packed, loops, reduction_outer, vector: int):
    """What a conv vectorised over output-channel blocks does around its inner loops (the channel
    path here, the 8-bit pair path in `integer`): where the weight ``packed`` is packed, the
    accumulator with its epilogue, the write-back, threads, and the reduction's init. ``loops``:
    the batch, channel block, row and column block loops. Returns the outermost loop."""
    n, channel_outer, h, column_outer = loops
    # With enough channel blocks to share between threads, each block packs its own panel right
    # before using it (still in cache: a 512x3x3 x 16 panel is 295 KB); rows then stay serial in it.
    # Otherwise all panels are packed up front and rows are split between threads too.
    per_block = found.spatial[0] * found.spatial[1] // vector >= PANELS_PER_BLOCK_MIN
    if per_block:
        sch.compute_at(packed, channel_outer, preserve_unit_loops=True)
    # The accumulator with its channel axis innermost: strided, it ran 16x slower (shared notes).
    local = sch.cache_write(block, 0, "local")
    sch.transform_layout(block, ("write", 0), lambda b, c, y, x: (b, y, x, c))
    inline_epilogue(sch, local)
    sch.reverse_compute_at(local, column_outer, preserve_unit_loops=True)
    # Write-back: NCHW output rows are contiguous along the columns.
    back = sch.get_loops(local)[4:]
    for loop in back[:-1]:
        sch.unroll(loop)
    sch.vectorize(back[-1])
    outer = [n, channel_outer] if per_block else [n, channel_outer, h]
    if cpu.parallel and math.prod(found.spatial) * math.prod(found.reduction) >= MIN_PARALLEL_MACS:
        outer = [sch.fuse(*outer)]
        sch.parallel(outer[0])
    init = sch.decompose_reduction(block, reduction_outer)
    init_loops = sch.get_loops(init)[len(outer) + (2 if per_block else 1) :]
    for loop in init_loops[:-1]:
        sch.unroll(loop)
    sch.vectorize(init_loops[-1])
    return outer[0]


def schedule_depthwise(sch, found: Contraction, cpu: CpuSpec, inline_epilogue):
    """Depthwise conv2d NCHW: a block of output rows x a vector of output columns accumulated in
    registers, the KH x KW window unrolled around it (each input row loaded serves every output row
    of the block it overlaps), channels (and row blocks) parallel. Returns the outermost loop."""
    from tvm import tirx

    block = sch.get_sblock(found.block_name)
    n, c, h, w, rc, ry, rx = sch.get_loops(block)
    vector = _factor(found.spatial[3], 2 * cpu.lanes, cpu.lanes)
    vectors = -(-vector // cpu.lanes)
    rows = _factor(found.spatial[2], max(1, min(4, (cpu.registers - 4) // vectors)))
    row_outer, row_inner = sch.split(h, factors=[None, rows])
    column_outer, column_inner = sch.split(w, factors=[None, vector])
    sch.reorder(n, c, row_outer, column_outer, rc, ry, rx, row_inner, column_inner)
    stride = found.column_stride
    if stride > 1 and found.streamed_read is not None:
        # Strided columns would be gathered lane by lane: the (padded) input is stored with its
        # columns deinterleaved by stride phase, [.., W] -> [.., stride, W / stride], so the
        # columns one vector reads are contiguous.
        # The filler must have the input's dtype (an int8 input's too), or the transform is refused.
        filler = tirx.const(0, str(sch.get(block).reads[found.streamed_read].source.dtype))
        sch.transform_layout(block, ("read", found.streamed_read), lambda b, ch, y, x: (b, ch, y, x % stride, x // stride), pad_value=filler)
    local = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, local)
    sch.reverse_compute_at(local, column_outer, preserve_unit_loops=True)
    for loop in (ry, rx, row_inner):
        sch.unroll(loop)
    sch.vectorize(column_inner)
    back = sch.get_loops(local)[4:]
    for loop in back[:-1]:
        sch.unroll(loop)
    sch.vectorize(back[-1])
    outer = [n, c, row_outer]
    if cpu.parallel and math.prod(found.spatial) * math.prod(found.reduction) >= MIN_PARALLEL_MACS:
        outer = [sch.fuse(*outer)]
        sch.parallel(outer[0])
    init = sch.decompose_reduction(block, rc)
    init_loops = sch.get_loops(init)[len(outer) + 1 :]
    for loop in init_loops[:-1]:
        sch.unroll(loop)
    sch.vectorize(init_loops[-1])
    return outer[0]
