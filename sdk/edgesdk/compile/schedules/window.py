"""The window-reduction rule: pooling (max, sum) and any other block that reduces a small window
per output element, e.g. ``pool_max[n, c, y, x] = max over (ry, rx) of x[n, c, y+ry, x+rx]``.

Left as TVM emits it, such a block accumulates straight into its output buffer one element at a
time; with 8-bit outputs LLVM must assume each byte store may alias the next input load and runs
it about 8x slower than in float32. Here a vector of output columns is accumulated in registers
(a local buffer) across the window, then written once, with its elementwise epilogue.
"""

from __future__ import annotations

import math

from edgesdk.compile.schedules.cpu import CpuSpec
from edgesdk.compile.schedules.spatial import reduces, root_blocks

MAX_WINDOW = 256  # reduction elements per output; beyond, it is a real reduction (mean, softmax)
# Vectorised, a pool runs ~1 ns per 30 window elements; a parallel region costs tens of
# microseconds to start on a small VM: only pools bigger than this are worth sharing.
MIN_PARALLEL_WINDOW_WORK = 1 << 22


def match(sch):
    """The one window-reduction block of ``sch``'s function: spatial iterators then at most
    MAX_WINDOW reduction elements, loops in that order; else None."""
    from tvm import tirx

    candidates = [block for block in root_blocks(sch) if reduces(sch.get(block))]
    if len(candidates) != 1:
        return None
    block_rv = candidates[0]
    block = sch.get(block_rv)
    kinds = [var.iter_type for var in block.iter_vars]
    spatial = sum(kind == tirx.IterVar.DataPar for kind in kinds)
    if block.init is None or len(block.writes) != 1 or spatial < 2 or kinds[:spatial] != [tirx.IterVar.DataPar] * spatial:
        return None
    loops = sch.get_loops(block_rv)
    if len(loops) != len(kinds) or not all(isinstance(sch.get(loop).extent, tirx.IntImm) for loop in loops):
        return None
    window = math.prod(int(sch.get(loop).extent) for loop in loops[spatial:])
    return block_rv if window <= MAX_WINDOW else None


def schedule(sch, block, cpu: CpuSpec, inline_epilogue):
    """Schedule the window block; returns the outermost loop of its nest."""
    from tvm import tirx

    loops = sch.get_loops(block)
    spatial = sum(var.iter_type == tirx.IterVar.DataPar for var in sch.get(block).iter_vars)
    columns, windows = loops[spatial - 1], loops[spatial:]
    width = int(sch.get(columns).extent)
    work = math.prod(int(sch.get(loop).extent) for loop in loops)
    bits = sch.get(block).writes[0].source.dtype.bits
    wanted = cpu.lanes * 32 // max(bits, 8)  # one vector register of the output's dtype
    vector = max(size for size in range(1, min(width, wanted) + 1) if width % size == 0)
    column_outer, column_inner = sch.split(columns, factors=[None, vector])
    sch.reorder(column_outer, *windows, column_inner)
    local = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, local)
    sch.reverse_compute_at(local, column_outer, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(local)[-1])
    sch.vectorize(column_inner)
    outer = sch.get_loops(block)[: spatial - 1]
    if cpu.parallel and outer and work >= MIN_PARALLEL_WINDOW_WORK:
        outer = [sch.fuse(*outer)] if len(outer) > 1 else outer
        sch.parallel(outer[0])
    init = sch.decompose_reduction(block, windows[0])
    sch.vectorize(sch.get_loops(init)[-1])
    return sch.get_loops(block)[0]
