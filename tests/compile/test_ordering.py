"""edgesdk.compile.ordering: the lowest-peak topological order, against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from edgesdk.compile.ordering import Node, schedule


def _is_topological(nodes, order) -> bool:
    position = {v: i for i, v in enumerate(order)}
    return sorted(order) == list(range(len(nodes))) and all(position[u] < position[v] for v, node in enumerate(nodes) for u in node.inputs)


def _peak(nodes, order, resident=0) -> int:
    """Peak live bytes of ``order``, recomputed naively: buffers and their users."""
    root = list(range(len(nodes)))
    for v, node in enumerate(nodes):
        if node.alias_of is not None:
            root[v] = root[node.alias_of]
    users = {r: {v for v, node in enumerate(nodes) for u in node.inputs if root[u] == r} for r in range(len(nodes))}
    kept = {root[v] for v, node in enumerate(nodes) if node.output}
    live, done, peak = set(), set(), resident
    for v in order:
        live.add(v)
        done.add(v)
        peak = max(peak, resident + sum(nodes[r].size for r in live))
        live = {r for r in live if r in kept or (users[r] - done)}
    return peak


def branches_level_by_level(branches: int = 4, depth: int = 3) -> list[Node]:
    """x -> ``branches`` chains (a big tensor, then smaller ones) -> one node reading every chain's
    end, listed level by level as some exporters write them: every branch's big tensor is live at once."""
    nodes = [Node(size=100)]
    ends = []
    chains = [[0] for _ in range(branches)]
    for level in range(depth):
        for chain in chains:
            nodes.append(Node(size=1000 if level == 0 else 10, inputs=(chain[-1],)))
            chain.append(len(nodes) - 1)
    ends = [chain[-1] for chain in chains]
    nodes.append(Node(size=40, inputs=tuple(ends), output=True))
    return nodes


def test_a_branchy_net_listed_level_by_level_runs_branch_by_branch():
    nodes = branches_level_by_level()
    result = schedule(nodes)
    assert _is_topological(nodes, result.order)
    assert result.exact
    assert result.file_order_peak_bytes == _peak(nodes, range(len(nodes))) == 4 * 1000 + 100
    assert result.peak_bytes == _peak(nodes, result.order) <= 0.75 * result.file_order_peak_bytes
    assert result.timeline[-1] == 40  # only the output is left


def test_a_chain_keeps_its_order():
    nodes = [Node(size=10)] + [Node(size=10 * (i + 2), inputs=(i,)) for i in range(5)]
    result = schedule(nodes)
    assert result.order == list(range(6))
    assert result.peak_bytes == result.file_order_peak_bytes == 50 + 60


@pytest.mark.parametrize("seed", range(12))
def test_the_order_is_the_brute_force_optimum_on_small_graphs(seed):
    rng = random.Random(seed)
    count = rng.randint(4, 8)
    nodes = []
    for v in range(count):
        inputs = tuple(sorted(rng.sample(range(v), k=min(v, rng.randint(1, 2))))) if v else ()
        alias = inputs[0] if inputs and rng.random() < 0.15 else None
        nodes.append(Node(size=0 if alias is not None else rng.randint(1, 50), inputs=inputs, alias_of=alias, output=v == count - 1))
    best = min(_peak(nodes, order, 7) for order in itertools.permutations(range(count)) if _is_topological(nodes, order))
    result = schedule(nodes, resident_bytes=7)
    assert _is_topological(nodes, result.order)
    assert result.exact and result.peak_bytes == best == _peak(nodes, result.order, 7)
    assert result.peak_bytes <= result.file_order_peak_bytes


def test_a_view_keeps_its_source_alive_until_the_view_is_read():
    # 0 -> 1 (a view of 0) -> 3 reads the view late; 2 is big and reads 0 directly.
    nodes = [Node(size=50), Node(size=0, inputs=(0,), alias_of=0), Node(size=500, inputs=(0,)), Node(size=5, inputs=(1, 2), output=True)]
    result = schedule(nodes)
    assert result.peak_bytes == _peak(nodes, result.order) == 50 + 500 + 5


def test_a_large_graph_beyond_exact_search_is_ordered_and_never_worse():
    rng = random.Random(3)
    nodes = [Node(size=64)]
    for v in range(1, 500):
        inputs = tuple(sorted({v - 1, *rng.sample(range(max(0, v - 30), v), k=min(v, 2))}))
        nodes.append(Node(size=rng.choice([16, 64, 256, 1024]), inputs=inputs, output=v == 499))
    result = schedule(nodes, beam=64)
    assert _is_topological(nodes, result.order)
    assert result.peak_bytes == _peak(nodes, result.order) <= result.file_order_peak_bytes


def test_constants_run_just_before_their_reader_and_do_not_widen_the_search():
    """40 weight-only nodes (biases reshaped), all ready from the start: searched over, they would
    make 2^40 sets; they are placed before their readers and the chain stays exact."""
    nodes = [Node(size=100)]
    for _ in range(40):
        nodes.append(Node(size=4, constant=True))
        nodes.append(Node(size=100, inputs=(len(nodes) - 2 if len(nodes) > 2 else 0, len(nodes) - 1)))
    nodes[-1] = Node(size=100, inputs=nodes[-1].inputs, output=True)
    result = schedule(nodes)
    assert result.exact and _is_topological(nodes, result.order)
    assert result.order == list(range(len(nodes)))  # each constant already sits before its reader
    assert result.peak_bytes == _peak(nodes, result.order)
