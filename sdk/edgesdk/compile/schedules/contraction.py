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

# Below this many multiply-adds a kernel takes tens of microseconds on one core: waking a second
# thread costs about as much, and on a loaded machine a parallel region can wait a whole time slice.
MIN_PARALLEL_MACS = 1 << 19


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


def _strip_cast(expr):
    from tvm import tirx

    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _uses(expr, var) -> bool:
    from tvm import tirx

    return any(free.same_as(var) for free in tirx.analysis.undefined_vars(expr))


def match(sch) -> Contraction | None:
    """The one contraction block of ``sch``'s function, or None when the function is anything else."""
    from tvm import tirx
    from tvm.ir import TensorLoad  # what tirx.BufferLoad builds

    candidates = []
    for block_rv in _all_blocks(sch):
        block = sch.get(block_rv)
        if any(var.iter_type == tirx.IterVar.CommReduce for var in block.iter_vars):
            candidates.append(block_rv)
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
    operands = [_strip_cast(product.a), _strip_cast(product.b)]
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
    if reuse_axis is None:
        # Depthwise and the like: the largest other axis still gives independent accumulators.
        others = [axis for axis in range(len(spatial) - 1) if spatial[axis] > 1]
        reuse_axis = max(others, key=lambda axis: spatial[axis]) if others else None
    return Contraction(str(block.name_hint), spatial, reduction, vector_axis, reuse_axis, panel_read)


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
