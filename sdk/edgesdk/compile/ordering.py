"""Operator order by memory: the topological order of a model's kernels whose peak of live
activation bytes is lowest (after Serenity, MLSys 2020: dynamic programming over the sets of
scheduled nodes).

The graph is plain data (no TVM), so the search is fast to test; edgesdk.compile.reorder applies
it to the Relax ``main`` after fusion, so the order chosen is the order the artifact executes.

Memory model: running node ``v`` needs everything live before it plus its own output; after it,
every buffer whose users have all run is freed (a model output never is). A view (a reshape that
TVM turns into an alias) owns no bytes: it keeps its source's buffer alive until the view's own
users have run. The bytes live after a set of nodes has run depend only on that set, so the search
keeps, per set, the lowest peak that reaches it, level by level (sets of k nodes, then k + 1): exact
while the number of distinct sets per level stays under ``beam``; beyond it, the ``beam`` sets
with the lowest (peak, live bytes) go on (a beam search), and the result says it is not exact.
The model's own order is always a candidate: the result is never worse than it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Node:
    """One binding of the dataflow: a kernel (``size`` bytes of output) or a view of ``alias_of``."""

    size: int
    inputs: tuple[int, ...] = ()  # indices of the nodes it reads (its data dependencies)
    alias_of: int | None = None  # a view: the node whose buffer it shares (size 0)
    output: bool = False  # a model output: never freed
    # Computed from weights alone (reads no activation, only other constant nodes): not searched
    # over (n of them ready from the start would make 2^n sets), but run just before its first reader.
    constant: bool = False


@dataclass
class Order:
    order: list[int]  # node indices in execution order
    peak_bytes: int  # of ``order``
    file_order_peak_bytes: int  # of the nodes' own order (0, 1, 2, ...)
    exact: bool  # proven optimal (no pruning happened)
    seconds: float
    timeline: list[int] = field(default_factory=list)  # live bytes after each node of ``order``


class _Graph:
    def __init__(self, nodes: Sequence[Node], resident: int):
        self.nodes = nodes
        self.resident = resident  # bytes live throughout: the model inputs
        count = len(nodes)
        self.root = [self._root(v) for v in range(count)]
        self.preds = [0] * count  # bit masks
        self.succs: list[list[int]] = [[] for _ in range(count)]
        self.users = [0] * count  # per buffer: every node that reads it or a view of it
        for v, node in enumerate(nodes):
            for u in set(node.inputs):
                self.preds[v] |= 1 << u
                self.succs[u].append(v)
                self.users[self.root[u]] |= 1 << v
        kept = {self.root[v] for v, node in enumerate(nodes) if node.output}  # model outputs and their views
        # What running a node may free: the buffers of its inputs, and its own if nobody reads it.
        self.frees = [
            [r for r in sorted({self.root[u] for u in node.inputs} | ({v} if not self.users[v] and node.alias_of is None else set())) if r not in kept]
            for v, node in enumerate(nodes)
        ]

    def _root(self, v: int) -> int:
        alias = self.nodes[v].alias_of
        return v if alias is None else self._root(alias)

    def step(self, mask: int, live: int, v: int) -> tuple[int, int, int]:
        """(new mask, bytes while ``v`` runs, bytes live after it)."""
        running = live + self.nodes[v].size
        new = mask | (1 << v)
        after = running - sum(self.nodes[r].size for r in self.frees[v] if not (self.users[r] & ~new))
        return new, running, after

    def newly_ready(self, new: int, v: int) -> int:
        """The successors of ``v`` whose inputs have all run once ``new`` has: a bit mask."""
        ready = 0
        for s in self.succs[v]:
            if not (self.preds[s] & ~new):
                ready |= 1 << s
        return ready

    def replay(self, order: Sequence[int]) -> tuple[int, list[int]]:
        mask, live, peak, timeline = 0, self.resident, self.resident, []
        for v in order:
            mask, running, live = self.step(mask, live, v)
            peak = max(peak, running)
            timeline.append(live)
        return peak, timeline


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def peak_in_order(nodes: Sequence[Node], resident_bytes: int = 0) -> int:
    """The most bytes live at once with ``nodes`` run in their own order."""
    return _Graph(nodes, resident_bytes).replay(range(len(nodes)))[0]


def schedule(nodes: Sequence[Node], resident_bytes: int = 0, *, beam: int = 512, time_cap_s: float = 2.0) -> Order:
    """The order of ``nodes`` (listed in a valid topological order) with the lowest peak found;
    ``resident_bytes`` are live throughout (the model inputs)."""
    started = time.perf_counter()
    graph = _Graph(nodes, resident_bytes)
    file_order = list(range(len(nodes)))
    file_peak, file_timeline = graph.replay(file_order)
    searched = [v for v, node in enumerate(nodes) if not node.constant]
    position = {v: i for i, v in enumerate(searched)}
    order, exact = _search([_without_constants(nodes[v], nodes, position) for v in searched], resident_bytes, beam, started + time_cap_s)
    order = _with_constants([searched[v] for v in order], nodes)
    peak, timeline = graph.replay(order)
    if peak >= file_peak:  # ties keep the model's own order
        order, peak, timeline = file_order, file_peak, file_timeline
    return Order(order=order, peak_bytes=peak, file_order_peak_bytes=file_peak, exact=exact, seconds=time.perf_counter() - started, timeline=timeline)


def _without_constants(node: Node, nodes: Sequence[Node], position: dict[int, int]) -> Node:
    """``node`` renumbered (``position``: among the searched nodes), its constant inputs dropped (a
    view of a constant is itself constant, so ``alias_of`` stays among the searched)."""
    inputs = tuple(position[u] for u in node.inputs if not nodes[u].constant)
    return Node(size=node.size, inputs=inputs, alias_of=None if node.alias_of is None else position[node.alias_of], output=node.output)


def _with_constants(order: list[int], nodes: Sequence[Node]) -> list[int]:
    """``order`` with every constant node just before its first reader (and those nobody reads last)."""
    placed: set[int] = set()
    result: list[int] = []

    def place(v: int) -> None:
        if v in placed:
            return
        for u in nodes[v].inputs:
            place(u)
        placed.add(v)
        result.append(v)

    for v in order:
        place(v)
    for v in range(len(nodes)):
        place(v)
    return result


def _search(nodes: Sequence[Node], resident_bytes: int, beam: int, deadline: float) -> tuple[list[int], bool]:
    """The DP (module docstring): the order found and whether it is proven optimal."""
    graph = _Graph(nodes, resident_bytes)
    # Per set of scheduled nodes (a bit mask): (peak so far, live bytes), and the nodes ready to run.
    sources = sum(1 << v for v in range(len(nodes)) if not graph.preds[v])
    level: dict[int, tuple[int, int]] = {0: (resident_bytes, resident_bytes)}
    ready: dict[int, int] = {0: sources}
    history: list[dict[int, tuple[int, int]]] = []  # per level: set -> (set before, node run)
    exact = True
    for _ in range(len(nodes)):
        following: dict[int, tuple[int, int]] = {}
        parents: dict[int, tuple[int, int]] = {}
        following_ready: dict[int, int] = {}
        for mask, (peak, live) in level.items():
            for v in _bits(ready[mask]):
                new, running, after = graph.step(mask, live, v)
                candidate = (max(peak, running), after)
                known = following.get(new)
                if known is None or candidate < known:
                    following[new] = candidate
                    parents[new] = (mask, v)
                    following_ready[new] = (ready[mask] & ~(1 << v)) | graph.newly_ready(new, v)
        if len(following) > beam or time.perf_counter() > deadline:
            exact = False
            keep = beam if time.perf_counter() <= deadline else 1  # out of time: finish greedily
            following = dict(sorted(following.items(), key=lambda item: item[1])[:keep])
        history.append(parents)
        level, ready = following, following_ready
    mask, order = min(level.items(), key=lambda item: item[1])[0], []
    for parents in reversed(history):
        mask, v = parents[mask]
        order.append(v)
    order.reverse()
    return order, exact
