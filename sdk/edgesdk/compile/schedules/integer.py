"""The 8-bit conv rule: conv2d NCHW with int8/uint8 activations and int8 weights, multiplied in
16-bit pairs of input channels (edgesdk.compile.schedules.intrinsics) instead of one 32-bit product
at a time.

The channel-vectorised conv (`contraction.schedule_channels`) with one more packing: input channels
paired innermost in both operands, the weight as [OC/vector, IC/2, KH, KW, vector, 2] and the input
as [N, IC/2, H, W, 2], both widened to int16 as they are packed, so each (output channel vector,
input channel pair) step is one tensorized multiply-add against a broadcast input pair: one load
each, no widening in the hot loop. Both packs are made inside the kernel: the weights are
parameters, and the input is the previous layer's output (padded as it is packed).
"""

from __future__ import annotations

import contextlib

from edgesdk.compile.schedules.contraction import Contraction, channel_nest, channel_tiles
from edgesdk.compile.schedules.cpu import CpuSpec
from edgesdk.compile.schedules.intrinsics import PAIR, pair_dot


def pair_tiles(found: Contraction, cpu: CpuSpec) -> tuple[int, int] | None:
    """(output columns, output channels) register block, or None where the rule does not apply: not
    an 8-bit conv, no pairwise multiply-add on this CPU, an odd number of input channels (the first
    layer's 3), or output channels that do not fill whole vectors."""
    if found.eight_bit not in ("int8", "uint8") or cpu.pair_madd is None or found.streamed_read is None:
        return None
    if found.reduction[0] % PAIR:
        return None
    tiles = channel_tiles(found, cpu)
    if tiles is None:
        return None
    # A tensorized step cannot sit under a guard: the column block divides the width exactly.
    width = found.spatial[3]
    return max(size for size in range(1, tiles[0] + 1) if width % size == 0), tiles[1]


def schedule_pairs(sch, found: Contraction, cpu: CpuSpec, inline_epilogue, columns: int, vector: int):
    """Schedule the conv; returns the outermost loop of its nest."""
    from tvm import s_tir

    assert cpu.pair_madd is not None and found.eight_bit is not None and found.weight_read is not None and found.streamed_read is not None
    intrinsic = pair_dot(cpu.pair_madd, cpu.lanes, found.eight_bit)
    block = sch.get_sblock(found.block_name)
    n, oc, h, w, rc, ry, rx = sch.get_loops(block)
    channel_outer, channel_inner = sch.split(oc, factors=[None, vector])
    lane_vector, lane = sch.split(channel_inner, factors=[None, cpu.lanes])
    column_outer, column_inner = sch.split(w, factors=[None, columns])
    pair_outer, pair = sch.split(rc, factors=[None, PAIR])
    sch.reorder(n, channel_outer, h, column_outer, pair_outer, ry, rx, column_inner, lane_vector, lane, pair)
    weights = sch.cache_read(block, found.weight_read, "global")
    sch.transform_layout(block, ("read", found.weight_read), lambda o, i, kh, kw: (o // vector, i // PAIR, kh, kw, o % vector, i % PAIR))
    sch.unsafe_set_dtype(weights, 0, "int16")
    streamed = sch.cache_read(block, found.streamed_read, "global")
    sch.transform_layout(block, ("read", found.streamed_read), lambda b, c, y, x: (b, c // PAIR, y, x, c % PAIR))
    sch.unsafe_set_dtype(streamed, 0, "int16")
    # The input is copied once, padded (with the zero point) as it is packed.
    for producer in sch.get_producers(streamed):
        with contextlib.suppress(s_tir.ScheduleError):
            sch.compute_inline(producer)
    # Copied in the order it is stored (a channel pair innermost): looping over channels outside
    # columns, every column wrote 4 bytes apart and the copy ran scalar, as long as a small conv.
    *_, channel, row, column = sch.get_loops(streamed)
    pair_row, pair_member = sch.split(channel, factors=[None, PAIR])
    sch.reorder(pair_row, row, column, pair_member)
    sch.unroll(pair_member)
    outer = channel_nest(sch, block, found, cpu, inline_epilogue, weights, (n, channel_outer, h, column_outer), pair_outer, vector)
    # After the init is split off: the tensorized step is the update alone.
    sch.unroll(column_inner)
    sch.unroll(lane_vector)
    sch.tensorize(lane, intrinsic)
    return outer
