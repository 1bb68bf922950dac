"""Tiling a kernel against a unit's on-chip memory, and the DRAM traffic that costs.

A kernel whose working set (its operands and output) fits the on-chip memory moves nothing but
its weights and the model's own inputs and outputs through DRAM. One that does not fit is split
along one or two of its output axes (edgesdk.compile.kernels.TileSpace: a convolution's rows,
columns or output channels, a matmul's rows or columns) into tiles that do. In the loop over tiles
(the first axis outermost), each operand is fetched again whenever a tile axis it depends on
moves, so:

- a tile of an operand is its share along the tiled axes it follows, widened by the halo a
  window needs (``(rows - 1) * stride + window`` input rows for ``rows`` output rows);
- its traffic is that tile times the number of tiles up to the innermost tiled axis it follows
  (an operand that follows no tiled axis is read once, e.g. a convolution's weights under a
  spatial split; the input is read once per channel tile when the channels are the outer split);
- the output is written once.

Of the tilings whose working set fits, the one with the least traffic is chosen. A kernel no
tiling fits spills: it streams its operands through DRAM untiled, losing their reuse along one
axis (a convolution reads each input row once per output row its window covers: the finest
split along one axis, the costliest of these), and never less than its smallest tile would cost,
so that less on-chip memory never costs less. The same streaming, but never less than its best
tiling, is what a kernel that does not fit costs untiled (``tiling=False``). A kernel that cannot
be tiled (its indexing is not affine, or it has no tile space) spills all its tensors through
DRAM once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations

from edgesdk.compile.kernels import Kernel, Operand, TileSpace


@dataclass(frozen=True)
class Tiling:
    """How a kernel meets the on-chip memory: ``splits`` (axis name, tiles) outermost first,
    empty when it fits whole; ``spilled`` when nothing fits; ``traffic``: DRAM bytes."""

    splits: tuple[tuple[str, int], ...]
    traffic: int
    spilled: bool

    @property
    def tiles(self) -> int:
        return math.prod(count for _, count in self.splits)

    def describe(self) -> str:
        if self.spilled:
            return "spill"
        return " x ".join(f"{name}/{count}" for name, count in self.splits) if self.splits else "fits"


def _counts(extent: int) -> list[int]:
    """Tile counts tried along an axis of ``extent``: powers of two, and one element per tile."""
    counts = [1 << k for k in range(1, extent.bit_length()) if 1 << k < extent]
    return [*counts, extent]


def _operand_tile(operand: Operand, space: TileSpace, counts: dict[int, int]) -> int:
    share = 1.0
    for access in operand.access:
        tiles = counts.get(access.axis, 1)
        if tiles > 1:
            rows = math.ceil(space.extents[access.axis] / tiles)
            share *= min(1.0, ((rows - 1) * access.stride + access.window) / access.extent)
    return math.ceil(operand.bytes * share)


def _cost(space: TileSpace, output_bytes: int, order: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """(working set, traffic) of tiling ``space`` as ``order`` ((axis, tiles), outermost first)."""
    counts = dict(order)
    working_set = math.ceil(output_bytes / math.prod(counts.values()))
    traffic = output_bytes
    for operand in space.operands:
        tile = _operand_tile(operand, space, counts)
        followed = {access.axis for access in operand.access}
        depth = max((position for position, (axis, _) in enumerate(order) if axis in followed), default=-1)
        fetches = math.prod(tiles for _, tiles in order[: depth + 1])
        working_set += tile
        traffic += tile * fetches
    return working_set, traffic


def _orders(space: TileSpace):
    """Every split of one axis, and of two axes in either nesting."""
    axes = range(len(space.extents))
    for axis in axes:
        for tiles in _counts(space.extents[axis]):
            yield ((axis, tiles),)
    for outer, inner in permutations(axes, 2):
        for outer_tiles in _counts(space.extents[outer]):
            for inner_tiles in _counts(space.extents[inner]):
                yield ((outer, outer_tiles), (inner, inner_tiles))


def plan(kernel: Kernel, on_chip_bytes: int, tiling: bool = True) -> Tiling:
    """How ``kernel`` meets ``on_chip_bytes`` of on-chip memory (``tiling=False``: a kernel that does
    not fit whole streams untiled); ``traffic`` counts activations and weights that
    go through DRAM because of it (0 when it fits: the cost model adds weights and model I/O)."""
    whole = kernel.bytes_read + kernel.bytes_written
    if whole <= on_chip_bytes:
        return Tiling((), 0, spilled=False)
    space = kernel.tile_space
    if space is None or not space.extents:
        return Tiling((), whole, spilled=True)
    costs = [(order, *_cost(space, kernel.bytes_written, order)) for order in _orders(space)]
    # Untiled, the kernel streams its operands along its axes: the finest split along one axis
    # (a window's rows read again for each output row), whichever of them costs most.
    streaming = max(whole, *(traffic for order, _, traffic in costs if len(order) == 1 and order[0][1] == space.extents[order[0][0]]))
    fitting = [(traffic, math.prod(t for _, t in order), order) for order, working_set, traffic in costs if working_set <= on_chip_bytes]
    if not fitting:
        # Not even the smallest tile fits: charged at least what that tile would cost, so that
        # less on-chip memory never costs less.
        smallest = min(costs, key=lambda cost: (cost[1], cost[2]))
        return Tiling((), max(streaming, smallest[2]), spilled=True)
    traffic, _, order = min(fitting)
    if not tiling:  # never cheaper than the tiles a compiler that tiles would choose
        return Tiling((), max(streaming, traffic), spilled=True)
    return Tiling(tuple((space.axes[axis], tiles) for axis, tiles in order), traffic, spilled=False)
