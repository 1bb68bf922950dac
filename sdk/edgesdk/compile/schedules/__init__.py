"""CPU schedule rules for the fused kernels TVM's default pipeline leaves as scalar loop nests.

A rule recognises a block pattern in one fused PrimFunc and schedules it with ``tvm.s_tir.Schedule``;
nothing here knows about models. `ScheduleKernels` runs after fusion (FuseOps + FuseTIR) and before
TIR lowering (see edgesdk.compile.lowering.optimize). A function no rule understands, or one a rule
fails on, is kept exactly as it was: a rule only ever changes loop structure, never arithmetic.
For the `c` target (microcontrollers) the only rule is `schedule_in_place`, for memory.
"""

from __future__ import annotations

import contextlib

from edgesdk.compile.schedules import contraction, integer, spatial, window
from edgesdk.compile.schedules.cpu import CpuSpec, cpu_spec
from edgesdk.compile.schedules.database import open_database, tuned_schedule

__all__ = ["CpuSpec", "ScheduleKernels", "cpu_spec", "schedule", "schedule_func", "schedule_in_place"]


def schedule_func(func, cpu: CpuSpec):
    """``func`` scheduled for ``cpu``, or None when no rule applies."""
    sch = schedule(func, cpu)
    return None if sch is None else sch.mod["main"].with_attr("tir.is_scheduled", True)


def schedule(func, cpu: CpuSpec):
    """The ``tvm.s_tir.Schedule`` of ``func`` after the rules that apply (its trace records what
    they did), or None when none does."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(func, debug_mask="all" if _checking() else 0, error_render_level="none")
    try:
        found = contraction.match(sch)
        if found is not None:
            spatial.inline_elementwise(sch, keep=found.block_name)
            found = contraction.match(sch)  # re-read: inlining renamed nothing but may drop blocks
        placed = None
        pooled = window.match(sch) if found is None else None
        if found is not None:
            placed = _schedule_contraction(sch, found, cpu)
        elif pooled is not None:
            name = str(sch.get(pooled).name_hint)
            spatial.inline_elementwise(sch, keep=name)
            placed = window.schedule(sch, sch.get_sblock(name), cpu, spatial.inline_epilogue)
        else:
            # No contraction (softmax, a packed-weight kernel's two reductions...): its elementwise
            # stages still become one loop nest instead of one each.
            before = len(spatial.root_blocks(sch))
            spatial.inline_elementwise(sch)
            if len(spatial.root_blocks(sch)) == before and not spatial.applies(sch):
                return None
        if cpu.parallel:
            spatial.parallelize_rest(sch, scheduled=placed)
        spatial.partition_padding(sch)
    except (s_tir.ScheduleError, tvm.error.InternalError):
        # A pattern the rules do not fully handle (a primitive refused it, or TVM tripped over it):
        # keep the function exactly as TVM made it.
        return None
    return sch


def schedule_in_place(func):
    """``func`` scheduled for memory, or None where nothing changes (or a primitive refuses). A
    contraction keeps its result one element at a time: the accumulator in a local and the
    elementwise epilogue (bias, activation, dequantize and requantize) applied as each output
    element is done; it reads its operands in place (a reshape or transpose inlined into the
    loads) and a conv's padded input is made row by row (`_pad_by_rows`). Any other function has
    its elementwise stages inlined. For targets no rule vectorises (TVM's C for
    microcontrollers): the arithmetic stays as TVM made it, but the kernel no longer allocates
    the contraction's whole result (in int32 for an integer kernel, and again in float32 for its
    requantization), the whole padded input, or copies of its operands: scratch that would sit in
    the device's RAM next to the tensors (edgesdk.compile.workspace)."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(func, debug_mask="all" if _checking() else 0, error_render_level="none")
    try:
        found = contraction.match(sch)
        if found is None:
            before = len(spatial.root_blocks(sch))
            spatial.inline_elementwise(sch)
            changed = len(spatial.root_blocks(sch)) < before
            return sch.mod["main"].with_attr("tir.is_scheduled", True) if changed else None
        spatial.inline_elementwise(sch, keep=found.block_name)
        found = contraction.match(sch)
        if found is None:
            return None
        block = sch.get_sblock(found.block_name)
        for producer in sch.get_producers(block):  # stages of the function (inline_elementwise kept them)
            if not spatial.is_padding(sch.get(producer)):
                with contextlib.suppress(s_tir.ScheduleError):
                    sch.compute_inline(producer)
            elif len(found.spatial) == 4:
                _pad_by_rows(sch, block, producer)
        innermost = sch.get_loops(block)[len(found.spatial) - 1]
        local = sch.cache_write(block, 0, "local")
        spatial.inline_epilogue(sch, local)
        sch.reverse_compute_at(local, innermost, preserve_unit_loops=True)
    except (s_tir.ScheduleError, tvm.error.InternalError):
        return None
    return sch.mod["main"].with_attr("tir.is_scheduled", True)


def _pad_by_rows(sch, block, padding) -> None:
    """A conv2d NCHW that reads a padded copy of its input: output rows outermost (after the
    batch), and the padded copy made row by row, of only the input rows one output row reads (its
    kernel's height, all channels), instead of the whole padded input once; each input row is
    copied about kernel-height / stride times (the line buffer of microcontroller inference
    libraries)."""
    from tvm import s_tir

    batch, channels, rows, columns, *reduction = sch.get_loops(block)
    sch.reorder(batch, rows, channels, columns, *reduction)
    try:
        sch.compute_at(padding, rows, preserve_unit_loops=True)
    except s_tir.ScheduleError:
        sch.reorder(batch, channels, rows, columns, *reduction)  # TVM's order back


def _schedule_contraction(sch, found, cpu: CpuSpec):
    """The conv/matmul nest: conv2d over output-channel vectors where the channels fill whole
    vectors (faster than the width path on every conv shape measured, widths 7 to 224), depthwise
    over rows x column vectors, everything else over the output's innermost axis."""
    pairs = integer.pair_tiles(found, cpu)
    if pairs is not None:
        return integer.schedule_pairs(sch, found, cpu, spatial.inline_epilogue, *pairs)
    channels = contraction.channel_tiles(found, cpu)
    if channels is not None:
        return contraction.schedule_channels(sch, found, cpu, spatial.inline_epilogue, *channels)
    if found.depthwise:
        return contraction.schedule_depthwise(sch, found, cpu, spatial.inline_epilogue)
    return contraction.schedule(sch, found, cpu, spatial.inline_epilogue)


def _checking() -> bool:
    import os

    return os.environ.get("EDGESDK_SCHEDULE_DEBUG") == "1"


def ScheduleKernels(target, tuning: str | None = None):  # noqa: N802 - a pass constructor, named like TVM's
    """The module pass: every PrimFunc scheduled for ``target``: with its tuned schedule where the
    ``tuning`` database (a directory: edgesdk.compile.tuning_db) has one, else by a rule that applies."""
    import tvm

    cpu = cpu_spec(target)

    in_place = cpu is None and target.kind.name == "c"

    @tvm.transform.module_pass(opt_level=0, name="edgesdk.ScheduleKernels")
    def _pass(mod, _ctx):
        if cpu is None and not in_place:
            return mod
        database = open_database(tuning) if tuning is not None else None
        updates = {}
        for gvar, func in mod.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is not None and "tir.is_scheduled" in func.attrs:
                continue
            tuned = tuned_schedule(database, func, target) if database is not None else None
            if tuned is not None:
                symbol = func.attrs["global_symbol"] if func.attrs is not None and "global_symbol" in func.attrs else gvar.name_hint
                updates[gvar] = tuned.with_attr("global_symbol", symbol).with_attr("tir.is_scheduled", True).with_attr("edgesdk.tuned", True)
                continue
            scheduled = schedule_in_place(func) if cpu is None else schedule_func(func, cpu)
            if scheduled is not None:
                updates[gvar] = scheduled
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return _pass
