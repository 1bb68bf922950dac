"""Helpers shared by the rules, and the fallback for blocks no rule owns: elementwise inlining into
epilogues, and parallel outer loops over data-parallel iterators."""

from __future__ import annotations

# Below this many iterations a parallel region costs more to start than it saves.
MIN_PARALLEL_WORK = 1 << 16


def root_blocks(sch):
    return sch.get_child_blocks(sch.get_sblock("root"))


def reduces(block) -> bool:
    """Whether a block has a reduction iterator."""
    from tvm import tirx

    return any(var.iter_type == tirx.IterVar.CommReduce for var in block.iter_vars)


def strip_cast(expr):
    """``expr`` without the casts around it."""
    from tvm import tirx

    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _intermediates(sch) -> list:
    """Buffers the function allocates itself (everything else it touches is a parameter)."""
    return list(sch.get(sch.get_sblock("root")).alloc_buffers)


def inline_elementwise(sch, keep: str | None = None) -> None:
    """Inline every injective intermediate block into its consumers, except ``keep`` and its
    producers (a padding stage stays materialised: inlined, it puts a branch in the hot loop)."""
    from tvm import s_tir

    protected = set()
    if keep is not None:
        protected = {str(sch.get(block).name_hint) for block in sch.get_producers(sch.get_sblock(keep))} | {keep}
    for block in root_blocks(sch):
        if str(sch.get(block).name_hint) in protected:
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            continue


def inline_epilogue(sch, producer) -> None:
    """Fold the elementwise consumer chain of ``producer`` into it, while each consumer is the only
    one and reads nothing but ``producer``'s output and function parameters (an intermediate it
    read could be computed later in the function)."""
    from tvm import s_tir

    while True:
        intermediates = _intermediates(sch)
        consumers = sch.get_consumers(producer)
        if len(consumers) != 1:
            return
        consumer = consumers[0]
        produced = [region.source for region in sch.get(producer).writes]
        for region in sch.get(consumer).reads:
            if any(region.source.same_as(buffer) for buffer in produced):
                if not _same_point(sch.get(consumer), region):
                    return  # a broadcast or a reshape of the result: not an elementwise epilogue
            elif any(region.source.same_as(buffer) for buffer in intermediates):
                return
        try:
            sch.reverse_compute_inline(consumer)
        except s_tir.ScheduleError:
            return


def _same_point(block, region) -> bool:
    """Whether ``block`` reads ``region`` at exactly its own iterators, in order (elementwise)."""
    iters = block.iter_vars
    if len(region.region) != len(iters):
        return False
    return all(
        extent_one and axis.min.same_as(var.var) and int(var.dom.extent) == int(shape)
        for axis, var, shape, extent_one in zip(region.region, iters, region.source.shape, (int(axis.extent) == 1 for axis in region.region), strict=True)
    )


def _data_parallel_prefix(sch, block) -> list:
    """The leading loops of ``block`` bound only to its data-parallel iterators."""
    from tvm import tirx

    loops = sch.get_loops(block)
    if not loops:
        return []
    realize = sch.get(loops[-1]).body
    stmt = sch.get(block)
    if not hasattr(realize, "iter_values"):
        return []
    spatial_vars = []
    for value, var in zip(realize.iter_values, stmt.iter_vars, strict=True):
        if var.iter_type != tirx.IterVar.DataPar:
            break
        spatial_vars.append(value)
    prefix = []
    for loop_rv, value in zip(loops, spatial_vars, strict=False):
        if not value.same_as(sch.get(loop_rv).loop_var):
            break
        prefix.append(loop_rv)
    return prefix


def applies(sch) -> bool:
    """Whether the fallback has something to parallelise: a root block with enough data-parallel work."""
    return any(_parallel_loops(sch, block) for block in root_blocks(sch))


def _parallel_loops(sch, block) -> list:
    from tvm import tirx

    prefix = _data_parallel_prefix(sch, block)
    if not prefix or any(isinstance(sch.get(loop).body, tirx.SeqStmt) for loop in prefix[:-1]):
        return []
    if any(sch.get(loop).kind != tirx.ForKind.SERIAL for loop in sch.get_loops(block)[: len(prefix)]):
        return []
    work = 1
    for loop in sch.get_loops(block):
        work *= int(sch.get(loop).extent) if isinstance(sch.get(loop).extent, tirx.IntImm) else 1
    if work < MIN_PARALLEL_WORK:
        return []
    # Fuse as few leading loops as give both threads work: at least 8 chunks.
    chosen, chunks = [], 1
    for loop in prefix:
        chosen.append(loop)
        chunks *= int(sch.get(loop).extent)
        if chunks >= 8:
            break
    return chosen if chunks > 1 else []


def parallelize_rest(sch, scheduled=None) -> None:
    """Parallel outer loops for the root blocks that no rule scheduled (padding, unfused epilogues,
    reductions such as softmax and layer norm: their outer loops are data-parallel). ``scheduled``
    is the outermost loop of a nest a rule has placed: it is left as the rule made it."""
    from tvm import s_tir

    taken = sch.get(scheduled) if scheduled is not None else None
    for block in root_blocks(sch):
        outer = sch.get_loops(block)
        if taken is not None and outer and sch.get(outer[0]).same_as(taken):
            continue
        loops = _parallel_loops(sch, block)
        if not loops:
            continue
        try:
            sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
        except s_tir.ScheduleError:
            continue  # every primitive keeps the function correct: this block just stays serial


def partition_padding(sch) -> None:
    """Split the loops of every padding stage (``out[..] = if_then_else(inside, in[..], value)``)
    at the edges of the input, along its last two axes: the interior loop then copies without a
    condition (TVM simplifies it away within the loop's range) and LLVM vectorises it; as one loop,
    every element took the branch and a scalar conversion (an int8 depthwise input widened to
    float32 spent as long padding as convolving). Run after the loops are made parallel: the
    partitions sit inside the parallel outer loops."""
    import tvm
    from tvm import s_tir, sym, tirx

    for block in root_blocks(sch):
        if not is_padding(sch.get(block)):
            continue
        for axis in (-2, -1):
            stmt = sch.get(block)
            loop = _loop_of(sch, block, axis)
            if loop is None:
                break
            var, read = stmt.iter_vars[axis], stmt.reads[0]
            analyzer = sym.Analyzer()
            analyzer.bind(var.var, tirx.const(0, str(var.dom.extent.ty)))
            start = analyzer.simplify(read.region[axis].min)
            if not isinstance(start, tvm.ir.prim.expr.IntImm):
                break
            before, inner = -int(start), int(read.source.shape[axis])
            after = int(var.dom.extent) - inner - before
            if before < 0 or after < 0 or before + after == 0:
                continue
            stride = _phases(stmt) if axis == -1 else 1
            try:
                if stride > 1:
                    _copy_by_phase(sch, loop, stride)
                    break
                # The last part's extent is implied: the factors must sum to less than the loop's.
                factors = [before, inner, None] if before and after else [before, None] if before else [inner, None]
                parts = sch.loop_partition(loop, factors)
            except s_tir.ScheduleError:
                break
            # Carry on in the interior part's copy of the block.
            block = sch.get_child_blocks(parts[1] if before else parts[0])[0]


def _phases(stmt) -> int:
    """s when the padding stage stores its columns deinterleaved by phase (``[.., x % s, x // s]``,
    the input of a strided depthwise conv), else 1."""
    from tvm.ir.prim.expr import FloorDiv, IntImm

    index = stmt.body.indices[-1] if len(stmt.body.indices) >= 2 else None
    return int(index.b) if isinstance(index, FloorDiv) and isinstance(index.b, IntImm) else 1


def _copy_by_phase(sch, loop, stride: int) -> None:
    """A deinterleaving padding stage wrote each column ``W / s`` elements from the last: scalar
    stores. Its columns are copied phase by phase instead: contiguous stores (a stride-2 depthwise
    input of 24x48x48 floats: 36 -> 23 us). Its edges are not split off as elsewhere: that measured
    no faster, and TVM's loop_partition copies such a block with its iterator variables shared."""
    if int(sch.get(loop).extent) % stride == 0:
        columns, phase = sch.split(loop, factors=[None, stride])
        sch.reorder(phase, columns)


def is_padding(stmt) -> bool:
    """Whether a block is a padding stage: one read, one write of ``if_then_else(..)`` (maybe cast),
    at least two axes, the read indexed along every one of them."""
    import tvm
    from tvm import tirx

    if len(stmt.reads) != 1 or len(stmt.writes) != 1 or not isinstance(stmt.body, tirx.BufferStore):
        return False
    value = strip_cast(stmt.body.value)
    padded = isinstance(value, tvm.ir.expr.Call) and value.op.name == "prim.if_then_else"
    return padded and len(stmt.iter_vars) >= 2 and len(stmt.reads[0].region) == len(stmt.iter_vars)


def _loop_of(sch, block, axis: int):
    """The loop of ``block`` that binds its iterator ``axis`` directly (loop var = iterator value),
    or None."""
    loops = sch.get_loops(block)
    if not loops or not hasattr(sch.get(loops[-1]).body, "iter_values"):
        return None
    value = list(sch.get(loops[-1]).body.iter_values)[axis]
    return next((loop for loop in loops if sch.get(loop).loop_var.same_as(value)), None)
